"""An independent, randomized route to the softmax statistics: argmax cells and sequential
conditioning (docs/theory.md, §8, eq. (G9)).

E[f(ℓ)] for ℓ ~ N(mean, cov) is split over the n cells {argmax ℓ = c}. In cell c the gaps
g_j = ℓ_c − ℓ_j (j ≠ c) are Gaussian and constrained to g ≥ 0; Genz's separation of variables
turns that orthant into the unit cube, on which the integrand (the orthant's weight times the
statistics, bounded and smooth inside the cell) is integrated by scrambled Sobol points.
Independent scrambles give independent unbiased replicates, hence a statistical standard error.
E[LSE] takes its unbounded part, E[max ℓ], from the face formula (G10), whose terms are
orthant probabilities too.

It shares no panels, lines or Gauss–Hermite nodes with the graded rule (G5)–(G8), and its error
does not grow with the number of large-variance directions, only slowly with n: its role is the
cross-check of `softmax_stats_error` for n ≥ 5, where the graded rule's own estimate can
underestimate. It is slower and, at n ≤ 4, far less accurate than the graded rule.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtri
from jaxtyping import Array, Float

# The logits' covariance is raised by this multiple of the largest variance of a logit difference
# (Cholesky of singular covariances, and one full-rank law for the cells and the faces). The
# statistics are smooth, so the bias is at most about ½ · 1e-10 · that variance.
_JITTER = 1e-10
# The bound on (G9)'s own error: QMC_SE_SAFETY standard errors plus QMC_FLOOR (measured: the
# error reached at most 0.50 of it over every entry of the 36 stored 4-logit references, four
# seeds; docs/theory.md, §8, (G9)). `softmax_stats_error` relies on it for n ≥ 5.
QMC_SE_SAFETY = 8.0
QMC_FLOOR = 4e-6


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


def _orthant(mg: Array, Sg: Array, u: Array) -> tuple[Array, Array, Array]:
    """Genz's separation of variables for g ~ N(mg, Sg) on the orthant g ≥ 0 (eq. (G9)).

    Returns the weights (R, P) (their mean is P(g ≥ 0)), the gaps g (R, P, m) in the order
    used, and that order: the gap least likely to be non-negative first, factored by Cholesky
    and conditioned variable by variable. u: (R, P, m) points in (0, 1); Sg positive definite
    (the caller's jitter).
    """
    m = mg.shape[0]
    dtype = mg.dtype
    order = jnp.argsort(log_ndtr(mg / jnp.sqrt(jnp.diag(Sg))))
    mg, Sg = mg[order], Sg[order][:, order]
    L = jnp.linalg.cholesky(Sg)
    z = jnp.zeros(u.shape, dtype)
    log_weight = jnp.zeros(u.shape[:-1], dtype)
    for j in range(m):
        lin = mg[j] + z @ L[j]  # z_j is still 0 here, so only z_{<j} enters
        lower = -lin / L[j, j]  # g_j ≥ 0 ⟺ z_j ≥ lower
        log_p = log_ndtr(-lower)
        log_weight = log_weight + log_p
        # z_j from N(0, 1) restricted to [lower, ∞), by inversion of its upper tail
        tail = jnp.maximum((1.0 - u[..., j]) * jnp.exp(log_p), jnp.finfo(dtype).tiny)
        z = z.at[..., j].set(-ndtri(tail))
    gaps = jnp.maximum(mg + z @ L.T, 0.0)  # rounding: the orthant's gaps are non-negative
    return jnp.exp(log_weight), gaps, order


def _gap_matrix(n: int, top: int, others: np.ndarray, dtype) -> Array:
    """Rows e_top − e_j for j in `others`."""
    D = np.zeros((len(others), n))
    D[:, top] = 1.0
    D[np.arange(len(others)), others] = -1.0
    return jnp.asarray(D, dtype)


def _cell(mean: Array, cov: Array, c: int, u: Array):
    """Cell c's weighted samples: weights (R, P) and the logits relative to logit c (R, P, n)."""
    n = mean.shape[0]
    others = np.array([j for j in range(n) if j != c])
    D = _gap_matrix(n, c, others, mean.dtype)
    weight, gaps, order = _orthant(D @ mean, D @ cov @ D.T, u)
    # ℓ_j − ℓ_c = −g_j, and 0 at c
    rel = jnp.zeros(gaps.shape[:-1] + (n,), mean.dtype)
    return weight, rel.at[..., jnp.asarray(others)[order]].set(-gaps)


def _face(mean: Array, cov: Array, a: int, b: int, u: Array) -> Array:
    """s φ(m/s) P(ℓ_a ≥ ℓ_j ∀ j ∉ {a, b} | ℓ_a = ℓ_b), per replicate (R,): the face (a, b)'s
    term of E[max ℓ] (eq. (G10)); s² = Var(ℓ_a − ℓ_b), m = E[ℓ_a − ℓ_b]."""
    n = mean.shape[0]
    dtype = mean.dtype
    tie = jnp.zeros((n,), dtype).at[a].set(1.0).at[b].set(-1.0)
    m, var = tie @ mean, tie @ cov @ tie
    safe = jnp.where(var > 0, var, 1.0)
    density = jnp.where(var > 0, jnp.exp(-0.5 * m * m / safe) / jnp.sqrt(2.0 * jnp.pi * safe), 0.0)
    if n == 2:
        return jnp.broadcast_to(var * density, u.shape[:1])
    others = np.array([j for j in range(n) if j not in (a, b)])
    H = _gap_matrix(n, a, others, dtype)
    cross = H @ cov @ tie
    mh = H @ mean - cross * (m / safe)
    Sh = H @ cov @ H.T - jnp.outer(cross, cross) / safe
    weight, _, _ = _orthant(mh, 0.5 * (Sh + Sh.T), u[..., : n - 2])
    return var * density * jnp.mean(weight, axis=-1)


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
    Not differentiable by design (a cross-check). Cost: about n (n − 1) R P normal quantiles
    for the cells and n (n − 1)(n − 2) R P / 2 for the faces of E[max ℓ] (G10), which share the
    first cell's points.

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
    if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(
            f"`mean` must have shape (n,) and `cov` (n, n), got {mean.shape} and {cov.shape}."
        )
    n = mean.shape[0]
    if n < 2:
        raise ValueError(f"`mean` needs at least 2 logits for the cells, got {n}.")
    if not 1 <= log2_points <= 20:
        raise ValueError(f"`log2_points` must be in 1 … 20, got {log2_points}.")
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
    # The jitter, 1e-10 of the largest variance of a logit difference, makes the law full rank,
    # so that the cells' and the faces' conditionals (G10) are all those of one law.
    pair_var = jnp.diag(cov)[:, None] + jnp.diag(cov)[None, :] - 2.0 * cov
    scale = jnp.maximum(jnp.max(pair_var), jnp.finfo(dtype).tiny)
    cov = cov + _JITTER * scale * jnp.eye(n, dtype=dtype)
    # E[LSE] = E[max ℓ] + Σ_c E[(LSE − ℓ_c) 1{cell c}]; E[max ℓ] by the face formula (G10),
    # about the mean logit: Σ_c (μ_c − μ̄) P(cell c) + Σ_{a<b} s φ(m/s) Q_ab.
    center = jnp.mean(mean)
    lse = jnp.zeros((replicates,), dtype)
    resp = jnp.zeros((replicates, n), dtype)
    outer = jnp.zeros((replicates, n, n), dtype)
    for c in range(n):
        weight, rel = _cell(mean, cov, c, u[c])
        pi = jax.nn.softmax(rel, axis=-1)
        lse_above_top = jax.nn.logsumexp(rel, axis=-1)  # LSE − ℓ_c ∈ [0, log n]
        lse = lse + jnp.mean(weight * ((mean[c] - center) + lse_above_top), axis=-1)
        resp = resp + jnp.mean(weight[..., None] * pi, axis=-2)
        outer = outer + jnp.einsum("rp,rpi,rpj->rij", weight, pi, pi) / weight.shape[-1]
    for a, b in itertools.combinations(range(n), 2):
        lse = lse + _face(mean, cov, a, b, u[0])
    lse = lse + center

    def mean_and_se(x):
        return jnp.mean(x, axis=0), jnp.std(x, axis=0, ddof=1) / float(np.sqrt(replicates))

    (lse, lse_se), (resp, resp_se), (outer, outer_se) = map(mean_and_se, (lse, resp, outer))
    return (lse, resp, outer), (lse_se, resp_se, outer_se)
