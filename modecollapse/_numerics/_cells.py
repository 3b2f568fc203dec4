"""An independent, randomized route to the softmax statistics: argmax cells and sequential
conditioning (docs/theory.md, §8, eq. (G9)).

E[f(ℓ)] for ℓ ~ N(mean, cov) is split over the n cells {argmax ℓ = c}. In cell c the gaps
g_j = ℓ_c − ℓ_j (j ≠ c) are Gaussian and constrained to g ≥ 0; Genz's separation of variables
turns that orthant into the unit cube, on which the integrand (the orthant's weight times the
statistics, bounded and smooth inside the cell) is integrated by scrambled Sobol points.
Independent scrambles give independent unbiased replicates, hence a statistical standard error.

It shares no panels, lines or Gauss–Hermite nodes with the graded rule (G5)–(G8), and its error
does not grow with the number of large-variance directions, only slowly with n: its role is the
cross-check of `softmax_stats_error` for n ≥ 5, where the graded rule's own estimate can
underestimate. It is slower and, at n ≤ 4, far less accurate than the graded rule.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtri
from jaxtyping import Array, Float

# The orthant's covariance is raised by this multiple of its largest variance (Cholesky of
# singular gap covariances; the statistics are smooth, so the bias is ~1e-10 · max variance / 8).
_JITTER = 1e-10


@functools.cache
def _scrambled_points(
    cells: int, dim: int, log2_points: int, replicates: int, seed: int
) -> np.ndarray:
    """(cells, R, P, dim) points in (0, 1): per cell, `replicates` independently scrambled Sobol
    nets of 2^k points (scipy's linear matrix scrambling with a digital shift, seeded by
    (seed, cell, replicate)), so that each replicate is unbiased and all are independent."""
    from scipy.stats import qmc

    nets = [
        qmc.Sobol(dim, scramble=True, rng=np.random.default_rng((seed, c, r))).random_base2(
            log2_points
        )
        for c in range(cells)
        for r in range(replicates)
    ]
    nets = np.stack(nets).reshape(cells, replicates, 2**log2_points, dim)
    return np.clip(nets, 2.0**-53, 1.0 - 2.0**-53)


def _cell(mean: Array, cov: Array, c: int, u: Array):
    """One cell's weighted samples: weights (R, P) and the logits' differences to logit 0.

    Gaps g = D ℓ (g_j = ℓ_c − ℓ_j), ordered by Genz's heuristic (the most constraining first),
    factored by Cholesky, and conditioned variable by variable (eq. (G9)).
    """
    n = mean.shape[0]
    dtype = mean.dtype
    others = np.array([j for j in range(n) if j != c])
    D = np.zeros((n - 1, n))
    D[:, c] = 1.0
    D[np.arange(n - 1), others] = -1.0
    D = jnp.asarray(D, dtype)
    mg, Sg = D @ mean, D @ cov @ D.T
    scale = jnp.maximum(jnp.max(jnp.diag(Sg)), jnp.finfo(dtype).tiny)
    Sg = Sg + _JITTER * scale * jnp.eye(n - 1, dtype=dtype)
    # Genz's ordering: the gap least likely to be non-negative first.
    order = jnp.argsort(log_ndtr(mg / jnp.sqrt(jnp.diag(Sg))))
    mg, Sg = mg[order], Sg[order][:, order]
    L = jnp.linalg.cholesky(Sg)
    z = jnp.zeros(u.shape, dtype)
    log_weight = jnp.zeros(u.shape[:-1], dtype)
    for j in range(n - 1):
        lin = mg[j] + z @ L[j]  # z_j is still 0 here, so only z_{<j} enters
        lower = -lin / L[j, j]  # g_j ≥ 0 ⟺ z_j ≥ lower
        log_p = log_ndtr(-lower)
        log_weight = log_weight + log_p
        # z_j from N(0, 1) restricted to [lower, ∞), by inversion of its upper tail
        tail = jnp.maximum((1.0 - u[..., j]) * jnp.exp(log_p), jnp.finfo(dtype).tiny)
        z = z.at[..., j].set(-ndtri(tail))
    gaps = mg + z @ L.T  # (R, P, n − 1), in `order`
    gaps = jnp.maximum(gaps, 0.0)  # rounding: the cell's gaps are non-negative
    # logits relative to logit c, in the original indexing: ℓ_j − ℓ_c = −g_j, and 0 at c
    rel = jnp.zeros(gaps.shape[:-1] + (n,), dtype)
    rel = rel.at[..., jnp.asarray(others)[order]].set(-gaps)
    return jnp.exp(log_weight), rel


def qmc_softmax_stats(
    mean: Float[Array, " n"],
    cov: Float[Array, "n n"],
    *,
    seed: int = 0,
    log2_points: int = 14,
    replicates: int = 8,
):
    """E[LSE(ℓ)], E[π(ℓ)], E[π πᵀ] for ℓ ~ N(mean, cov) by argmax cells and randomized QMC (G9).

    An independent route with a statistical error bar: the mean over `replicates` independently
    scrambled Sobol nets of 2^`log2_points` points per cell, and its standard error.
    Not differentiable by design (a cross-check); cost about n · (n − 1) · R · P normal
    quantiles.

    **Arguments:**

    - `mean`, `cov`: the Gaussian law of the logits, shapes (n,) and (n, n), `cov` PSD
      (singular allowed, through a relative jitter of 1e-10).
    - `seed`: seeds the scrambles (the result is a deterministic function of it).
    - `log2_points`: log₂ of the points per cell and replicate (default 14).
    - `replicates`: independent replicates, at least 2 (default 8).

    **Returns:** `((lse, resp, outer), (lse_se, resp_se, outer_se))`: the estimates, shaped as
    `expected_softmax_stats`' output, and their standard errors.

    **Example:**
    ```python
    (lse, resp, outer), (_, resp_se, _) = qmc_softmax_stats(jnp.zeros(5), 100 * jnp.eye(5))
    # resp ≈ 0.2 ± resp_se
    ```
    """
    mean, cov = jax.lax.stop_gradient((jnp.asarray(mean), jnp.asarray(cov)))
    n = mean.shape[0]
    if n < 2:
        raise ValueError(f"`mean` needs at least 2 logits for the cells, got {n}.")
    if replicates < 2:
        raise ValueError(f"`replicates` must be at least 2 for a standard error, got {replicates}.")
    u = jnp.asarray(_scrambled_points(n, n - 1, log2_points, replicates, seed), mean.dtype)
    return _qmc_stats(mean, cov, u)


@jax.jit
def _qmc_stats(mean, cov, u):
    n = mean.shape[0]
    dtype = mean.dtype
    replicates = u.shape[1]
    cov = 0.5 * (cov + cov.T)
    lse = jnp.zeros((replicates,), dtype)
    resp = jnp.zeros((replicates, n), dtype)
    outer = jnp.zeros((replicates, n, n), dtype)
    for c in range(n):
        weight, rel = _cell(mean, cov, c, u[c])
        pi = jax.nn.softmax(rel, axis=-1)
        # LSE(ℓ) − ℓ_0 = (ℓ_c − ℓ_0) + log Σ_j exp(ℓ_j − ℓ_c), with ℓ_c − ℓ_0 = −rel_0
        lse_rel = jax.nn.logsumexp(rel, axis=-1) - rel[..., 0]
        lse = lse + jnp.mean(weight * lse_rel, axis=-1)
        resp = resp + jnp.mean(weight[..., None] * pi, axis=-2)
        outer = outer + jnp.einsum("rp,rpi,rpj->rij", weight, pi, pi) / weight.shape[-1]
    lse = lse + mean[0]

    def mean_and_se(x):
        return jnp.mean(x, axis=0), jnp.std(x, axis=0, ddof=1) / float(np.sqrt(replicates))

    (lse, lse_se), (resp, resp_se), (outer, outer_se) = map(mean_and_se, (lse, resp, outer))
    return (lse, resp, outer), (lse_se, resp_se, outer_se)
