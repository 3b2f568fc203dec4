"""log E[exp(Σ_g c_g LSE(ℓ_g))] for a Gaussian vector ℓ split into blocks (docs/theory.md, §16).

The Rényi objectives reduce to this integral, with two blocks (the target's and the family's
logits) and coefficients (γβ, −γ), γ = 1 − α (eq. (RY3)). The rule (eqs. (RY5)–(RY7)):

- (RY5) the tilt: LSE(ℓ_g) = ℓ_{g,0} + LSE(0, δ_g) with δ_g = ℓ_{g,1:} − ℓ_{g,0}. The linear part
  λᵀℓ, λ = Σ_g c_g e_{g,0}, is taken out in closed form, E[e^{λᵀℓ} G(δ)] =
  e^{λᵀμ + λᵀΣλ/2} E'[G(δ)] with δ's law shifted by DΣλ. What is left is an integral over the
  r = Σ_g (n_g − 1) logit differences of G(δ) = exp(Σ_g c_g LSE(0, δ_g)).
- (RY6) r ≤ 2 with blocks of at most two logits (K, J ≤ 2): nested line rules. The outer
  coordinate is the one of larger variance; the inner one is taken given it. On each line, in
  the standard coordinate z, Gauss–Legendre panels cover the Gaussian lumps e^{s z}φ(z) ∝
  φ(z − s) of every slope s of the piecewise-linear envelope Σ_g c_g max(0, δ_g), and are graded
  towards every tie (δ_g = 0 on the inner line; on the outer line, δ_o = 0 and the point where the
  inner conditional mean crosses −c_i v_i/2) by the tie's width.
- (RY7) any other shape (a block of three or more logits): the last difference in closed form
  given the others by the kernel (RY6b), the others by tensor Gauss–Hermite (less accurate;
  docs/theory.md, §16 gives the measured error).

Derivatives: a `jax.custom_jvp` by the heat equation (G3), ∂/∂μ E[f] = E[∇f] and
∂/∂Σ E[f] = ½ E[∇²f], evaluated on the same nodes, so no derivative goes through the factorisation
or the placement of the nodes (eq. (RY8)); the coefficients are not differentiated.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._expectations import gaussian_rule
from ._integrals import tensor_gauss_hermite
from ._linalg import rank_rtol


class _Rule(NamedTuple):
    """Resolution of the line rule (RY6) and the 1-D kernel (RY6b).

    Panels end at each lump centre + `lump`, at each tie + width · `tie`, inside the union of the
    lumps' ± _REACH windows, with `order` Gauss–Legendre nodes per panel; the kernel uses
    `kernel` nodes per window of ± `reach` standard deviations.
    """

    lump: tuple[float, ...]
    tie: tuple[float, ...]
    order: int
    kernel: int
    reach: float


_REACH = 8.5
# Measured against an independent scipy reference on 27 realistic and 12 generic cases
# (benchmarks/renyi_kernel.py): "accurate" ≤ 2e-9 on log E (realistic cases), "fast" ≤ 5e-6 at a
# third of the nodes.
RULES = {
    "accurate": _Rule(
        (-8.5, -5.5, -3.5, -2.0, -0.75, 0.75, 2.0, 3.5, 5.5, 8.5),
        (-27.0, -9.0, -3.0, -1.0, 0.0, 1.0, 3.0, 9.0, 27.0),
        6,
        32,
        7.0,
    ),
    "fast": _Rule((-8.5, -4.0, 0.0, 4.0, 8.5), (-16.0, -2.5, 0.0, 2.5, 16.0), 6, 20, 5.5),
}


@functools.cache
def _legendre(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(k)


def _line(centers: Array, ties: Array, widths: Array, rule: _Rule) -> tuple[Array, Array]:
    """Nodes z (P,) and log-weights (P,) for E over z ~ N(0, 1) on one line (RY6)."""
    dtype = centers.dtype
    lo, hi = jnp.min(centers) - _REACH, jnp.max(centers) + _REACH
    lump = jnp.asarray(rule.lump, dtype)
    tie = jnp.asarray(rule.tie, dtype)
    ends = jnp.concatenate(
        [(centers[:, None] + lump).ravel(), (ties[:, None] + widths[:, None] * tie).ravel()]
    )
    ends = jnp.sort(jnp.clip(ends, lo, hi))
    mid, half = 0.5 * (ends[1:] + ends[:-1]), 0.5 * (ends[1:] - ends[:-1])
    t, w = (jnp.asarray(a, dtype) for a in _legendre(rule.order))
    z = (mid[:, None] + half[:, None] * t).ravel()
    log_w = jnp.log((half[:, None] * w).ravel()) - 0.5 * z * z - 0.5 * math.log(2.0 * math.pi)
    return z, log_w


def _safe_sqrt(v: Array) -> Array:
    return jnp.sqrt(jnp.maximum(v, jnp.finfo(v.dtype).tiny))


# The 1-D kernel (RY6b): E[(1 + e^Y)^κ σ(Y)^j], j = 0, 1, 2, Y ~ N(m, v): the envelope
# e^{κ max(Y, 0)} (plus 1{Y < 0} for j = 0) in closed form, and the remainders, which decay like
# e^{−|y|}, by Gauss–Legendre on the part of each of the two Gaussian lumps (centres −m and m + κv
# in |y|) inside [0, _Y_MAX] within ± `reach` standard deviations (a rule's setting).
_Y_MAX = 36.0


def _log_ndtr(t: Array) -> Array:
    return jax.scipy.special.log_ndtr(t)


def _kernel_window(c: Array, v: Array, log_scale: Array, reach: float):
    """The window [lo, hi] of ∫_0^Y φ_v(y − c) g(y) dy, and the log of the density's scale.

    The window is the part of c ± L√v inside [0, Y]; when c < 0 it starts at 0 and ends where the
    Gaussian tail has fallen by e^{−L²/2} from its value at 0.
    """
    sd = jnp.sqrt(v)
    reach2 = reach * reach * v
    tail = reach2 / (jnp.abs(c) + jnp.sqrt(c * c + reach2))
    lo = jnp.clip(c - reach * sd, 0.0, _Y_MAX)
    hi = jnp.clip(jnp.where(c >= 0, c + reach * sd, tail), lo, _Y_MAX)
    return 0.5 * (hi + lo), 0.5 * (hi - lo), log_scale - 0.5 * jnp.log(2.0 * math.pi * v)


def _power_moments(m: Array, v: Array, kappa: Array, n: int, reach: float):
    """(s, ĝ0, ĝ1, ĝ2) with E[(1 + e^Y)^κ σ(Y)^j] = e^s ĝ_j, Y ~ N(m, v) (eq. (RY6b)).

    `m` may be an array (one Y per entry, sharing v and κ); the n nodes of each window are a
    `fori_loop`, so no per-node array is materialised.
    """
    zero = v <= jnp.finfo(v.dtype).tiny
    v = jnp.where(zero, 1.0, v)
    sd = jnp.sqrt(v)
    t = m / sd
    lg = kappa * m + 0.5 * kappa * kappa * v  # log E[e^{κY}]
    left = _log_ndtr(-t)  # log P(Y < 0)
    right = lg + _log_ndtr(t + kappa * sd)  # log E[e^{κY} 1{Y > 0}]
    s = jnp.maximum(left, right)
    cl, cr = -m, m + kappa * v  # Y = −y < 0: density φ_v(y + m); Y = y > 0, tilted by e^{κy}
    mid_l, half_l, ls_l = _kernel_window(cl, v, -s, reach)
    mid_r, half_r, ls_r = _kernel_window(cr, v, lg - s, reach)
    nodes, weights = _legendre(n)
    nodes = jnp.asarray(nodes, m.dtype)
    weights = jnp.asarray(weights, m.dtype)
    inv2v = 0.5 / v

    def node(i, acc):
        # Per node: e = e^{−y}, A = (1 + e)^κ and σ(∓y) = (e or 1)/(1 + e); the remainders are
        # absolute contributions, so A − 1 needs no expm1.
        yl = mid_l + half_l * nodes[i]
        yr = mid_r + half_r * nodes[i]
        wl = half_l * weights[i] * jnp.exp(ls_l - (yl - cl) ** 2 * inv2v)
        wr = half_r * weights[i] * jnp.exp(ls_r - (yr - cr) ** 2 * inv2v)
        el, er = jnp.exp(-yl), jnp.exp(-yr)
        # log(1 + e), not log1p: the absolute error of A − 1 stays ~κ·eps, and XLA CPU
        # vectorises log (its float64 log1p is a scalar call).
        al, ar = jnp.exp(kappa * jnp.log(1.0 + el)), jnp.exp(kappa * jnp.log(1.0 + er))
        sl, sr = el / (1.0 + el), 1.0 / (1.0 + er)
        # Y < 0 (|Y| = y): (1 + e^{−y})^κ σ(−y)^j, minus the envelope 1 for j = 0;
        # Y > 0: e^{κy} [(1 + e^{−y})^κ σ(y)^j − 1].
        a0, a1, a2 = acc
        return (
            a0 + wl * (al - 1.0) + wr * (ar - 1.0),
            a1 + wl * al * sl + wr * (ar * sr - 1.0),
            a2 + wl * al * sl * sl + wr * (ar * sr * sr - 1.0),
        )

    zeros = jnp.zeros_like(m)
    r0, r1, r2 = jax.lax.fori_loop(0, n, node, (zeros, zeros, zeros))
    env_r = jnp.exp(right - s)
    g0 = jnp.exp(left - s) + env_r + r0
    g1 = env_r + r1
    g2 = env_r + r2
    # v = 0: (1 + e^m)^κ σ(m)^j exactly.
    sig = jax.nn.sigmoid(m)
    s = jnp.where(zero, kappa * jnp.logaddexp(0.0, m), s)
    g0 = jnp.where(zero, 1.0, g0)
    g1 = jnp.where(zero, sig, g1)
    g2 = jnp.where(zero, sig * sig, g2)
    return s, g0, g1, g2


def _moments_1(delta: Array, S: Array, c: Array, rule: _Rule):
    """(log E'[G], E_f[σ], E_f[σσᵀ]) for one difference (r = 1): the kernel (RY6b) alone."""
    s, g0, g1, g2 = _power_moments(delta[0], S[0, 0], c[0], rule.kernel, rule.reach)
    return s + jnp.log(g0), (g1 / g0)[None], (g2 / g0)[None, None]


def _moments_2(delta: Array, S: Array, c: Array, rule: _Rule):
    """(log E'[G], E_f[σ], E_f[σσᵀ]) for two differences in separate blocks (r = 2, RY6):
    the outer coordinate by the graded line rule, the inner one by the kernel (RY6b)."""
    dtype = delta.dtype
    swap = S[1, 1] > S[0, 0]
    delta = jnp.where(swap, delta[::-1], delta)
    S = jnp.where(swap, S[::-1, ::-1], S)
    c = jnp.where(swap, c[::-1], c)
    co, ci = c[0], c[1]
    so = _safe_sqrt(S[0, 0])
    b = jnp.where(S[0, 0] > 0, S[0, 1] / so, 0.0)
    vc = jnp.maximum(S[1, 1] - b * b, 0.0)
    tiny = jnp.sqrt(jnp.finfo(dtype).tiny)
    b_safe = jnp.where(jnp.abs(b) > tiny, b, tiny)
    zero = jnp.zeros((), dtype)
    centers = jnp.stack([zero, co * so, ci * b, co * so + ci * b])
    ties = jnp.stack([-delta[0] / so, (-0.5 * ci * vc - delta[1]) / b_safe])
    widths = jnp.stack([1.0 / so, jnp.sqrt(1.0 + vc) / jnp.abs(b_safe)])
    z, log_w = _line(centers, ties, widths, rule)
    o = delta[0] + so * z
    s, g0, g1, g2 = _power_moments(delta[1] + b * z, vc, ci, rule.kernel, rule.reach)
    log_p = log_w + co * jnp.logaddexp(0.0, o) + s + jnp.log(g0)
    log_z = jax.nn.logsumexp(log_p)
    p = jnp.exp(log_p - log_z)
    so_, si1, si2 = jax.nn.sigmoid(o), g1 / g0, g2 / g0
    m1 = jnp.stack([p @ so_, p @ si1])
    cross = p @ (so_ * si1)
    m2 = jnp.array([[p @ (so_ * so_), cross], [cross, p @ si2]])
    m1 = jnp.where(swap, m1[::-1], m1)
    m2 = jnp.where(swap, m2[::-1, ::-1], m2)
    return log_z, m1, m2


def _structure(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index maps: the reference logit of each block, each difference's block and logit."""
    starts = np.cumsum((0,) + sizes[:-1])
    ref = starts
    block = np.concatenate([np.full(n - 1, g, int) for g, n in enumerate(sizes)]).astype(int)
    logit = np.concatenate([starts[g] + np.arange(1, n) for g, n in enumerate(sizes)]).astype(int)
    return ref, block, logit


def _tilted(mean, cov, coefs, sizes):
    """The tilt (RY5): (λᵀμ + λᵀΣλ/2, the mean and covariance of δ under the tilted law, D)."""
    ref, block, logit = _structure(sizes)
    n = mean.shape[0]
    lam = jnp.zeros((n,), mean.dtype).at[ref].set(coefs)
    sig_lam = cov @ lam
    tilt = jnp.dot(lam, mean) + 0.5 * jnp.dot(lam, sig_lam)
    D = np.zeros((len(logit), n))
    D[np.arange(len(logit)), logit] = 1.0
    D[np.arange(len(logit)), ref[block]] -= 1.0
    D = jnp.asarray(D, mean.dtype)
    S = D @ cov @ D.T
    return tilt, D @ (mean + sig_lam), 0.5 * (S + S.T)


def _is_line_shape(sizes: tuple[int, ...]) -> bool:
    """Whether the line rule (RY6) applies: at most two blocks with a difference, each of ≤ 2."""
    return all(n <= 2 for n in sizes) and sum(n - 1 for n in sizes) <= 2


# The conditional rule (RY7) for other shapes: Gauss–Hermite nodes per dimension of the outer
# differences, by their number.
_OUTER_GH = {1: 64, 2: 32, 3: 16, 4: 8}


def _outer_rule(dim: int) -> tuple[np.ndarray, np.ndarray]:
    if dim == 0:
        return np.zeros((1, 0)), np.ones(1)
    if dim in _OUTER_GH:
        return tensor_gauss_hermite(dim, _OUTER_GH[dim])
    return gaussian_rule(dim)


def _conditional_moments(delta, S, coefs, sizes, rule: _Rule):
    """(log E'[G], E_f[π], E_f[ππᵀ]) for any block shape (RY7): the last difference in closed
    form given the others by the kernel (RY6b), the others by tensor Gauss–Hermite."""
    ref, block, logit = _structure(sizes)
    r, n = len(logit), sum(sizes)
    dtype = delta.dtype
    g_last = int(block[-1])
    # The others' differences δ_1 = δ[:-1] = μ_1 + A z (principal axes; the rank rule (RK1)) and
    # t = δ[-1] | z ~ N(μ_t + b·z, v).
    S11 = S[:-1, :-1]
    lam, V = jnp.linalg.eigh(S11)
    scale = jnp.maximum(jnp.max(jnp.diag(S)), jnp.finfo(dtype).tiny)
    active = lam > rank_rtol(max(r - 1, 1), dtype) * scale
    root = jnp.sqrt(jnp.where(active, lam, 1.0))
    b = jnp.where(active, (S[-1, :-1] @ V) / root, 0.0)
    A = V * jnp.where(active, root, 0.0)
    v = jnp.maximum(S[-1, -1] - jnp.sum(b * b), 0.0)
    z, w = (jnp.asarray(a, dtype) for a in _outer_rule(r - 1))
    x = delta[:-1] + z @ A.T  # (P, r − 1)
    t_mean = delta[-1] + z @ b
    P = x.shape[0]
    full = jnp.concatenate([x, jnp.zeros((P, 1), dtype)], axis=1)  # δ with t = 0 for now
    lses, pis, start = [], [], 0
    for g, n_g in enumerate(sizes):
        logits = jnp.concatenate(
            [jnp.zeros((P, 1), dtype), full[:, start : start + n_g - 1]], axis=1
        )
        if g == g_last:
            logits = logits[:, :-1]  # the block without t: LSE and softmax of the rest
        lses.append(jax.nn.logsumexp(logits, axis=1))
        pis.append(jax.nn.softmax(logits, axis=1))
        start += n_g - 1
    # (G5): LSE(rest, t) = L + softplus(t − L); E over t of (1 + e^{t − L})^c σ^j by (RY6b).
    L = lses[g_last]
    s, g0, g1, g2 = _power_moments(t_mean - L, v, coefs[g_last], rule.kernel, rule.reach)
    log_p = jnp.log(w) + jnp.stack(lses, axis=1) @ coefs + s + jnp.log(g0)
    log_z = jax.nn.logsumexp(log_p)
    p = jnp.exp(log_p - log_z)
    s1, s2 = g1 / g0, g2 / g0
    rho = pis[g_last]
    pis[g_last] = jnp.concatenate([(1.0 - s1)[:, None] * rho, s1[:, None]], axis=1)
    u = jnp.concatenate(pis, axis=1)  # E[π | z], (P, n)
    lo = int(ref[g_last])
    wv = jnp.zeros((P, n), dtype)
    wv = wv.at[:, lo : lo + sizes[g_last] - 1].set(rho).at[:, lo + sizes[g_last] - 1].set(-1.0)
    e_pipi = jnp.einsum("p,pi,pj->ij", p, u, u) + jnp.einsum(
        "p,pi,pj->ij", p * (s2 - s1 * s1), wv, wv
    )
    return log_z, p @ u, e_pipi


def _moments(mean, cov, coefs, sizes, rule_name):
    """log E[f] and the f-weighted E_f[π], E_f[ππᵀ] of the per-block softmax π (n and n × n)."""
    tilt, delta, S = _tilted(mean, cov, coefs, sizes)
    rule = RULES[rule_name]
    ref, block, logit = _structure(sizes)
    r = len(logit)
    n = mean.shape[0]
    if not _is_line_shape(sizes):
        log_z, e_pi, e_pipi = _conditional_moments(delta, S, coefs, sizes, rule)
        return tilt + log_z, e_pi, e_pipi
    if r == 0:
        log_z, m1, m2 = jnp.zeros((), mean.dtype), jnp.zeros((0,)), jnp.zeros((0, 0))
    elif r == 1:
        log_z, m1, m2 = _moments_1(delta, S, coefs[block], rule)
    else:
        log_z, m1, m2 = _moments_2(delta, S, coefs[block], rule)
    # π = P0 + P1 σ: the reference logit of a two-logit block is 1 − σ, the other σ.
    P0 = np.ones(n)
    P1 = np.zeros((n, r))
    for b, (g, k) in enumerate(zip(block, logit)):
        P1[ref[g], b], P1[k, b], P0[k] = -1.0, 1.0, 0.0
    P0, P1 = jnp.asarray(P0, mean.dtype), jnp.asarray(P1, mean.dtype)
    e_pi = P0 + P1 @ m1
    outer = jnp.outer(P0, P1 @ m1)
    e_pipi = jnp.outer(P0, P0) + outer + outer.T + P1 @ m2 @ P1.T
    return tilt + log_z, e_pi, e_pipi


def _c_of(coefs, sizes):
    return jnp.concatenate([jnp.full((n_g,), coefs[g]) for g, n_g in enumerate(sizes)])


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _log_expected(mean, cov, coefs, sizes, rule):
    return _moments(mean, cov, coefs, sizes, rule)[0]


@_log_expected.defjvp
def _log_expected_jvp(sizes, rule, primals, tangents):
    # (G3) with f = e^{log f}: d log E = E_f[∇ log f]·dμ + ½ ⟨dΣ, E_f[∇log f ∇log fᵀ + ∇² log f]⟩,
    # ∇ log f = c ∘ π and ∇² log f = blockdiag_g c_g (diag π_g − π_g π_gᵀ). The coefficients are
    # not differentiated (`log_expected_exp_lse` stops their gradient).
    mean, cov, coefs = primals
    dmean, dcov, _ = tangents
    dcov = 0.5 * (dcov + dcov.T)
    out, e_pi, e_pipi = _moments(mean, cov, coefs, sizes, rule)
    c = _c_of(coefs, sizes)
    ref = _structure(sizes)[0]
    same = np.zeros((len(c), len(c)), bool)
    for g, n_g in enumerate(sizes):
        same[ref[g] : ref[g] + n_g, ref[g] : ref[g] + n_g] = True
    e_aa = e_pipi * c[:, None] * c[None, :]
    hess = jnp.diag(e_pi * c) - jnp.where(same, e_pipi * c[:, None], 0.0)
    return out, jnp.dot(e_pi * c, dmean) + 0.5 * jnp.sum(dcov * (e_aa + hess))


def log_expected_exp_lse(
    mean: Float[Array, " n"],
    cov: Float[Array, "n n"],
    coefs: Float[ArrayLike, " g"],
    sizes: tuple[int, ...],
    *,
    rule: str = "accurate",
) -> Float[Array, ""]:
    """log E[exp(Σ_g c_g LSE(ℓ_g))] for ℓ ~ N(mean, cov), ℓ the concatenation of blocks ℓ_g
    (docs/theory.md, §16, eqs. (RY5)–(RY7)).

    Exact derivatives in `mean` and `cov` by the heat equation on the same rule; `cov` may be
    singular. The coefficients are not differentiated (their gradient is stopped). Accurate
    (RY6) for at most two blocks of at most two logits each; otherwise the legacy rule (RY7).

    **Arguments:**

    - `mean`: the mean of ℓ, shape (n,), n = Σ sizes.
    - `cov`: its covariance (n, n), positive semi-definite.
    - `coefs`: one coefficient per block, shape (len(sizes),).
    - `sizes`: the block sizes, a tuple of positive Python ints.
    - `rule`: "accurate" (default; measured ≤ 1e-9 absolute on log E) or "fast" (≤ 1e-4, about
      a third of the cost; for sweeps), see `RULES` and docs/theory.md §16.

    **Returns:** a scalar.

    **Example:**
    ```python
    log_expected_exp_lse(jnp.zeros(4), jnp.eye(4), jnp.array([0.5, -0.5]), (2, 2))
    ```
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {', '.join(RULES)}, got {rule!r}.")
    sizes = tuple(int(s) for s in sizes)
    if any(s < 1 for s in sizes) or sum(sizes) != jnp.shape(mean)[0]:
        raise ValueError(f"`sizes` {sizes} must be positive and sum to len(mean).")
    mean = jnp.asarray(mean)
    coefs = jax.lax.stop_gradient(jnp.asarray(coefs, mean.dtype))
    return _log_expected(mean, jnp.asarray(cov, mean.dtype), coefs, sizes, rule)
