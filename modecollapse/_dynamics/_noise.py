"""The second-order (SGD-noise) correction to the theory for `mc-fresh` (docs/theory.md, §12).

With fresh particles at every Euler step η (eq. (E3)), the means move by η ĝ_k with ĝ_k =
−η_m ∇_{m_k} F̂ unbiased but noisy. Averaged over the noise, Q gains η E[ĝ_k · ĝ_l] per unit time
beyond the mean-field terms; its noise part is η C_kl with C_kl = tr Cov(ĝ_k, ĝ_l) (eq. (N1)).
C is computed exactly (up to quadrature) from the summary statistics by embedding the means in
R^(K+J) (eqs. (N2)–(N5)); its O(d/n) part has the closed form (N4). The cost does not depend on d.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._annealing._schedules import AbstractSchedule
from .._numerics._dtypes import as_float
from .._numerics._expectations import expected_softmax_stats, gaussian_rule
from .._numerics._integrals import tensor_gauss_hermite
from .._numerics._linalg import sqrt_psd
from .._summary import GramState, TargetStatistics, Trajectory
from ._rates import LearningRates
from ._solve import SolverOptions, integrate
from ._theory import TheoryStatic, theory_save, theory_vector_field

# Gauss–Hermite nodes per dimension of the tensor rule over the embedding R^P (eq. (N5)); for
# P ≥ 6 the symmetrised Halton rule of eq. (G4) is used instead.
_EMBED_NODES = {1: 48, 2: 48, 3: 20, 4: 12, 5: 7}


@functools.cache
def _embedding_rule(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (N, dim) and weights (N,) for E[f(u)], u ~ N(0, I_dim) (eq. (N5))."""
    if dim not in _EMBED_NODES:
        return gaussian_rule(dim)
    return tensor_gauss_hermite(dim, _EMBED_NODES[dim])


def _particle_gradients(u: Array, aux):
    """Per-particle gradients φ_·c(u) = ∇_M [w_c h(m_c + s u)] in the embedding (eq. (N2)).

    Returns φ, shape (C, K, P) (C = K source components), and the Gram products φ_kc · φ_lc,
    shape (C, K, K).
    """
    M, U, log_w, log_s, log_rho, sigma, beta = aux
    s2 = jnp.exp(2 * log_s)
    s = jnp.sqrt(s2)
    sig2 = sigma**2
    w = jnp.exp(log_w)

    def h(means, c):
        # h = log q − β log p at the reparameterised particle (eqs. (M1), (E1)); θ enters twice:
        # through x = m_c + s u and through log q itself. M-independent constants are dropped.
        x = means[c] + s * u
        lq = jax.nn.logsumexp(log_w + (means @ x - 0.5 * jnp.sum(means**2, -1)) / s2)
        lp = jax.nn.logsumexp(log_rho + (U @ x - 0.5 * jnp.sum(U**2, -1)) / sig2)
        xx = jnp.dot(x, x)
        return w[c] * (lq - 0.5 * xx / s2 - beta * (lp - 0.5 * xx / sig2))

    sources = jnp.arange(M.shape[0])
    phi = jax.vmap(jax.grad(h), (None, 0))(M, sources)
    return phi, jnp.einsum("ckp,clp->ckl", phi, phi)


@eqx.filter_jit
def gradient_noise_trace(
    state: GramState,
    target: TargetStatistics,
    beta: ArrayLike,
    dim: ArrayLike,
    particles: ArrayLike,
    *,
    exact: bool = True,
    nodes: int | None = None,
) -> Float[Array, "k k"]:
    """tr Cov(∇_{m_k} F̂, ∇_{m_l} F̂) of the `mc-*` estimator with n particles (eqs. (N2)–(N5)).

    F̂ is the reparameterised estimate (E1), differentiated in full (θ inside log q included), as
    `jax.grad` of `mc_objective` does.

    **Arguments:**

    - `state`: the summary statistics (R, Q, logits, log s).
    - `target`: T, log ρ, σ.
    - `beta`: inverse temperature β.
    - `dim`: d.
    - `particles`: n, the particles per component.
    - `exact`: if True (default), the full trace (N5); if False, only its O(d/n) part d·(N4)/n.
    - `nodes`: Gauss–Hermite nodes per dimension for the responsibility statistics (K ≥ 3).

    **Returns:** the (K, K) matrix of traces (not multiplied by any learning rate).

    **Example:**
    ```python
    C = gradient_noise_trace(GramState.from_models(q, p), TargetStatistics.from_target(p),
                             1.0, q.dim, 16)
    C.shape  # (K, K)
    ```
    """
    R, Q, T = state.R, state.Q, target.T
    K, J = R.shape
    dtype = R.dtype
    beta, dim, particles = (as_float(x, like=R) for x in (beta, dim, particles))
    s2 = jnp.exp(2 * state.log_scale)
    sig2 = target.scale**2
    log_w = jax.nn.log_softmax(state.logits)
    w = jnp.exp(log_w)
    coef = 1.0 / s2 - beta / sig2
    eye = jnp.eye(K, dtype=dtype)

    # O(d) part: the coefficient of z along directions orthogonal to span{m, μ} (eqs. (N3), (N4)).
    _, e_q, o_q = jax.vmap(expected_softmax_stats, (0, None, None))(*state.logit_law(), nodes)
    w2 = w**2
    bulk = s2 * (
        eye * w2[:, None] * coef**2
        - coef * (w2[:, None] * e_q + (w2[:, None] * e_q).T) / s2
        + jnp.einsum("c,ckl->kl", w2, o_q) / s2**2
    )
    if not exact:
        return jnp.asarray(dim * bulk / particles)

    # The rest: the same estimator in the embedding R^P, P = K + J, of span{m, μ} (eqs. (N2), (N5)).
    P = K + J
    gram = jnp.block([[Q, R], [R.T, T]])
    L = sqrt_psd(0.5 * (gram + gram.T))
    aux = (L[:K], L[K:], log_w, state.log_scale, target.log_weights, target.scale, beta)
    nodes_u, weights_u = _embedding_rule(P)
    phi, prod = jax.vmap(_particle_gradients, (0, None))(jnp.asarray(nodes_u, dtype), aux)
    weights_u = jnp.asarray(weights_u, dtype)
    phi, prod = jnp.tensordot(weights_u, phi, 1), jnp.tensordot(weights_u, prod, 1)
    embedded = jnp.sum(prod, 0) - jnp.einsum("ckp,clp->kl", phi, phi)
    return jnp.asarray((embedded + (dim - P) * bulk) / particles)


def sgd_noise_correction(
    state: GramState,
    target: TargetStatistics,
    beta: ArrayLike,
    rates: LearningRates,
    dim: ArrayLike,
    particles: ArrayLike,
    step: ArrayLike,
) -> GramState:
    """The SGD-noise term to add to the theory right-hand side for `mc-fresh` (eq. (N1)).

    dQ/dt gains η η_m² tr Cov(∇_{m_k} F̂, ∇_{m_l} F̂); R, the logits and log s get no correction
    at this order (their entries are zero; see docs/theory.md, §12, "Neglected orders").

    **Arguments:**

    - `state`: the summary statistics (R, Q, logits, log s).
    - `target`: T, log ρ, σ.
    - `beta`: inverse temperature β.
    - `rates`: Λ; only η_m enters.
    - `dim`: d.
    - `particles`: n, the particles per component of `FreshParticles`.
    - `step`: η, the Euler step of `FreshParticles`.

    **Returns:** the correction, as a `GramState` of time derivatives.

    **Example:**
    ```python
    stats = TargetStatistics.from_target(p)
    state, rates = GramState.from_models(q, p), LearningRates()
    corr = sgd_noise_correction(state, stats, 1.0, rates, dim=100, particles=16, step=0.01)
    corr.Q  # η η_m² C, shape (K, K)
    ```
    """
    trace = gradient_noise_trace(state, target, beta, dim, particles)
    dQ = jnp.asarray(step) * jnp.asarray(rates.means) ** 2 * trace
    dQ = 0.5 * (dQ + dQ.T)
    return GramState(
        jnp.zeros_like(state.R), dQ, jnp.zeros_like(state.logits), jnp.zeros_like(state.log_scale)
    )


def _sgd_field(t, y, args):
    (target, schedule, rates, dim, nodes), (particles, step) = args
    drift = theory_vector_field(t, y, target, schedule, rates, dim, nodes.value)
    noise = sgd_noise_correction(y, target, schedule(t), rates, dim, particles, step)
    return jax.tree.map(jnp.add, drift, noise)


def _sgd_save(t, y, args):
    return theory_save(t, y, args[0])


@eqx.filter_jit
def solve_theory_sgd(
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    ts: Float[Array, " t"],
    *,
    dim: ArrayLike,
    rates: LearningRates = LearningRates(),
    particles: ArrayLike,
    step: ArrayLike,
    options: SolverOptions = SolverOptions(),
) -> Trajectory:
    """Integrate the theory (T1)–(T5) plus the SGD-noise correction (N1) of `mc-fresh`.

    The result approximates the seed average of `solve_full(..., estimator=FreshParticles(key,
    particles, step))`, to first order in η (docs/theory.md, §12).

    **Arguments:**

    - `state`: initial (R, Q, logits, log s).
    - `target`: the target's statistics (T, log ρ, σ).
    - `schedule`: β(t).
    - `ts`: increasing save times.
    - `dim`: d (traced: changing it does not recompile).
    - `rates`, `options`: as in `solve_theory`.
    - `particles`: n, particles per component (traced).
    - `step`: η, the SGD step (traced).

    **Returns:** a `Trajectory`; `final` is the final `GramState`.

    **Example:**
    ```python
    traj = solve_theory_sgd(GramState.from_models(q0, p), TargetStatistics.from_target(p),
                            NoAnnealing(), jnp.linspace(0, 3, 7), dim=100, particles=16, step=0.01)
    ```
    """
    dtype = state.R.dtype
    dim = jnp.asarray(dim, dtype=dtype)
    noise = (jnp.asarray(particles, dtype=dtype), jnp.asarray(step, dtype=dtype))
    static = TheoryStatic(options.quadrature, kernel=options.kernel)
    return integrate(
        _sgd_field,
        state,
        ((target, schedule, rates, dim, static), noise),
        ts,
        options,
        _sgd_save,
        breakpoints=schedule.breakpoints,
    )
