"""Gaussian expectations of softmax statistics of a Gaussian logit vector.

Under x ~ N(m_k, s² I_d) the logit vectors of both mixtures are Gaussian (docs/theory.md, eq. (G1)),
so every expectation the objective and the theory need is E[f(ℓ)] for ℓ ~ N(mean, cov) with f one of

- LSE(ℓ) = log Σ_j exp ℓ_j,  π(ℓ) = softmax(ℓ),  π(ℓ) π(ℓ)ᵀ.

These are invariant (π) or equivariant (LSE) under a common shift, so they are integrals over the
J − 1 logit differences δ = ℓ_{1:} − ℓ_0 (eq. (G2)):

- J = 1: trivial;
- J = 2: one-dimensional, computed to ~1e-10 by `sigmoid_moment` (eqs. (I1)–(I4));
- J ≥ 3 (`rule="graded"`, the default for J = 3, 4): one logit integrated in closed form given
  the others by the 1-D kernel (G5), the widest remaining direction by a Gauss–Legendre line
  rule graded towards every pairwise tie with the upper envelope in closed form (G6), for
  J = 4, 5 the next widest by a second graded line at the marginal ties and triple points (G8),
  the other directions by tensor Gauss–Hermite; `softmax_stats_error` estimates the error from
  lower-order rules (G7);
- legacy (`rule="legacy"` or `nodes` an int; the default for J ≥ 5, where the graded rule costs
  15–230× more): tensor Gauss–Hermite over δ (J = 3, 4), symmetrised Halton (J ≥ 5, eq. (G4));
  `gaussian_expectation` / `gaussian_rule` keep these rules for other integrands.

Derivatives never go through a factorisation of `cov` (singular covariances are common: antipodal
targets, coincident means). Instead the multi-dimensional rules carry a `jax.custom_jvp` built
on the heat equation ∂E[f]/∂mean = E[∇f], ∂E[f]/∂cov = ½ E[∇²f] (eq. (G3)).
"""

import functools
import itertools
import math
import statistics
import warnings
from collections.abc import Callable
from typing import NamedTuple, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._cells import QMC_FLOOR, QMC_SE_SAFETY, qmc_softmax_stats
from ._integrals import check_kernel, sigmoid_moments, tensor_gauss_hermite
from ._linalg import rank_rtol, sqrt_psd

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


# ---------------------------------------------------------------------------------------------
# The graded rule for n ≥ 3: one logit integrated in closed form (G5), a breakpoint-graded line
# rule along the widest remaining direction (G6), for n ≥ 4 a second graded line rule along the
# next widest one, graded at the marginal features (G8), and tensor Gauss–Hermite across the
# n − 4 narrowest directions that remain for n ≥ 5.
# ---------------------------------------------------------------------------------------------


class _Resolution(NamedTuple):
    """The static settings of the graded rule (G6), (G8).

    Line rule (G6): z ∈ [−`half_width`, `half_width`], `background` uniform panels, and around
    every pairwise tie z* the endpoints z* and z* ± w·`grading` (w the tie's width in z);
    Gauss–Legendre with `order` nodes per panel. The outer line (G8), for n ≥ 4: the same with
    `outer_background`, `outer_grading` and `outer_order`, at the ties' and the triple points'
    marginal positions. Across the lines: tensor Gauss–Hermite with `transverse[n]` nodes per
    dimension, over the n − 4 narrowest directions for n = 5 (two lines) and the n − 3 narrowest
    for n ≥ 6 (one line: the second line's cost grows like n⁵, docs/theory.md, §8). `kernel`:
    the rule of the 1-D kernel along the inner line ("accurate" or "fast", eqs. (I7), (I6)).
    """

    order: int = 5
    background: int = 10
    grading: tuple[float, ...] = (1.0, 3.0, 9.0, 27.0)
    outer_order: int = 5
    outer_background: int = 10
    outer_grading: tuple[float, ...] = (1.0, 3.0, 9.0, 27.0)
    transverse: tuple[tuple[int, int], ...] = ((5, 6), (6, 5), (7, 4), (8, 3))
    half_width: float = 6.5
    kernel: str = "accurate"

    def transverse_nodes(self, n: int) -> int:
        return dict(self.transverse).get(n, min(dict(self.transverse).values()))


_DEFAULT_RESOLUTION = _Resolution()
# The outer line (G8) is used for n = 4, 5; beyond, its O(n³) triple points make it too costly.
_OUTER_LINE_MAX_N = 5
# The lower-order rules of the error estimate (G7): one Gauss–Legendre node fewer per panel on
# each line, and fewer Gauss–Hermite nodes across (n ≥ 5).
_FEWER_INNER = _DEFAULT_RESOLUTION._replace(order=4)
_FEWER_OUTER = _DEFAULT_RESOLUTION._replace(outer_order=4)
_COARSE_ACROSS = _DEFAULT_RESOLUTION._replace(transverse=((5, 4), (6, 3), (7, 3), (8, 2)))
# The estimate multiplies each difference by this factor: unscaled, the smallest ratio
# estimate/error over the stored 4-logit references was 0.78 (docs/theory.md, §8, (G7)).
_SAFETY = 4.0
# Every resolution raised: the self-convergence check `refined_softmax_stats`.
_REFINED = _Resolution(
    order=9,
    background=24,
    grading=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    outer_order=9,
    outer_background=24,
    outer_grading=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    transverse=((5, 10), (6, 8), (7, 5), (8, 4)),
)


@functools.cache
def _legendre(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(k)


def _graded_nodes(centers: Array, widths: Array, order: int, background: int, grading, half):
    """Panels of [−half, half]: `background` uniform ones, every centre and centre ± width·grading.

    Returns the panel endpoints, and Gauss–Legendre nodes (P,) with weights (P,) for E over
    N(0, 1) restricted to [−half, half], normalised to sum to one.
    """
    dtype = centers.dtype
    steps = jnp.asarray(np.concatenate([-np.asarray(grading), grading]), dtype)
    uniform = jnp.asarray(np.linspace(-half, half, background + 1), dtype)
    ends = jnp.concatenate([uniform, centers, (centers[:, None] + widths[:, None] * steps).ravel()])
    ends = jnp.sort(jnp.clip(ends, -half, half))
    mid, hw = 0.5 * (ends[1:] + ends[:-1]), 0.5 * (ends[1:] - ends[:-1])
    t, wl = (jnp.asarray(a, dtype) for a in _legendre(order))
    z = (mid[:, None] + hw[:, None] * t).ravel()
    weights = (hw[:, None] * wl).ravel() * jnp.exp(-0.5 * z * z)
    return ends, z, weights / jnp.sum(weights)


def _pairs(x: Array) -> Array:
    iu = np.triu_indices(x.shape[0], 1)
    return (x[:, None] - x[None, :])[iu]


def _line_rule(alpha: Array, beta: Array, width: Array, res: _Resolution):
    """The graded line rule (G6) for logits α + β z, z ~ N(0, 1).

    Returns nodes (P,), weights (P,) summing to one, and E[max_k(α_k + β_k z)] in closed form.
    """
    dtype = alpha.dtype
    iu = np.triu_indices(alpha.shape[0], 1)
    d_alpha, d_beta = _pairs(alpha), _pairs(beta)
    # A tie whose two logits are parallel along the line has no crossing: park it outside.
    crossing = jnp.abs(d_beta) > jnp.sqrt(jnp.finfo(dtype).tiny)
    d_beta = jnp.where(crossing, d_beta, 1.0)
    ties = jnp.where(crossing, -d_alpha / d_beta, 2.0 * res.half_width)
    w = jnp.where(crossing, width[iu] / jnp.abs(d_beta), 1.0)
    ends, z, weights = _graded_nodes(
        ties, w, res.order, res.background, res.grading, res.half_width
    )
    # The upper envelope max_k(α_k + β_k z) is linear on every panel (every tie is an endpoint),
    # so its expectation is closed form; the first and last panels extend to ∓∞.
    mid = 0.5 * (ends[1:] + ends[:-1])
    top = jnp.argmax(alpha[:, None] + beta[:, None] * mid[None, :], axis=0)
    cdf = (0.5 * jax.lax.erfc(-ends / math.sqrt(2.0))).at[0].set(0.0).at[-1].set(1.0)
    pdf = (jnp.exp(-0.5 * ends * ends) / math.sqrt(2.0 * math.pi)).at[0].set(0.0).at[-1].set(0.0)
    e_max = jnp.sum(alpha[top] * (cdf[1:] - cdf[:-1]) + beta[top] * (pdf[:-1] - pdf[1:]))
    return z, weights, e_max


def _outer_rule(alpha: Array, outer: Array, inner: Array, width: Array, res: _Resolution):
    """The outer graded line rule (G8) for logits α + outer·y + inner·z, z ~ N(0, 1) inside.

    The marginal integrand in y (the inner line integrated) has features at each pair's tie
    centre −Δα/Δouter, of width √(w² + Δinner²)/|Δouter| (the tie layer seen through the inner
    Gaussian), and at each triple point's y, where the upper envelope changes (a jump in its
    second derivative), of width min w / max |Δouter|. Returns nodes (P,) and weights (P,).
    """
    n = alpha.shape[0]
    dtype = alpha.dtype
    tiny = jnp.sqrt(jnp.finfo(dtype).tiny)
    iu = np.triu_indices(n, 1)
    d_alpha, d_out, d_in = _pairs(alpha), _pairs(outer), _pairs(inner)
    crossing = jnp.abs(d_out) > tiny
    d_safe = jnp.where(crossing, d_out, 1.0)
    centers = [jnp.where(crossing, -d_alpha / d_safe, 2.0 * res.half_width)]
    widths = [jnp.where(crossing, jnp.sqrt(width[iu] ** 2 + d_in**2) / jnp.abs(d_safe), 1.0)]
    triples = np.array(list(itertools.combinations(range(n), 3)))
    i, j, k = triples.T
    a1, a2 = alpha[i] - alpha[j], alpha[i] - alpha[k]
    o1, o2, o3 = outer[i] - outer[j], outer[i] - outer[k], outer[j] - outer[k]
    i1, i2 = inner[i] - inner[j], inner[i] - inner[k]
    det = o1 * i2 - o2 * i1
    # A triple whose tie lines are parallel in the plane has no point: park it outside.
    point = jnp.abs(det) > 1e-12 * jnp.sqrt((o1**2 + i1**2) * (o2**2 + i2**2)) + tiny
    det = jnp.where(point, det, 1.0)
    narrow = jnp.minimum(jnp.minimum(width[i, j], width[i, k]), width[j, k])
    steep = jnp.maximum(jnp.maximum(jnp.abs(o1), jnp.abs(o2)), jnp.abs(o3))
    centers.append(jnp.where(point, (a2 * i1 - a1 * i2) / det, 2.0 * res.half_width))
    widths.append(jnp.where(point, narrow / jnp.maximum(steep, tiny), 1.0))
    _, y, weights = _graded_nodes(
        jnp.concatenate(centers),
        jnp.concatenate(widths),
        res.outer_order,
        res.outer_background,
        res.outer_grading,
        res.half_width,
    )
    return y, weights


def _swap_last(n: int, c: int) -> np.ndarray:
    perm = np.arange(n)
    perm[c], perm[n - 1] = n - 1, c
    return perm


def _conditional(cov: Array, c: int):
    """Logit c given the differences of the others (eq. (G5)), with c moved last.

    Returns (v_c, A, b): in the others' difference coordinates δ_R = μ_R + A z (z ~ N(0, I),
    columns of A the principal axes in ascending variance, null ones zero), ℓ_c − ℓ_0 has
    conditional mean μ_c + b·z and variance v_c.
    """
    n = cov.shape[0]
    dtype = cov.dtype
    perm = _swap_last(n, c)
    D = jnp.concatenate([-jnp.ones((n - 1, 1), dtype), jnp.eye(n - 1, dtype=dtype)], 1)
    S = D @ cov[perm][:, perm] @ D.T
    lam, V = jnp.linalg.eigh(S[:-1, :-1])
    # The rank rule (RK1), with the scale of the whole difference covariance.
    scale = jnp.maximum(jnp.max(jnp.diag(S)), jnp.finfo(dtype).tiny)
    active = lam > rank_rtol(n - 1, dtype) * scale
    root = jnp.sqrt(jnp.where(active, lam, 1.0))
    b = jnp.where(active, (S[-1, :-1] @ V) / root, 0.0)
    A = V * jnp.where(active, root, 0.0)
    return jnp.maximum(S[-1, -1] - jnp.sum(b * b), 0.0), A, b


def _softmax_rule(mean: Array, cov: Array, res: _Resolution, lse_only: bool):
    """(E[LSE], E[π], E[ππᵀ]) by eqs. (G5), (G6), (G8) for n ≥ 3 (primal; no derivative rule)."""
    n = mean.shape[0]
    dtype = mean.dtype
    cov = 0.5 * (cov + cov.T)
    # Integrate in closed form the logit with the largest conditional variance (smoothest rest).
    v_all = jnp.stack([_conditional(cov, c)[0] for c in range(n)])
    c = jnp.argmax(v_all)
    v_c, A, b = jax.lax.switch(c, [functools.partial(_conditional, cov, k) for k in range(n)])
    perm = jnp.asarray(np.stack([_swap_last(n, k) for k in range(n)]))[c]
    m = mean[perm]
    # Logits relative to logit 0, affine in z ∈ R^{n−2}: rows 0, the others, then c's mean.
    # Columns of B ascend in variance: the last is the line (G6), the one before the outer line.
    alpha = jnp.concatenate([jnp.zeros((1,), dtype), m[1:] - m[0]])
    B = jnp.concatenate([jnp.zeros((1, n - 2), dtype), A, b[None]], 0)
    # Tie widths: 1 between two logits, √(1 + v_c) against c's smoothed conditional mean.
    soft = jnp.sqrt(1.0 + v_c)
    width = jnp.ones((n, n), dtype).at[-1, :].set(soft).at[:, -1].set(soft)

    def along_line(a):
        beta = B[:, -1]
        z, w, e_max = _line_rule(a, beta, width, res)
        logits = a[:, None] + beta[:, None] * z  # (n, P)
        rest = jax.nn.logsumexp(logits[:-1], axis=0)
        t = logits[-1] - rest
        # (G5): LSE = LSE(rest) + softplus(ℓ_c − LSE(rest)); its upper envelope is exact (G6).
        # E[softplus], E[σ], E[σ'] of ℓ_c − LSE(rest) at one (t, v_c): one joint kernel call (I6).
        moments = sigmoid_moments((-1,) if lse_only else (-1, 0, 1), t, v_c, kernel=res.kernel)
        lse = e_max + jnp.dot(w, rest + moments[0] - jnp.max(logits, axis=0))
        if lse_only:
            return lse
        s0, s1 = moments[1], moments[2]
        rho = jax.nn.softmax(logits[:-1], axis=0)
        resp = jnp.concatenate([rho @ (w * (1.0 - s0)), jnp.dot(w, s0)[None]])
        outer = jnp.zeros((n, n), dtype)
        outer = outer.at[:-1, :-1].set((rho * (w * (1.0 - s0 - s1))) @ rho.T)
        cross = rho @ (w * s1)
        outer = outer.at[:-1, -1].set(cross).at[-1, :-1].set(cross)
        outer = outer.at[-1, -1].set(jnp.dot(w, s0 - s1))
        return lse, resp, outer

    def across_plane(a):
        # (G8): the outer line along column −2, the inner line (G6) along column −1.
        y, wy = _outer_rule(a, B[:, -2], B[:, -1], width, res)
        values = jax.vmap(lambda u: along_line(a + B[:, -2] * u))(y)
        return jax.tree.map(lambda v: jnp.tensordot(wy, v, axes=1), values)

    if 4 <= n <= _OUTER_LINE_MAX_N:
        inside, across = across_plane, n - 4
    else:
        inside, across = along_line, n - 3
    if across:
        nodes, weights = tensor_gauss_hermite(across, res.transverse_nodes(n))
        y_nodes, y_weights = jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)
    else:
        y_nodes, y_weights = jnp.zeros((1, 0), dtype), jnp.ones((1,), dtype)
    values = jax.vmap(lambda y: inside(alpha + B[:, :across] @ y))(y_nodes)
    values = jax.tree.map(lambda v: jnp.tensordot(y_weights, v, axes=1), values)
    if lse_only:
        return m[0] + values
    lse, resp, outer = values
    inv = jnp.argsort(perm)
    return m[0] + lse, resp[inv], outer[inv][:, inv]


# The rule `expected_softmax_stats` / `expected_lse` use by default for n logits: the graded rule
# (G5)–(G8), accurate to 1e-7 on every kind of covariance, for n = 3, 4; the legacy rule (G4) for
# n ≥ 5, where the graded one costs seconds per evaluation and still misses 2e-6 on full-rank,
# large-variance cases (docs/theory.md, §8, measured table).
_DEFAULT_RULE = {3: "graded", 4: "graded"}


class SoftmaxAccuracyWarning(UserWarning):
    """The default softmax rule for n ≥ 5 logits (legacy Halton, (G4)) is used: its error is not
    bounded to 2e-6 (up to 0.17 on large-variance covariances; docs/theory.md, §8)."""


def _warn_unverified(n: int, nodes: int | None, rule: str | None) -> None:
    """Say once (per n, at trace time) that the n ≥ 5 default rule is not verified."""
    if n >= 5 and nodes is None and rule is None:
        graded = (
            "or rule='graded' (up to 1.5e-2 at n = 5, about 1 s per evaluation)"
            if n == 5
            else "not rule='graded' (off by up to 5 on antipodal cases at n ≥ 6)"
        )
        warnings.warn(
            f"{n} logits: the softmax statistics use the 4096-point Halton rule (G4), whose error "
            "reaches 0.17 at large logit variances (docs/theory.md, §8); pass rule='legacy' to "
            f"accept it, {graded}; softmax_stats_error bounds the error (G9).",
            SoftmaxAccuracyWarning,
            stacklevel=3,
        )


def _resolve_rule(n: int, nodes: int | None, rule: str | None) -> str:
    if rule not in (None, "graded", "legacy"):
        raise ValueError(f"`rule` must be None, 'graded' or 'legacy', got {rule!r}.")
    if rule == "graded" and nodes is not None:
        raise ValueError("`nodes` selects the legacy rule; it cannot be combined with 'graded'.")
    if rule is None:
        rule = "legacy" if nodes is not None else _DEFAULT_RULE.get(n, "legacy")
    return rule


def default_softmax_rule(n: int) -> str:
    """The rule `expected_softmax_stats` uses by default for n logits: "graded" or "legacy".

    **Example:** `default_softmax_rule(3)  # "graded"`
    """
    return _resolve_rule(n, None, None)


def refined_softmax_stats(mean: Float[Array, " n"], cov: Float[Array, "n n"]):
    """The graded rule (G5)–(G8) with every resolution raised: a self-convergence check.

    Line panels of 9 Gauss–Legendre nodes, 24 background panels and finer grading at the ties on
    both lines, and denser Gauss–Hermite across them (n ≥ 5). Much slower than the default; for
    checking only. It is the same method, so it is not an independent reference.

    **Arguments:** `mean`, `cov`: the Gaussian law of the logits (n ≥ 3).

    **Returns:** `(lse, resp, resp_outer)`, as `expected_softmax_stats`.

    **Example:**
    ```python
    lse, resp, outer = refined_softmax_stats(jnp.zeros(4), jnp.eye(4))
    ```
    """
    return _softmax_rule(jnp.asarray(mean), jnp.asarray(cov), _REFINED, False)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _stats(res: _Resolution, mean: Array, cov: Array) -> tuple[Array, Array, Array]:
    return cast(tuple[Array, Array, Array], _softmax_rule(mean, cov, res, False))


@_stats.defjvp
def _stats_jvp(res, primals, tangents):
    # Heat equation (G3) with ∂_cov = ½ ∂²_mean: both tangents are derivatives of the rule in the
    # mean, where the rule is smooth; no derivative ever goes through the factorisation of cov.
    mean, cov = primals
    dmean, dcov = tangents
    dcov = 0.5 * (dcov + dcov.T)
    rule = lambda m: _softmax_rule(m, cov, res, False)  # noqa: E731
    out, first = jax.jvp(rule, (mean,), (dmean,))
    eye = jnp.eye(mean.shape[0], dtype=mean.dtype)

    def row(i):
        along = lambda m: jax.jvp(rule, (m,), (dcov[i],))[1]  # noqa: E731
        return jax.jvp(along, (mean,), (eye[i],))[1]

    second = [row(i) for i in range(mean.shape[0])]
    second = jax.tree.map(lambda *leaves: 0.5 * sum(leaves), *second)
    return out, jax.tree.map(jnp.add, first, second)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _lse(res: _Resolution, mean: Array, cov: Array) -> Array:
    return cast(Array, _softmax_rule(mean, cov, res, True))


@_lse.defjvp
def _lse_jvp(res, primals, tangents):
    # (G3): ∂E[LSE]/∂mean = E[π], ∂E[LSE]/∂cov = ½ (diag E[π] − E[ππᵀ]).
    mean, cov = primals
    dmean, dcov = tangents
    lse, resp, outer = _stats(res, mean, cov)
    hess = jnp.diag(resp) - outer
    return lse, jnp.dot(resp, dmean) + 0.5 * jnp.sum(hess * dcov)


def expected_lse(
    mean: Float[Array, " n"],
    cov: Float[Array, "n n"],
    nodes: int | None = None,
    *,
    rule: str | None = None,
    kernel: str = "accurate",
) -> Float[Array, ""]:
    """E[logsumexp(ℓ)] for ℓ ~ N(mean, cov) (eqs. (G2), (G5)–(G8), (I2)).

    Exact derivatives: the `jax.custom_jvp` is the heat equation (G3),
    ∂/∂mean = E[π], ∂/∂cov = ½ (diag E[π] − E[ππᵀ]), with the same rule's statistics; finite
    for singular `cov`.

    **Arguments:**

    - `mean`: mean of the logits, shape (n,).
    - `cov`: their covariance, shape (n, n), positive semi-definite (singular allowed).
    - `nodes`: an int selects the legacy tensor Gauss–Hermite rule (G4) with that many nodes per
      dimension (n = 3, 4; the legacy 4096-point QMC rule for n ≥ 5), kept for reproducing older
      runs; `None` (default): the default rule for this n (see `rule`).
    - `rule`: `None` (default) picks by n: the graded rule (G5)–(G8) for n = 3, 4, the legacy
      rule (G4) for n ≥ 5, where the graded rule costs 15–230× more per evaluation
      (docs/theory.md, §8, measured table). `"graded"` forces (G5)–(G8) (measured absolute error
      ≤ 1e-7 at n = 3, 4 on every kind of covariance; for n ≥ 5 see §8), `"legacy"` forces
      (G4).
    - `kernel`: the rule of the 1-D kernel (n = 2 and the graded rule): "accurate" (default) or
      "fast" (eq. (I6); see `sigmoid_moments`).

    **Returns:** a scalar.

    **Example:**
    ```python
    expected_lse(jnp.zeros(2), jnp.zeros((2, 2)))  # log 2
    expected_lse(jnp.array([0.0, 1.0, -1.0]), jnp.eye(3))
    ```
    """
    n = mean.shape[0]
    check_kernel(kernel)
    _warn_unverified(n, nodes, rule)
    if n == 1:
        return mean[0]
    if n == 2:
        return mean[0] + sigmoid_moments((-1,), *_two_point(mean, cov), kernel=kernel)[0]
    if _resolve_rule(n, nodes, rule) == "legacy":
        dmean, dcov = _differences(mean, cov)
        return mean[0] + gaussian_expectation(_lse_from_differences, dmean, dcov, nodes=nodes)
    return _lse(_DEFAULT_RESOLUTION._replace(kernel=kernel), mean, cov)


def expected_softmax_stats(
    mean: Float[Array, " n"],
    cov: Float[Array, "n n"],
    nodes: int | None = None,
    *,
    rule: str | None = None,
    kernel: str = "accurate",
) -> tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]:
    """E[LSE(ℓ)], E[π(ℓ)], E[π(ℓ) π(ℓ)ᵀ] for ℓ ~ N(mean, cov), π = softmax (eqs. (G5)–(G8)).

    n = 1, 2 are exact (the 1-D kernel, eqs. (I1)–(I3)); n ≥ 3 integrates one logit in closed
    form given the others (G5) and the rest by breakpoint-graded line rules (G6), (G8) (the
    default for n = 3, 4; measured absolute error ≤ 1e-7 on every entry at n = 3, 4), the legacy
    rule (G4)
    by default for n ≥ 5 (cost; docs/theory.md, §8; `softmax_stats_error` estimates the error).
    Differentiable: the graded rule's `jax.custom_jvp` is the heat equation (G3) with
    ∂_cov = ½ ∂²_mean, so no derivative goes through a factorisation of `cov`.

    **Arguments:**

    - `mean`: mean of the logits, shape (n,).
    - `cov`: their covariance, shape (n, n), positive semi-definite (singular allowed).
    - `nodes`, `rule`: see `expected_lse` (`rule=None`: graded for n = 3, 4, legacy for n ≥ 5;
      an int `nodes`: the legacy rule with that many nodes per dimension).
    - `kernel`: the rule of the 1-D kernel, "accurate" (default) or "fast" (eq. (I6)).

    **Returns:** `(lse, resp, resp_outer)`, of shapes (), (n,) and (n, n).

    **Example:**
    ```python
    lse, resp, outer = expected_softmax_stats(jnp.zeros(3), jnp.eye(3))
    # resp ≈ [1/3, 1/3, 1/3] by symmetry
    ```
    """
    n = mean.shape[0]
    check_kernel(kernel)
    _warn_unverified(n, nodes, rule)
    if n == 1:
        one = jnp.ones((1,), mean.dtype)
        return mean[0], one, one[:, None]
    if n == 2:
        # E[softplus(δ)], E[π_1] = E[σ(δ)], E[π_0 π_1] = E[σ'(δ)]: one joint kernel call (I6)
        sp, e0, e1 = sigmoid_moments((-1, 0, 1), *_two_point(mean, cov), kernel=kernel)
        resp = jnp.stack([1.0 - e0, e0])
        outer = jnp.array([[1.0 - e0 - e1, e1], [e1, e0 - e1]])
        return mean[0] + sp, resp, outer
    if _resolve_rule(n, nodes, rule) == "legacy":
        dmean, dcov = _differences(mean, cov)
        lse, resp, outer = gaussian_expectation(_stats_from_differences, dmean, dcov, nodes=nodes)
        return mean[0] + lse, resp, outer
    return _stats(_DEFAULT_RESOLUTION._replace(kernel=kernel), mean, cov)


def softmax_stats_error(
    mean: Float[Array, " n"], cov: Float[Array, "n n"], *, rule: str | None = None
) -> tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]:
    """An estimate of the absolute error of `expected_softmax_stats(mean, cov, rule=rule)` (G7).

    For the graded rule (G5)–(G8) (the default for n = 3, 4): the rule is repeated with one
    Gauss–Legendre node fewer per panel of the inner line, (n = 4, 5) of the outer line, and
    (n ≥ 5) with the coarser Gauss–Hermite rule across the lines; the estimate is 4 × the sum of
    the differences (a safety factor), plus a floor max(1e-10, 100 ε)·(1 + |value|) (the 1-D
    kernel's accuracy and rounding). For the legacy rule (the default for n ≥ 5) it is
    |legacy − graded| plus the graded rule's estimate (for n ≥ 5, or |legacy − cells| + 8 SE +
    4e-6 with (G9) below, whichever is smaller). For n ≤ 2 (exact 1-D kernel) it is the
    floor alone. Measured to bound the true error of the graded rule on every hard case at
    n = 3, 4 and for rank-one covariances. For n ≥ 5, where the lower-order rules can share the
    graded rule's error (full rank, large variances), the graded rule's estimate is at least
    |graded − cells| + 8 SE + 4e-6, with `cells` ± SE the independent randomized route
    `qmc_softmax_stats` (G9): conservative, but never below 4e-6 (docs/theory.md, §8). It costs
    two to four evaluations of the graded rule (and, for n ≥ 5, one of (G9): 0.3–1.4 s).
    Not differentiable (a diagnostic).

    **Arguments:**

    - `mean`: mean of the logits, shape (n,).
    - `cov`: their covariance, shape (n, n), positive semi-definite.
    - `rule`: as in `expected_softmax_stats` (`None`: the default rule for this n).

    **Returns:** `(lse_err, resp_err, outer_err)`, non-negative, with the shapes of
    `expected_softmax_stats`'s output.

    **Example:**
    ```python
    err_lse, err_resp, err_outer = softmax_stats_error(jnp.zeros(3), 100.0 * jnp.eye(3))
    # each entry ≲ 1e-6
    ```
    """
    mean, cov = jax.lax.stop_gradient((mean, cov))
    n = mean.shape[0]
    value = expected_softmax_stats(mean, cov, rule=None if n <= 2 else "graded")
    # The 1-D kernel's accuracy (≲ 1e-11 in float64) and rounding.
    floor_rel = max(1e-10, 100.0 * float(jnp.finfo(mean.dtype).eps))
    floor = jax.tree.map(lambda v: floor_rel * (1.0 + jnp.abs(v)), value)
    if n <= 2:
        return floor
    nested = 4 <= n <= _OUTER_LINE_MAX_N
    lower = [_FEWER_INNER] + [_FEWER_OUTER] * nested + [_COARSE_ACROSS] * (n >= 5)
    est = floor
    for res in lower:
        other = _softmax_rule(mean, cov, res, False)
        est = jax.tree.map(lambda e, v, o: e + _SAFETY * jnp.abs(v - o), est, value, other)
    if n >= 5:
        cells, se = qmc_softmax_stats(mean, cov)

        def against_cells(v):
            # (G9): |v − cells| + 8 SE + 4e-6 bounds v's error, given (G9)'s measured bound
            return jax.tree.map(
                lambda a, b, c: jnp.abs(a - b) + QMC_SE_SAFETY * c + QMC_FLOOR, v, cells, se
            )

        # it catches what the lower-order rules share (docs/theory.md §8)
        est = jax.tree.map(jnp.maximum, est, against_cells(value))
    if _resolve_rule(n, None, rule) == "legacy":
        legacy = expected_softmax_stats(mean, cov, rule="legacy")
        est = jax.tree.map(lambda e, v, g: e + jnp.abs(v - g), est, legacy, value)
        if n >= 5:
            # two bounds of the legacy rule's error: through the graded rule, or directly
            est = jax.tree.map(jnp.minimum, est, against_cells(legacy))
    return est
