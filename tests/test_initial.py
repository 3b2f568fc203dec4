"""The exact initial-overlap sampler against explicit d-dimensional sampling (docs, (B1)–(B8))."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import stats

import modecollapse as mc
from modecollapse._dynamics._initial import (
    _sample_overlaps_jit,
    initial_state,
    sample_initial_overlaps,
    sample_initial_states,
)

DRAWS = 20_000
NORM = 1.7

# Target means in their own span: rows are μ_j, columns the first r coordinates of R^d.
TARGETS = {
    "antipodal": np.array([[3.0], [-3.0]]),  # J = 2, rank 1 (singular T)
    "general2": np.array([[2.0, 0.0], [0.7, 1.4]]),  # J = 2, rank 2
    "general3": np.array([[2.0, 0.0, 0.0], [0.5, 1.5, 0.0], [-1.0, 0.3, 1.2]]),  # J = 3, rank 3
}

# (target, K, d); d − r < K for ("antipodal", 3, 2) and ("general3", 3, 4): singular Wishart.
CONFIGS = [
    ("antipodal", 3, 2),
    ("antipodal", 3, 4),
    ("antipodal", 3, 100),
    ("general2", 2, 4),
    ("general2", 2, 100),
    ("general3", 3, 4),
    ("general3", 3, 100),
]


def _num_tests(name: str, K: int) -> int:
    J = TARGETS[name].shape[0]
    return K * J + K * (K + 1) // 2


# Bonferroni over every KS test of the file: a family-wise level of 1%.
THRESHOLD = 0.01 / sum(_num_tests(name, K) for name, K, _ in CONFIGS)


def _gram(name: str) -> jax.Array:
    U = TARGETS[name]
    return jnp.asarray(U @ U.T)


def _entries(R, Q) -> np.ndarray:
    """(n, K·J + K(K+1)/2): every entry of R and the upper triangle of Q (with the diagonal)."""
    R, Q = np.asarray(R), np.asarray(Q)
    iu = np.triu_indices(Q.shape[-1])
    return np.concatenate([R.reshape(len(R), -1), Q[:, iu[0], iu[1]]], axis=1)


def _explicit(key, name: str, K: int, d: int, n: int):
    """M = c G/√d with G ~ N(0, I) of shape (K, d) (eq. (B1)); R = M Uᵀ, Q = M Mᵀ."""
    U0 = TARGETS[name]
    U = jnp.zeros((U0.shape[0], d)).at[:, : U0.shape[1]].set(U0)
    M = NORM * jr.normal(key, (n, K, d)) / np.sqrt(d)
    return jnp.einsum("nkd,jd->nkj", M, U), jnp.einsum("nkd,nld->nkl", M, M)


@functools.cache
def _batched_sampler(name: str, K: int, n: int):
    """n draws, compiled once per (target, K, n): `dim` and `norm` are traced."""

    def sample(key, d, norm):
        draw = lambda k: sample_initial_overlaps(k, _gram(name), components=K, dim=d, norm=norm)  # noqa: E731
        return jax.vmap(draw)(jr.split(key, n))

    return jax.jit(sample)


def _sampled(key, name: str, K: int, d, n: int, norm=NORM):
    return _batched_sampler(name, K, n)(key, d, norm)


def ks_pvalues(key, name: str, K: int, d: int) -> np.ndarray:
    """Two-sample KS p-value per entry of (R, Q): sampler vs explicit d-dimensional sampling."""
    k1, k2 = jr.split(key)
    ours = _entries(*_sampled(k1, name, K, d, DRAWS))
    ref = _entries(*_explicit(k2, name, K, d, DRAWS))
    assert ours.shape == ref.shape == (DRAWS, _num_tests(name, K))
    return np.array([stats.ks_2samp(a, b).pvalue for a, b in zip(ours.T, ref.T)])


@pytest.mark.parametrize("name,K,d", CONFIGS)
def test_ks_against_explicit_sampling(getkey, name, K, d):
    p = ks_pvalues(getkey(), name, K, d)
    assert p.min() > THRESHOLD, (p.min(), THRESHOLD)


def test_ks_has_power_against_wrong_degrees_of_freedom(getkey):
    # The classic mistake W ~ Wishart(d) instead of Wishart(d − r): emulate it exactly by sampling
    # at d' = d + r with c' = c √(d'/d) (R unchanged, Q = (c²/d)(A Aᵀ + Wishart_K(d))).
    d, r = 4, 1
    k1, k2 = jr.split(getkey())
    wrong = _sampled(k1, "antipodal", 3, d + r, DRAWS, norm=float(NORM * np.sqrt((d + r) / d)))
    ref = _explicit(k2, "antipodal", 3, d, DRAWS)
    p = [stats.ks_2samp(a, b).pvalue for a, b in zip(_entries(*wrong).T, _entries(*ref).T)]
    assert min(p) < THRESHOLD


@pytest.mark.parametrize("name,K,d", [("antipodal", 3, 2), ("general3", 3, 4), ("general2", 2, 3)])
def test_joint_gram_is_psd_with_rank_at_most_d(getkey, name, K, d):
    # All J + K vectors live in R^d, so the joint Gram [[T, Rᵀ], [R, Q]] has rank ≤ min(d, r + K).
    R, Q = (np.asarray(x)[:1000] for x in _sampled(getkey(), name, K, d, DRAWS))
    T = np.broadcast_to(np.asarray(_gram(name)), (len(R),) + (R.shape[2],) * 2)
    lam = np.linalg.eigvalsh(np.block([[T, R.transpose(0, 2, 1)], [R, Q]]))
    top = lam[:, -1:]
    assert np.all(lam > -1e-10 * top)
    rank = min(d, np.linalg.matrix_rank(_gram(name)) + K)
    assert np.all(np.sum(lam > 1e-10 * top, axis=1) == rank)


def test_huge_dim_few_draws(getkey):
    d, T = 10**6, _gram("general3")
    for key in jr.split(getkey(), 3):
        R, Q = sample_initial_overlaps(key, T, components=2, dim=d, norm=NORM)
        assert bool(jnp.all(jnp.isfinite(R))) and bool(jnp.all(jnp.isfinite(Q)))
        assert bool(jnp.all(jnp.abs(jnp.diag(Q) / NORM**2 - 1) < 6 * np.sqrt(2 / d)))


@pytest.mark.parametrize("d", [10**6, 10**12])
def test_huge_dim_law(getkey, d):
    # Exact marginals (eq. (B8)): Q_kk d/c² ~ χ²_d and R_kj √d/c ~ N(0, T_jj).
    n = DRAWS
    R, Q = _sampled(getkey(), "general3", 3, d, n)
    diag = np.asarray(jnp.diagonal(Q, axis1=1, axis2=2)) / NORM**2  # ≈ 1 ± √(2/d)
    np.testing.assert_allclose(diag.mean(0), 1.0, atol=5 * np.sqrt(2 / d / n))
    np.testing.assert_allclose(diag.var(0) / (2 / d), 1.0, atol=5 * np.sqrt(2 / n))
    p = [stats.ks_1samp(diag[:, k] * d, stats.chi2(d).cdf).pvalue for k in range(3)]
    Tjj = np.diag(np.asarray(_gram("general3")))
    z = np.asarray(R) * np.sqrt(d) / (NORM * np.sqrt(Tjj))
    p += [stats.ks_1samp(z[:, k, j], stats.norm.cdf).pvalue for k in range(3) for j in range(3)]
    assert min(p) > 0.01 / len(p)


def test_no_recompilation_over_dim_and_norm(getkey):
    T = _gram("general3")
    traces = 0

    def f(key, dim, norm):
        nonlocal traces
        traces += 1
        return sample_initial_overlaps(key, T, components=2, dim=dim, norm=norm)

    jf = jax.jit(f)
    key = getkey()
    for dim, norm in [(4, 1.0), (100, 2.0), (10**6, 0.5)]:
        R, Q = jf(key, dim, norm)
        assert R.shape == (2, 3) and Q.shape == (2, 2)
    assert traces == 1
    # Eager calls share one compiled sampler per (K, J, dtype).
    if hasattr(_sample_overlaps_jit, "_cache_size"):
        sample_initial_overlaps(key, T, components=2, dim=7, norm=1.0)
        size = _sample_overlaps_jit._cache_size()
        for dim, norm in [(8, 1.5), (10**9, 3.0), (2.5e3, 0.1)]:
            sample_initial_overlaps(key, T, components=2, dim=dim, norm=norm)
        assert _sample_overlaps_jit._cache_size() == size


def test_states_vmap(getkey):
    U = TARGETS["antipodal"]
    target = mc.TargetStatistics(
        jnp.asarray(U @ U.T), jnp.log(jnp.array([0.3, 0.7])), jnp.array(1.0)
    )
    kw = dict(components=3, dim=50, norm=jnp.array([1.0, 2.0, 0.5]), logits=0.2, log_scale=-0.1)
    key = getkey()
    batch = sample_initial_states(key, 4, target, **kw)
    assert batch.R.shape == (4, 3, 2) and batch.Q.shape == (4, 3, 3)
    assert batch.logits.shape == (4, 3) and batch.log_scale.shape == (4,)
    np.testing.assert_allclose(batch.logits, 0.2)
    np.testing.assert_allclose(batch.log_scale, -0.1)
    for i, k in enumerate(jr.split(key, 4)):
        one = initial_state(k, target, **kw)
        assert isinstance(one, mc.GramState)
        np.testing.assert_allclose(one.R, batch.R[i], rtol=1e-12)
        np.testing.assert_allclose(one.Q, batch.Q[i], rtol=1e-12)


def test_invalid_arguments(getkey):
    T = _gram("general3")
    with pytest.raises(ValueError):
        sample_initial_overlaps(getkey(), T, components=0, dim=5, norm=1.0)
    with pytest.raises(ValueError):
        sample_initial_overlaps(getkey(), T, components=2, dim=5, norm=jnp.ones(3))
    with pytest.raises(Exception, match="rank"):  # d = 2 < rank(T) = 3
        jax.block_until_ready(sample_initial_overlaps(getkey(), T, components=2, dim=2, norm=1.0))
