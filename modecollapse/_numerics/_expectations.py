"""Gaussian expectations of softmax statistics of a Gaussian logit vector.

Under x ~ N(m_k, s² I_d) the logit vectors of both mixtures are Gaussian (docs/theory.md, eq. (G1)),
so every expectation the objective and the theory need is E[f(ℓ)] for ℓ ~ N(mean, cov) with f one of

- LSE(ℓ) = log Σ_j exp ℓ_j,  π(ℓ) = softmax(ℓ),  π(ℓ) π(ℓ)ᵀ.

These are invariant (π) or equivariant (LSE) under a common shift, so they are integrals over the
J − 1 logit differences δ = ℓ_{1:} − ℓ_0 (eq. (G2)):

- J = 1: trivial;
- J = 2: one-dimensional, computed to ~1e-10 by `sigmoid_moment` (eqs. (I1)–(I4));
- J = 3, 4: tensor Gauss–Hermite over δ;
- J ≥ 5: a symmetrised Halton quasi-Monte Carlo rule (eq. (G4)).

Derivatives never go through a factorisation of `cov` (singular covariances are common: antipodal
targets, coincident means). Instead the multi-dimensional rule carries a `jax.custom_jvp` built
on the
heat equation ∂E[f]/∂mean = E[∇f], ∂E[f]/∂cov = ½ E[∇²f] (eq. (G3)).
"""

import functools
import statistics
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._integrals import sigmoid_moment, sigmoid_moments, tensor_gauss_hermite
from ._linalg import sqrt_psd

# Nodes per dimension of the tensor Gauss–Hermite rules, and the QMC point count (eq. (G4)).
_GH_NODES = {2: 48, 3: 20}
_QMC_POINTS = 4096


@functools.cache
def gaussian_rule(dim: int, per_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (P, dim) and weights (P,) of a rule for E[f(Z)], Z ~ N(0, I_dim).

    `per_dim` overrides the Gauss–Hermite nodes per dimension of the tensor rules (dim ≤ 3).
    """
    if dim in _GH_NODES:
        return tensor_gauss_hermite(dim, per_dim or _GH_NODES[dim])
    # Halton points in the first `dim` prime bases, skipping the origin, mapped through Φ⁻¹ and
    # symmetrised (x, −x) so that every odd moment is integrated exactly.
    primes = _first_primes(dim)
    n = _QMC_POINTS // 2
    u = np.stack([_van_der_corput(np.arange(1, n + 1), b) for b in primes], axis=-1)
    inv = np.vectorize(statistics.NormalDist().inv_cdf)
    z = inv(u)
    nodes = np.concatenate([z, -z], axis=0)
    weights = np.full(2 * n, 1.0 / (2 * n))
    return nodes, weights


def _first_primes(n: int) -> list[int]:
    primes: list[int] = []
    k = 2
    while len(primes) < n:
        if all(k % p for p in primes if p * p <= k):
            primes.append(k)
        k += 1
    return primes


def _van_der_corput(i: np.ndarray, base: int) -> np.ndarray:
    out = np.zeros(i.shape, dtype=np.float64)
    f = 1.0 / base
    i = i.copy()
    while np.any(i > 0):
        out += f * (i % base)
        i //= base
        f /= base
    return out


class _Tangent(eqx.Module):
    """The integrand of the tangent of E[f]: f's jvp along (dmean, daux) plus ½ tr(∇²f dcov)."""

    f: Callable

    def __call__(self, x, aux):
        aux, daux, dmean, dcov = aux
        _, first = jax.jvp(self.f, (x, aux), (dmean, daux))

        def along_row(i):
            dirderiv = lambda y: jax.jvp(lambda z: self.f(z, aux), (y,), (dcov[i],))[1]  # noqa: E731
            return jax.jvp(dirderiv, (x,), (jnp.eye(x.shape[0], dtype=x.dtype)[i],))[1]

        second = [along_row(i) for i in range(x.shape[0])]
        second = jax.tree.map(lambda *leaves: 0.5 * sum(leaves), *second)
        return jax.tree.map(jnp.add, first, second)


def gaussian_expectation(
    f, mean: Float[Array, " n"], cov: Float[Array, "n n"], aux=None, *, nodes: int | None = None
):
    """E[f(X, aux)] for X ~ N(mean, cov), with a quadrature rule chosen by n (eq. (G4)).

    **Arguments:**

    - `f`: a function `(x, aux) -> PyTree of arrays`; a hashable callable (module-level function or
      an Equinox module), since it is a non-differentiable argument of a `custom_jvp`.
    - `mean`, `cov`: the Gaussian; `cov` may be singular.
    - `aux`: a PyTree of arrays that `f` depends on (differentiable).
    - `nodes`: Gauss–Hermite nodes per dimension of the tensor rules (default: 48 in 2-D, 20 in
      3-D); fewer is faster and less accurate (docs/theory.md, §8).

    **Returns:** the expectation, with the PyTree structure of `f`'s output.

    **Example:**
    ```python
    e = gaussian_expectation(lambda x, a: jnp.sum(x**2) * a, jnp.zeros(2), jnp.eye(2), 1.0)
    # e ≈ 2.0
    ```
    """
    return _gaussian_expectation(f, nodes, mean, cov, aux)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _gaussian_expectation(f, n_nodes, mean, cov, aux):
    nodes, weights = gaussian_rule(mean.shape[0], n_nodes)
    nodes = jnp.asarray(nodes, dtype=mean.dtype)
    weights = jnp.asarray(weights, dtype=mean.dtype)
    xs = mean + nodes @ sqrt_psd(cov).T
    values = jax.vmap(lambda x: f(x, aux))(xs)
    return jax.tree.map(lambda v: jnp.tensordot(weights, v, axes=1), values)


@_gaussian_expectation.defjvp
def _gaussian_expectation_jvp(f, n_nodes, primals, tangents):
    mean, cov, aux = primals
    dmean, dcov, daux = tangents
    dcov = 0.5 * (dcov + dcov.T)
    out = _gaussian_expectation(f, n_nodes, mean, cov, aux)
    tangent = _gaussian_expectation(_Tangent(f), n_nodes, mean, cov, (aux, daux, dmean, dcov))
    return out, tangent


def _stats_from_differences(delta: Array, _aux):
    """(LSE, π, ππᵀ) at logits (0, δ)."""
    logits = jnp.concatenate([jnp.zeros((1,), delta.dtype), delta])
    pi = jax.nn.softmax(logits)
    return jax.nn.logsumexp(logits), pi, pi[:, None] * pi[None, :]


def _lse_from_differences(delta: Array, _aux):
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), delta.dtype), delta]))


def _differences(mean: Array, cov: Array) -> tuple[Array, Array]:
    """Mean and covariance of δ = ℓ_{1:} − ℓ_0 (eq. (G2))."""
    n = mean.shape[0]
    D = jnp.concatenate([-jnp.ones((n - 1, 1), mean.dtype), jnp.eye(n - 1, dtype=mean.dtype)], 1)
    return D @ mean, D @ cov @ D.T


def _two_point(mean: Array, cov: Array) -> tuple[Array, Array]:
    m = mean[1] - mean[0]
    v = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
    return m, jnp.where(v > 0, v, 0.0)


def expected_lse(
    mean: Float[Array, " n"], cov: Float[Array, "n n"], nodes: int | None = None
) -> Float[Array, ""]:
    """E[logsumexp(ℓ)] for ℓ ~ N(mean, cov) (eqs. (G2), (I2)).

    **Arguments:**

    - `mean`: mean of the logits, shape (n,).
    - `cov`: their covariance, shape (n, n), positive semi-definite (singular allowed).
    - `nodes`: see `gaussian_expectation`.

    **Returns:** a scalar.

    **Example:**
    ```python
    expected_lse(jnp.zeros(2), jnp.zeros((2, 2)))  # log 2
    expected_lse(jnp.array([0.0, 1.0]), jnp.eye(2))
    ```
    """
    n = mean.shape[0]
    if n == 1:
        return mean[0]
    if n == 2:
        return mean[0] + sigmoid_moment(-1, *_two_point(mean, cov))
    dmean, dcov = _differences(mean, cov)
    return mean[0] + gaussian_expectation(_lse_from_differences, dmean, dcov, nodes=nodes)


def expected_softmax_stats(
    mean: Float[Array, " n"], cov: Float[Array, "n n"], nodes: int | None = None
) -> tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]:
    """E[LSE(ℓ)], E[π(ℓ)], E[π(ℓ) π(ℓ)ᵀ] for ℓ ~ N(mean, cov), π = softmax (eqs. (G2), (I1)–(I3)).

    **Arguments:**

    - `mean`: mean of the logits, shape (n,).
    - `cov`: their covariance, shape (n, n), positive semi-definite (singular allowed).
    - `nodes`: see `gaussian_expectation`.

    **Returns:** `(lse, resp, resp_outer)`, of shapes (), (n,) and (n, n).

    **Example:**
    ```python
    lse, resp, outer = expected_softmax_stats(jnp.zeros(3), jnp.eye(3))
    # resp ≈ [1/3, 1/3, 1/3] by symmetry
    ```
    """
    n = mean.shape[0]
    if n == 1:
        one = jnp.ones((1,), mean.dtype)
        return mean[0], one, one[:, None]
    if n == 2:
        # E[softplus(δ)], E[π_1] = E[σ(δ)], E[π_0 π_1] = E[σ'(δ)]: one joint kernel call (I5)
        sp, e0, e1 = sigmoid_moments((-1, 0, 1), *_two_point(mean, cov))
        resp = jnp.stack([1.0 - e0, e0])
        outer = jnp.array([[1.0 - e0 - e1, e1], [e1, e0 - e1]])
        return mean[0] + sp, resp, outer
    dmean, dcov = _differences(mean, cov)
    lse, resp, outer = gaussian_expectation(_stats_from_differences, dmean, dcov, nodes=nodes)
    return mean[0] + lse, resp, outer
