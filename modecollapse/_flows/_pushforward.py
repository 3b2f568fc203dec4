"""The push-forward limitation: a TV lower bound for L-Lipschitz maps of N(0, I), and Lipschitz
estimates of a trained flow (docs/theory.md, §15, eqs. (PF1)–(PF9)).

For q = g#N(0, I_d) with g L-Lipschitz and a target p with two separated mode neighbourhoods A, B
(dist(A, B) ≥ δ, masses a = p(A), b = p(B)), Gaussian isoperimetry gives (PF1)
Φ⁻¹(q(A)) + Φ⁻¹(q(B)) + δ/L ≤ 0, hence the bound (PF3) on TV(q, p). For isotropic Gaussian
mixtures, A and B are half-spaces orthogonal to μ_i − μ_j, whose masses are exact (PF4).
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri
from jaxtyping import Array, ArrayLike, Float

from .._metrics import wilson_interval
from .._mixtures import GaussianMixture
from .._numerics._dtypes import as_float, common_float
from ._realnvp import RealNVP


def pushforward_tv_bound(
    mass_a: ArrayLike,
    mass_b: ArrayLike,
    separation: ArrayLike,
    lipschitz: ArrayLike,
    outside: ArrayLike = 0.0,
) -> Float[Array, "*batch"]:
    """Lower bound on TV(g#N(0, I), p) for an L-Lipschitz g (eq. (PF3)).

    TV ≥ max(0, min(b' − Φ(−δ/L − Φ⁻¹(a')), a' − Φ(−δ/L − Φ⁻¹(b')))), with a' = a − η,
    b' = b − η and η = `outside`: the base mass outside the region where g is L-Lipschitz (0 for a
    globally Lipschitz g; see (PF8)).

    **Arguments:**

    - `mass_a`, `mass_b`: target masses a = p(A), b = p(B) of two sets at distance ≥ δ.
    - `separation`: δ ≥ 0.
    - `lipschitz`: L > 0.
    - `outside`: η ≥ 0 (default 0).

    **Returns:** the bound, broadcast over the arguments, in [0, min(a, b)].

    **Example:**
    ```python
    pushforward_tv_bound(0.45, 0.45, 4.0, 1.0)  # ≈ 0.43: a 1-Lipschitz map cannot split N(0, 1)
    pushforward_tv_bound(0.45, 0.45, 4.0, 1e3)  # ≈ 0: a steep map can
    ```
    """
    dtype = common_float(mass_a, mass_b, separation, lipschitz, outside)
    outside = jnp.asarray(outside, dtype)
    a = jnp.clip(jnp.asarray(mass_a, dtype) - outside, 0.0, 1.0)
    b = jnp.clip(jnp.asarray(mass_b, dtype) - outside, 0.0, 1.0)
    lipschitz = jnp.asarray(lipschitz, dtype)
    lipschitz = eqx.error_if(lipschitz, jnp.any(lipschitz <= 0), "`lipschitz` must be > 0.")
    r = jnp.asarray(separation, dtype) / lipschitz
    # the two corners of the feasible set {Φ⁻¹α + Φ⁻¹β ≤ −r, α ≤ a, β ≤ b}  (eq. (PF2))
    corner_a = b - ndtr(-r - ndtri(a))
    corner_b = a - ndtr(-r - ndtri(b))
    return jnp.maximum(0.0, jnp.minimum(corner_a, corner_b))


def _pair_geometry(target: GaussianMixture, i: int, j: int):
    diff = target.means[i] - target.means[j]
    dist = jnp.linalg.norm(diff)
    e = diff / dist
    mid = 0.5 * (target.means[i] + target.means[j])
    return e, mid, dist


def halfspace_masses(
    target: GaussianMixture, separation: ArrayLike, pair: tuple[int, int] = (0, 1)
) -> tuple[Array, Array]:
    """Exact target masses of A = {u ≥ δ/2}, B = {u ≤ −δ/2}, u = (x − m)·e (eq. (PF4)).

    e = (μ_i − μ_j)/|μ_i − μ_j| and m = (μ_i + μ_j)/2; dist(A, B) = δ. Under p, u is a 1-D mixture
    Σ_k ρ_k N((μ_k − m)·e, σ²).

    **Arguments:**

    - `target`: the mixture p.
    - `separation`: δ ≥ 0 (any shape).
    - `pair`: the two modes (i, j).

    **Returns:** `(a, b)`, each of the shape of `separation`.

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[3.0, 0.0], [-3.0, 0.0]]), jnp.array([0.5, 0.5]))
    halfspace_masses(p, 2.0)  # (≈ 0.489, ≈ 0.489)
    ```
    """
    e, mid, _ = _pair_geometry(target, *pair)
    c = (target.means - mid) @ e
    h = 0.5 * as_float(separation, like=target.means)[..., None]
    w, s = target.weights, target.scale
    a = jnp.sum(w * ndtr((c - h) / s), axis=-1)
    b = jnp.sum(w * ndtr((-c - h) / s), axis=-1)
    return a, b


def _separations(target: GaussianMixture, pair, n: int) -> Array:
    _, _, dist = _pair_geometry(target, *pair)
    return jnp.linspace(0.0, dist + 6 * target.scale, n + 1)[1:]


def mixture_tv_bound(
    target: GaussianMixture, lipschitz: ArrayLike, outside: ArrayLike = 0.0, n_delta: int = 256
) -> Float[Array, "*batch"]:
    """The best bound (PF3) over half-space pairs (PF4): maximised over δ and over mode pairs.

    **Arguments:**

    - `target`: a mixture with J ≥ 2 modes.
    - `lipschitz`: L > 0, any shape.
    - `outside`: η of (PF3) (default 0).
    - `n_delta`: grid size of δ ∈ (0, |μ_i − μ_j| + 6σ].

    **Returns:** TV lower bound, shape of `lipschitz`.

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[3.0, 0.0], [-3.0, 0.0]]), jnp.array([0.5, 0.5]))
    mixture_tv_bound(p, jnp.array([1.0, 10.0, 100.0]))  # decreasing in L
    ```
    """
    L = as_float(lipschitz, like=target.means)
    best = jnp.zeros_like(L)
    for pair in itertools.combinations(range(target.n_components), 2):
        deltas = _separations(target, pair, n_delta)
        a, b = halfspace_masses(target, deltas, pair)
        bound = pushforward_tv_bound(a, b, deltas, L[..., None], outside)
        best = jnp.maximum(best, jnp.max(bound, axis=-1))
    return best


_bound_jit = eqx.filter_jit(mixture_tv_bound)


def tv_threshold(
    target: GaussianMixture, tv: float, outside: float = 0.0, n_delta: int = 256
) -> float:
    """L*(ε) = inf{L : bound(L) ≤ ε}: any push-forward with TV(q, p) ≤ ε has L ≥ L*(ε) (eq. (PF5)).

    **Arguments:**

    - `target`: the mixture p.
    - `tv`: ε ≥ 0.
    - `outside`, `n_delta`: as in `mixture_tv_bound`.

    **Returns:** L*(ε), from nested log grids (relative resolution ~1e-7; 0 when even
    L = 1e-4 satisfies it, inf beyond 1e10).

    **Example:**
    ```python
    tv_threshold(p, 0.05)  # the smallest Lipschitz constant compatible with TV ≤ 0.05
    ```
    """
    # a log grid of L brackets L*, a second grid of the same size inside the bracket refines it
    grid = jnp.logspace(-4.0, 10.0, 1401)
    bounds = np.asarray(_bound_jit(target, grid, outside, n_delta))
    if bounds[0] <= tv:
        return 0.0
    for _ in range(2):
        above = np.nonzero(bounds > tv)[0]
        if above[-1] == len(grid) - 1:
            return float("inf")
        lo, hi = float(grid[above[-1]]), float(grid[above[-1] + 1])
        grid = jnp.logspace(np.log10(lo), np.log10(hi), 1401)
        bounds = np.asarray(_bound_jit(target, grid, outside, n_delta))
    return float(grid[np.nonzero(bounds <= tv)[0][0]])


def required_lipschitz(
    x: Float[Array, "n d"], target: GaussianMixture, n_delta: int = 256
) -> Float[Array, ""]:
    """L needed by any g#N(0, I) with the half-space masses of the samples x (eq. (PF6)).

    L ≥ δ/(−Φ⁻¹(q(A_δ)) − Φ⁻¹(q(B_δ))) by (PF1), maximised over δ and mode pairs. q(·) are the
    lower ends of Wilson 95% intervals (C7) of the sample fractions, so sampling noise errs on the
    side of a smaller requirement (an empty side gives 0, not a spurious large value).

    **Arguments:**

    - `x`: samples of q, shape (n, d).
    - `target`: the mixture p (defines the half-spaces).
    - `n_delta`: δ grid size.

    **Returns:** the required Lipschitz constant (0 if q has no mass on one side).

    **Example:**
    ```python
    required_lipschitz(flow.sample(jr.key(0), (4096,)), p)
    ```
    """
    n = x.shape[0]
    best = jnp.zeros((), x.dtype)
    for pair in itertools.combinations(range(target.n_components), 2):
        e, mid, _ = _pair_geometry(target, *pair)
        u = (x - mid) @ e
        deltas = _separations(target, pair, n_delta)
        qa = wilson_interval(jnp.sum(u[None, :] >= deltas[:, None] / 2, axis=1), n)[0]
        qb = wilson_interval(jnp.sum(u[None, :] <= -deltas[:, None] / 2, axis=1), n)[0]
        denom = -ndtri(qa) - ndtri(qb)
        best = jnp.maximum(best, jnp.max(jnp.where(denom > 0, deltas / denom, 0.0)))
    return best


def _spectral_norm(m: Array) -> Array:
    return jnp.linalg.svd(m, compute_uv=False)[0]


def lipschitz_lower(
    flow: RealNVP,
    z: Float[Array, "n d"],
    target: GaussianMixture,
    segment_points: int = 16,
    points: int | None = None,
) -> Float[Array, ""]:
    """A lower estimate of Lip(g) (eq. (PF7)); every term is a true lower bound.

    The max of ‖∂g(z)‖₂ over base points, over `segment_points` points of each base segment
    [g⁻¹(μ_i), g⁻¹(μ_j)] between mode pre-images, and the chord ratios
    |μ_i − μ_j|/|g⁻¹(μ_i) − g⁻¹(μ_j)|. With `points`, the Jacobian is taken only at the `points`
    base points whose images lie closest to a mid-plane between two modes, where a flow that
    covers both must stretch the most.

    **Arguments:**

    - `flow`: an unbatched RealNVP.
    - `z`: base points, shape (n, d).
    - `target`: the mixture p (its means).
    - `segment_points`: points per segment.
    - `points`: how many of `z` to take (default: all).

    **Returns:** the estimate, a scalar.

    **Example:**
    ```python
    lipschitz_lower(flow, jr.normal(jr.key(0), (512, 2)), p, points=32)
    ```
    """
    if points is not None and points < z.shape[0]:
        x = jax.vmap(lambda v: flow.transform_and_log_det(v)[0])(z)
        gap = jnp.full(z.shape[:1], jnp.inf, z.dtype)
        for i, j in itertools.combinations(range(target.n_components), 2):
            e, mid, _ = _pair_geometry(target, i, j)
            gap = jnp.minimum(gap, jnp.abs((x - mid.astype(z.dtype)) @ e.astype(z.dtype)))
        z = z[jnp.argsort(gap)[:points]]
    jac = jax.jacfwd(lambda v: flow.transform_and_log_det(v)[0])
    means = target.means.astype(z.dtype)  # the flow's dtype throughout
    pre = jax.vmap(lambda m: flow.inverse_and_log_det(m)[0])(means)
    pts = [z]
    chords = []
    s = jnp.linspace(0.0, 1.0, segment_points, dtype=z.dtype)[:, None]
    for i, j in itertools.combinations(range(target.n_components), 2):
        pts.append((1 - s) * pre[i] + s * pre[j])
        gap = jnp.linalg.norm(pre[i] - pre[j])
        chords.append(jnp.linalg.norm(means[i] - means[j]) / gap)
    norms = jax.vmap(lambda v: _spectral_norm(jac(v)))(jnp.concatenate(pts))
    return jnp.maximum(jnp.max(norms), jnp.max(jnp.stack(chords)))


def _mlp_lipschitz(mlp: eqx.nn.MLP, rows: slice) -> Array:
    # Lip(MLP output rows) ≤ ‖W_L[rows]‖₂ Π_{l<L} ‖W_l‖₂ for a 1-Lipschitz activation  (eq. (PF8))
    out = _spectral_norm(mlp.layers[-1].weight[rows])
    for layer in mlp.layers[:-1]:
        out = out * _spectral_norm(layer.weight)
    return out


def lipschitz_upper(flow: RealNVP, radius: ArrayLike) -> Float[Array, ""]:
    """Layer-wise upper bound on Lip(g) over the base ball |z| ≤ R (eq. (PF8)).

    An affine coupling is not globally Lipschitz (the term u·e^ℓ ∂ℓ/∂c grows with |u|), so each
    layer's bound holds on a ball of input radius R_l, propagated as
    R_{l+1} = √(R_l² + (e^S R_l + |t(0)| + Lip(t) R_l)²), with S = min(b, |ℓ(0)|_∞ + Lip(ℓ) R_l)
    bounding the log-scale on the ball. Per layer, ‖∂f‖ ≤ e^S + R_l e^S Lip(ℓ) + Lip(t); the
    product bounds ‖∂g‖ on the ball, which is convex, so g is Lipschitz there with this constant.
    Needs a 1-Lipschitz activation (tanh, relu).

    **Arguments:**

    - `flow`: an unbatched RealNVP.
    - `radius`: R of the base ball.

    **Returns:** the bound, a scalar.

    **Example:**
    ```python
    lipschitz_upper(flow, 6.0)
    ```
    """
    R = as_float(radius, like=flow.layers[0].conditioner.layers[0].weight)  # the flow's dtype
    total = jnp.ones_like(R)
    for layer in flow.layers:
        n_trans = layer.split_sizes()[1]
        mlp = layer.conditioner
        lip_t = _mlp_lipschitz(mlp, slice(0, n_trans))
        lip_l = _mlp_lipschitz(mlp, slice(n_trans, 2 * n_trans))
        h0 = mlp(jnp.zeros(layer.split_sizes()[0], mlp.layers[0].weight.dtype))
        t0 = jnp.linalg.norm(h0[:n_trans])
        b = layer.scale_bound
        l0 = jnp.max(jnp.abs(b * jnp.tanh(h0[n_trans:] / b)))
        # |ℓ(c)| ≤ min(b, |ℓ(0)|_∞ + Lip(ℓ) R)  (NF2)
        eb = jnp.exp(jnp.minimum(b, l0 + lip_l * R))
        total = total * (eb + R * eb * lip_l + lip_t)
        R = jnp.sqrt(R**2 + (eb * R + t0 + lip_t * R) ** 2)
    return total


def tv_estimate(log_q: Float[Array, " n"], log_p: Float[Array, " n"]) -> Float[Array, ""]:
    """TV(q, p) = E_q[(1 − p/q)₊] from samples x ~ q with exact log q, log p (eq. (PF9)).

    **Arguments:**

    - `log_q`, `log_p`: normalised log densities at the samples, shape (n,).

    **Returns:** the unbiased estimate, a scalar in [0, 1].

    **Example:**
    ```python
    x, log_q = flow.sample_and_log_prob(jr.key(0), (4096,))
    tv_estimate(log_q, p.log_prob(x))
    ```
    """
    return jnp.mean(jnp.maximum(0.0, -jnp.expm1(log_p - log_q)))
