"""The one rank rule, the PSD factors and the one tensor Gauss–Hermite grid (_numerics)."""

import itertools
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from modecollapse._numerics._integrals import gauss_hermite, tensor_gauss_hermite
from modecollapse._numerics._linalg import (
    RANK_RTOL,
    nonzero_eigenvalues,
    numerical_rank,
    psd_factor,
    rank_rtol,
    sqrt_psd,
)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_numerical_rank_of_low_rank_grams(getkey, dtype, rank):
    # Independent route: the rank by construction, U of shape (5, rank), T = U Uᵀ.
    U = jr.normal(getkey(), (5, rank), dtype) * 3.0
    T = U @ U.T
    assert int(numerical_rank(T)) == rank
    assert int(numerical_rank(np.asarray(T))) == rank  # the NumPy route, same dtype
    C, _, _, active = psd_factor(T)
    assert int(jnp.sum(active)) == rank
    scale = max(1.0, float(jnp.max(jnp.abs(T))))
    assert float(jnp.max(jnp.abs(C @ C.T - T))) < 100 * rank_rtol(5, dtype) * scale
    assert C.dtype == dtype


def test_rank_rule_is_relative_to_the_dtype_and_scale():
    assert rank_rtol(4, np.float64) == RANK_RTOL * 4 * np.finfo(np.float64).eps
    lam = np.array([1e-14, 1.0])
    assert nonzero_eigenvalues(lam).tolist() == [False, True]
    assert nonzero_eigenvalues(lam * 1e-20).tolist() == [False, True]  # scale-free
    # a difference of large Grams: its cancellation error is zero on the scale of the Grams
    assert nonzero_eigenvalues(np.array([1e-12, 2e-12]), scale=1e4).tolist() == [False, False]


def test_sqrt_psd_of_a_singular_covariance():
    cov = jnp.array([[9.0, -9.0], [-9.0, 9.0]])  # antipodal targets (eq. (G1))
    L = sqrt_psd(cov)
    assert jnp.allclose(L @ L.T, cov, atol=1e-12)


@pytest.mark.parametrize("dim, n", [(1, 7), (2, 9), (3, 5)])
def test_tensor_grid_integrates_products_of_moments(dim, n):
    # Independent route: E[Π z_i^{k_i}] = Π (k_i − 1)!! for even k_i, 0 otherwise.
    z, w = tensor_gauss_hermite(dim, n)
    assert z.shape == (n**dim, dim) and abs(w.sum() - 1.0) < 1e-13
    x1, w1 = gauss_hermite(n)
    assert np.allclose(np.sort(np.unique(z[:, 0])), np.sort(x1))
    for ks in itertools.product(range(0, 2 * n, 3), repeat=dim):
        expected = math.prod(0.0 if k % 2 else float(np.prod(np.arange(k - 1, 0, -2))) for k in ks)
        terms = w * np.prod(z ** np.array(ks), axis=1)
        assert abs(terms.sum() - expected) < 1e-12 * max(1.0, np.abs(terms).sum()), ks


def test_tensor_grid_rejects_bad_sizes():
    with pytest.raises(ValueError, match="`dim`"):
        tensor_gauss_hermite(0, 3)
    with pytest.raises(ValueError, match="`n`"):
        tensor_gauss_hermite(2, 0)
