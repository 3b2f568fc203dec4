"""Memory-lean particle estimates of F and ∇_θ F through projections (docs/theory.md, §4b).

For isotropic mixtures every term of h(x) = log q(x) − β log p(x) at x = m_k + s z needs only the
projections z·m_l, z·μ_j and |z|² − d (eqs. (E4), (E5)); the particles are regenerated from their
key in chunks accumulated with `lax.scan` (eq. (E6)), so nothing of size K·n·d is ever stored.
For fresh particles, `projected_value_and_grad` draws the same estimate from its exact law
through the projections alone (eqs. (E8)–(E10)), without drawing the n·K particles in R^d.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._mixtures import GaussianMixture
from .._numerics._linalg import psd_factor

# Default chunk: at most this many noise numbers (K · chunk · d) per chunk, 64 MiB in float64.
CHUNK_NUMBERS = 2**23

Params = tuple[Float[Array, "k d"], Float[Array, " k"], Float[Array, ""]]


def default_chunk(n: int, components: int, dim: int) -> int:
    """Particles per chunk when none is given: K · chunk · d ≤ `CHUNK_NUMBERS`, 1 ≤ chunk ≤ n."""
    return max(1, min(n, CHUNK_NUMBERS // max(1, components * dim)))


def chunk_noise(
    key: PRNGKeyArray, start: ArrayLike, count: int, components: int, dim: int, dtype
) -> Float[Array, "c k d"]:
    """Particles `start … start + count − 1` of the particle estimators (eq. (E4)), all K
    components at once: particle i is drawn from `fold_in(key, i)`, so the particle set does not
    depend on the chunk size.

    **Arguments:**

    - `key`: the particle key; `start`: the first particle's index (traced is fine);
      `count`: how many; `components`, `dim`: K and d; `dtype`: the float dtype.

    **Returns:** z of shape (count, K, d).

    **Example:**
    ```python
    z = chunk_noise(jr.key(0), 16, 16, 2, 1000, jnp.float32)  # particles 16..31
    ```
    """
    index = jnp.asarray(start).astype(jnp.int32) + jnp.arange(count, dtype=jnp.int32)
    return jax.vmap(lambda i: jr.normal(jr.fold_in(key, i), (components, dim), dtype))(index)


def particle_noise(
    key: PRNGKeyArray, n: int, components: int, dim: int, dtype=None
) -> Float[Array, "k n d"]:
    """The standard normal draws z_ki of the particle estimators, materialised (for small problems).

    Particle i of every component comes from `fold_in(key, i)`, which is what `FixedParticles`
    and `FreshParticles` regenerate chunk by chunk; `mc_objective` on this array equals their
    estimate (eq. (E1)).

    **Arguments:**

    - `key`: the particle key (for `FreshParticles`, `fold_in(key, step index)`).
    - `n`: particles per component.
    - `components`, `dim`: K and d.
    - `dtype`: floating dtype (default: the default float dtype).

    **Returns:** z of shape (K, n, d).

    **Example:**
    ```python
    z = particle_noise(jr.key(0), 1024, 2, 3)
    mc_objective(q, p, 1.0, z)  # == FixedParticles(jr.key(0), 1024).objective(q, p, 1.0, 0.0)
    ```
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.swapaxes(chunk_noise(key, 0, n, components, dim, dtype), 0, 1)


def _distances(means: Float[Array, "k d"], target_means: Float[Array, "j d"]):
    # D_kl = |m_k − m_l|², E_kj = |m_k − μ_j|² from differences (no cancellation at large |m|).
    D = jnp.sum((means[:, None, :] - means[None, :, :]) ** 2, axis=-1)
    E = jnp.sum((means[:, None, :] - target_means[None, :, :]) ** 2, axis=-1)
    return D, E


def _chunk_value(
    Pm: Float[Array, "c k k"],
    Pu: Float[Array, "c k j"],
    rho: Float[Array, "c k"],
    D: Float[Array, "k k"],
    E: Float[Array, "k j"],
    logits: Float[Array, " k"],
    log_scale: Float[Array, ""],
    mask: Float[Array, " c"],
    target: GaussianMixture,
    beta: ArrayLike,
    n: int,
) -> Float[Array, ""]:
    """(1/n) Σ_i mask_i Σ_k w_k h̃_ik with h̃ the particle-dependent part of h (eqs. (E4)–(E5))."""
    s = jnp.exp(log_scale)
    s2 = s * s
    sig2 = target.scale**2
    log_w = jax.nn.log_softmax(logits)
    Pkk = jnp.diagonal(Pm, axis1=1, axis2=2)  # z_ik·m_k
    # (E4): log q(x) + |z|²/2 + (d/2) log(2π s²)
    lq = jax.nn.logsumexp(log_w - 0.5 * D / s2 - (Pkk[..., None] - Pm) / s, axis=-1)
    # (E5): log p(x) + s²|z|²/(2σ²) + (d/2) log(2π σ²)
    lp = jax.nn.logsumexp(
        target.log_weights - 0.5 * E / sig2 - s * (Pkk[..., None] - Pu) / sig2, axis=-1
    )
    c1 = 0.5 * (beta * s2 / sig2 - 1)
    h = lq - beta * lp + c1 * rho
    return jnp.sum(mask * (h @ jnp.exp(log_w))) / n


def _constant_term(log_scale: Float[Array, ""], target: GaussianMixture, beta, dim: int):
    # The deterministic part d·c0 of h (eq. (E5)): the |z|² = d + ρ split puts its mean here.
    s2 = jnp.exp(2 * log_scale)
    sig2 = target.scale**2
    c1 = 0.5 * (beta * s2 / sig2 - 1)
    return dim * (
        c1 - 0.5 * math.log(2 * math.pi) - log_scale + 0.5 * beta * jnp.log(2 * math.pi * sig2)
    )


def _chunk_inputs(key, c, chunk, n, params, target, dtype):
    means = params[0]
    K, d = means.shape
    z = chunk_noise(key, c * chunk, chunk, K, d, dtype)  # (chunk, K, d)
    W = jnp.concatenate([means, target.means])  # (K + J, d)
    # The one matmul of (E6): (chunk·K) × d by d × (K + J).
    proj = jnp.einsum("ckd,ld->ckl", z, W)
    rho = jnp.sum(z * z - 1, axis=-1)  # |z|² − d, summed without the cancellation of |z|² − d
    mask = (c * chunk + jnp.arange(chunk) < n).astype(dtype)
    return z, proj[..., :K], proj[..., K:], rho, mask


# The small function of the projections, differentiated in (Pm, D, E, logits, log_scale).
_small_value_and_grad = jax.value_and_grad(_chunk_value, argnums=(0, 3, 4, 5, 6))


def _assemble(value, gm, gDE, ga, gs, pull_DE, log_scale, target, beta, d):
    """Add the deterministic d·c0 (E5) and pull the D, E cotangents back to the means."""
    (gm_DE,) = pull_DE(gDE)
    const, gs_const = jax.value_and_grad(_constant_term)(log_scale, target, beta, d)
    return value + const, (gm + gm_DE, ga, gs + gs_const)


def _cast(target: GaussianMixture, beta: ArrayLike, dtype):
    # One dtype throughout: the family's (float32 or float64).
    return jax.tree.map(lambda x: x.astype(dtype), target), jnp.asarray(beta, dtype)


def _n_chunks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def particle_objective(
    params: Params,
    target: GaussianMixture,
    beta: ArrayLike,
    key: PRNGKeyArray,
    n: int,
    chunk: int | None = None,
) -> Float[Array, ""]:
    """F̂ of eq. (E1) on the particles of `particle_noise(key, n, K, d)`, in chunks (eq. (E6)).

    Differentiable: the chunk body is rematerialised (`jax.checkpoint`), so `jax.grad` does not
    store the particles either. `particle_value_and_grad` is the faster route to the gradient.

    **Arguments:**

    - `params`: θ = (means (K, d), logits (K,), log_scale ()).
    - `target`: the target p.
    - `beta`: inverse temperature β.
    - `key`: the particle key.
    - `n`: particles per component.
    - `chunk`: particles per chunk (default: `default_chunk`).

    **Returns:** the scalar estimate, equal to `mc_objective(q, p, β, particle_noise(...))`.

    **Example:**
    ```python
    params = (q.means, q.logits, q.log_scale)
    particle_objective(params, p, 1.0, jr.key(0), 4096, chunk=256)  # ≈ objective(q, p)
    ```
    """
    means, logits, log_scale = params
    K, d = means.shape
    dtype = means.dtype
    chunk = default_chunk(n, K, d) if chunk is None else min(chunk, n)
    target, beta = _cast(target, beta, dtype)
    D, E = _distances(means, target.means)

    @jax.checkpoint
    def body(total, c):
        _, Pm, Pu, rho, mask = _chunk_inputs(key, c, chunk, n, params, target, dtype)
        value = _chunk_value(Pm, Pu, rho, D, E, logits, log_scale, mask, target, beta, n)
        return total + value, None

    zero = jnp.zeros((), dtype)
    total, _ = jax.lax.scan(body, zero, jnp.arange(_n_chunks(n, chunk)))
    return total + _constant_term(log_scale, target, beta, d)


def particle_value_and_grad(
    params: Params,
    target: GaussianMixture,
    beta: ArrayLike,
    key: PRNGKeyArray,
    n: int,
    chunk: int | None = None,
) -> tuple[Float[Array, ""], Params]:
    """F̂ (eq. (E1)) and ∇_θ F̂ (eq. (E2)), each chunk's value and gradient summed in a `lax.scan`.

    Each chunk draws its particles once, forms the projections with one matmul, differentiates the
    small function of the projections (eqs. (E4), (E5)) and pulls the projection cotangent back to
    the means with a second matmul (eq. (E7)). Peak memory is O(chunk · K · d), whatever n.

    **Arguments:** as `particle_objective`.

    **Returns:** `(value, (grad_means, grad_logits, grad_log_scale))`, equal to
    `jax.value_and_grad` of `mc_objective` on `particle_noise(key, n, K, d)`.

    **Example:**
    ```python
    value, (gm, ga, gs) = particle_value_and_grad(params, p, 1.0, jr.key(0), 4096, chunk=256)
    gm.shape  # (K, d)
    ```
    """
    means, logits, log_scale = params
    K, d = means.shape
    dtype = means.dtype
    chunk = default_chunk(n, K, d) if chunk is None else min(chunk, n)
    target, beta = _cast(target, beta, dtype)
    (D, E), pull_DE = jax.vjp(lambda m: _distances(m, target.means), means)

    def body(acc, c):
        z, Pm, Pu, rho, mask = _chunk_inputs(key, c, chunk, n, params, target, dtype)
        value, (gPm, gD, gE, ga, gs) = _small_value_and_grad(
            Pm, Pu, rho, D, E, logits, log_scale, mask, target, beta, n
        )
        # (E7): ∂/∂m_l of Σ_ik (z_ik·m_l) terms = Σ_ik gPm_ikl z_ik.
        gm = jnp.einsum("ckl,ckd->ld", gPm, z)
        update = (value, gm, gD, gE, ga, gs)
        return jax.tree.map(jnp.add, acc, update), None

    acc0 = jax.tree.map(jnp.zeros_like, (jnp.zeros((), dtype), means, D, E, logits, log_scale))
    (value, gm, gD, gE, ga, gs), _ = jax.lax.scan(body, acc0, jnp.arange(_n_chunks(n, chunk)))
    return _assemble(value, gm, (gD, gE), ga, gs, pull_DE, log_scale, target, beta, d)


def _span_basis(W: Float[Array, "p d"]):
    """Orthonormal basis B (d, p) of the row span of W from its Gram, with zero columns for null
    directions; the coordinates C = W B (p, p); the validity mask (p,). Eq. (E8)."""
    C, lam, V, valid = psd_factor(W @ W.T)  # C = W B = V Λ^½ on the valid columns
    lam = jnp.where(valid, lam, 1.0)
    B = (W.T @ V) * jnp.where(valid, jax.lax.rsqrt(lam), 0.0)
    return B, C, valid.astype(W.dtype)


def _centred_chi2(key: PRNGKeyArray, df: Float[Array, " k"]) -> Float[Array, " k"]:
    """χ²(df) − df for each entry (0 where df = 0), from the gamma law of χ²/2."""
    alpha = jnp.maximum(0.5 * df, 0.5)
    x = jr.gamma(key, alpha, dtype=df.dtype)
    return jnp.where(df > 0, 2 * (x - alpha), 0.0)


def projected_value_and_grad(
    params: Params,
    target: GaussianMixture,
    beta: ArrayLike,
    key: PRNGKeyArray,
    n: int,
) -> tuple[Float[Array, ""], Params]:
    """F̂ and ∇_θ F̂ of n fresh particles per component, drawn from their exact joint law (E8)–(E10).

    Every term of the particle estimate needs a particle z only through its coordinates a in
    span{m_k, μ_j} (dimension r ≤ K + J) and through two sums over the orthogonal parts z⊥: the
    pull-back Σ_i C_k[i, l] z⊥_ik and the norms Σ_i |z⊥_ik|². Given a, these are drawn exactly:
    with C_k = Q_k R_k (thin QR, q = min(n, K) rows), the pull-back is R_kᵀ V_k for q Gaussian
    vectors V_k in the orthogonal complement, and the norms are |V_k|² plus an independent
    χ²((n − q)(d − r)). The cost is O(K·(K+J)·d + n·K·(K+J)²) instead of O(n·K·d), and the pair
    (value, gradient) has exactly the law of `particle_value_and_grad` on fresh particles (not
    the same numbers: the random variables are drawn in a different order).

    **Arguments:**

    - `params`: θ = (means (K, d), logits (K,), log_scale ()).
    - `target`: the target p.
    - `beta`: inverse temperature β.
    - `key`: the key of this draw (one per SGD step).
    - `n`: particles per component.

    **Returns:** `(value, (grad_means, grad_logits, grad_log_scale))`.

    **Example:**
    ```python
    params = (q.means, q.logits, q.log_scale)
    value, grads = projected_value_and_grad(params, p, 1.0, jr.key(0), 4096)  # any d, fast
    ```
    """
    means, logits, log_scale = params
    K, d = means.shape
    dtype = means.dtype
    target, beta = _cast(target, beta, dtype)
    W = jnp.concatenate([means, target.means])  # (P, d), P = K + J
    P = W.shape[0]
    B, C, valid = _span_basis(W)
    r = jnp.sum(valid)
    k_a, k_v, k_chi = jr.split(key, 3)
    # (E8): the coordinates of the particles in the span, and their projections on every m, μ.
    a = jr.normal(k_a, (n, K, P), dtype) * valid
    proj = a @ C.T  # (n, K, P): z_ik·w_l
    rho_par = jnp.sum(a * a - valid, axis=-1)  # Σ_valid (a² − 1)
    # (E10): the orthogonal parts, q = min(n, K) Gaussian vectors per component, and the rest of
    # their squared norm, χ²((n − q)(d − r)) centred on its mean.
    q = min(n, K)
    Vt = jr.normal(k_v, (K, q, d), dtype)
    Vt = Vt - (Vt @ B) @ B.T  # project the rows on the orthogonal complement of span{m, μ}
    df = jnp.full((K,), (n - q) * (d - r), dtype)
    rho_perp = jnp.sum(Vt * Vt, axis=(1, 2)) - q * (d - r) + _centred_chi2(k_chi, df)  # (K,)
    # Only Σ_i ρ_ik enters (linearly), so the orthogonal part is spread evenly over i.
    rho = rho_par + rho_perp[None, :] / n
    (D, E), pull_DE = jax.vjp(lambda m: _distances(m, target.means), means)
    mask = jnp.ones((n,), dtype)
    value, (gPm, gD, gE, ga, gs) = _small_value_and_grad(
        proj[..., :K], proj[..., K:], rho, D, E, logits, log_scale, mask, target, beta, n
    )
    # (E9): ∇_{m_l} = Σ_ik gPm_ikl (B a_ik + z⊥_ik); the second sum is R_kᵀ V_k (E10).
    gm_par = jnp.einsum("ikl,ikp->lp", gPm, a) @ B.T  # (K, d)
    R = jax.vmap(lambda c: jnp.linalg.qr(c, mode="r"))(jnp.swapaxes(gPm, 0, 1))  # (K, q, K)
    gm_perp = jnp.einsum("kql,kqd->ld", R, Vt)
    return _assemble(value, gm_par + gm_perp, (gD, gE), ga, gs, pull_DE, log_scale, target, beta, d)
