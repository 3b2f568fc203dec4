"""The closed low-dimensional ODE on (R, Q, logits, log s) (docs/theory.md, eqs. (T1)–(T5)).

The right-hand side is the hand-derived one; it shares no code with the autodiff gradient of the
`exact` route beyond the Gaussian integrals themselves. Its cost does not depend on d.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._annealing._schedules import AbstractSchedule
from .._numerics._dtypes import as_float
from .._numerics._expectations import expected_softmax_stats
from .._objective import AbstractDivergence, ReverseKL
from .._summary import GramState, TargetStatistics, Trajectory, record
from ._rates import LearningRates
from ._refill import integrate_lanes
from ._solve import SolverOptions, integrate


def theory_vector_field(
    t: ArrayLike,
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    rates: LearningRates,
    dim: ArrayLike,
    nodes: int | None = None,
    kernel: str = "accurate",
) -> GramState:
    """d(R, Q, a, log s)/dt of the reduced flow (eqs. (T1)–(T5)).

    **Arguments:**

    - `t`: time.
    - `state`: the current summary statistics.
    - `target`: T, log ρ, σ.
    - `schedule`: β(t).
    - `rates`: Λ.
    - `dim`: d (it enters only through the scale equation).
    - `nodes`: Gauss–Hermite nodes per dimension for K or J ≥ 3 (see `gaussian_expectation`).
    - `kernel`: the rule of the 1-D kernel, "accurate" (default) or "fast" (eq. (I6)).

    **Returns:** the time derivative, as a `GramState`.

    **Example:**
    ```python
    dstate = theory_vector_field(0.0, state, TargetStatistics.from_target(p),
                                 NoAnnealing(), LearningRates(), 64)
    ```
    """
    beta = as_float(schedule(t), like=state.R)  # the state's dtype, whatever the schedule's
    dim = as_float(dim, like=state.R)
    R, Q, T = state.R, state.Q, target.T
    s2 = jnp.exp(2 * state.log_scale)
    s = jnp.sqrt(s2)
    sig2 = target.scale**2
    w = jax.nn.softmax(state.logits)
    q_sq, t_sq = jnp.diag(Q), jnp.diag(T)

    # Logit laws under x ~ N(m_k, s² I) (eq. (G1)) and their softmax statistics.
    stats = jax.vmap(functools.partial(expected_softmax_stats, kernel=kernel), (0, None, None))
    lse_q, e_q, o_q = stats(*state.logit_law(), nodes)
    lse_p, e_p, o_p = stats(*target.logit_law(state), nodes)

    # Means: ṁ_k = Σ_l A_kl m_l + Σ_j B_kj μ_j (eq. (T1)), hence eq. (T2).
    K = w.shape[0]
    A = (
        rates.means
        * w[:, None]
        * (-e_q / s2 + (1.0 / s2 - beta / sig2) * jnp.eye(K, dtype=w.dtype))
    )
    B = rates.means * w[:, None] * (beta / sig2) * e_p
    dR = A @ R + B @ T
    dQ = A @ Q + Q @ A.T + B @ R.T + R @ B.T

    # Logits: replicator form in the reduced component objectives g̃_k (eq. (T3)).
    g = -q_sq * (0.5 / s2 - 0.5 * beta / sig2) + lse_q - beta * lse_p
    da = -rates.weights * w * (g - jnp.dot(w, g))

    # Scale: Stein's lemma gives ∂F/∂s through responsibility-weighted variances (eqs. (T4), (T5)).
    v_q = e_q @ q_sq - jnp.einsum("kli,li->k", o_q, Q)
    v_p = e_p @ t_sq - jnp.einsum("kji,ji->k", o_p, T)
    dF_ds = jnp.dot(w, (v_q / s - s * dim) / s2 - beta * ((s / sig2) * v_p - s * dim) / sig2)
    return GramState(dR, dQ, da, rates.log_scale_rate(s * dF_ds, schedule, t))


def pullback_vector_field(
    t: ArrayLike,
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    rates: LearningRates,
    dim: ArrayLike,
    divergence: AbstractDivergence,
    nodes: int | None = None,
) -> GramState:
    """d(R, Q, a, log s)/dt for any rotation-invariant objective, by pulling its gradient back
    (eq. (PB1)).

    F depends on the means only through R = M Uᵀ and Q = M Mᵀ, so ∇_M F = G_R U + (G_Q + G_Qᵀ) M
    with G_R = ∂F/∂R, G_Q = ∂F/∂Q (autodiff of `divergence.gram`). Then ṁ = −η_m ∇_M F gives
    Ṙ = Ṁ Uᵀ = −η_m (G_R T + Ĝ R) and Q̇ = Ṁ Mᵀ + M Ṁᵀ with Ṁ Mᵀ = −η_m (G_R Rᵀ + Ĝ Q),
    Ĝ = G_Q + G_Qᵀ; the logits and the scale take −η ∂F/∂a and −η_s ∂F/∂log s directly. Exact: no
    step uses d beyond `dim` in the objective. For reverse KL it equals the hand-derived
    `theory_vector_field` (tests/test_divergences.py).

    **Arguments:** as `theory_vector_field`, plus `divergence`, the objective.

    **Returns:** the time derivative, as a `GramState`.

    **Example:**
    ```python
    dstate = pullback_vector_field(0.0, state, stats, NoAnnealing(), LearningRates(), 64,
                                   Renyi(0.5))
    ```
    """
    beta = as_float(schedule(t), like=state.R)

    def value(R, Q, logits, log_scale):
        return divergence.gram(GramState(R, Q, logits, log_scale), target, beta, dim, nodes)

    gR, gQ, ga, gs = jax.grad(value, argnums=(0, 1, 2, 3))(
        state.R, state.Q, state.logits, state.log_scale
    )
    G = gQ + gQ.T
    eta = as_float(rates.means, like=state.R)
    dR = -eta * (gR @ target.T + G @ state.R)
    half = -eta * (gR @ state.R.T + G @ state.Q)
    da = -as_float(rates.weights, like=state.R) * ga
    return GramState(dR, half + half.T, da, rates.log_scale_rate(gs, schedule, t))


def _theory_field(t, y, args):
    target, schedule, rates, dim, static = args
    nodes, divergence = static.value, static.divergence
    if isinstance(divergence, ReverseKL):
        return theory_vector_field(t, y, target, schedule, rates, dim, nodes, static.kernel)
    return pullback_vector_field(t, y, target, schedule, rates, dim, divergence, nodes)


def theory_save(t, y, args):
    target, schedule, _, dim, static = args
    return record(y, static.divergence.gram(y, target, schedule(t), dim, static.value))


class TheoryStatic(eqx.Module):
    value: int | None = eqx.field(static=True)
    divergence: AbstractDivergence = ReverseKL()
    kernel: str = eqx.field(static=True, default="accurate")


@eqx.filter_jit
def solve_theory(
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    ts: Float[Array, " t"],
    *,
    dim: ArrayLike,
    rates: LearningRates = LearningRates(),
    options: SolverOptions = SolverOptions(),
    divergence: AbstractDivergence = ReverseKL(),
) -> Trajectory:
    """Integrate the closed summary-statistic ODE (eqs. (T1)–(T5)) with diffrax.

    **Arguments:**

    - `state`: initial (R, Q, logits, log s), e.g. `GramState.from_models(q0, p)`.
    - `target`: the target's statistics (T, log ρ, σ).
    - `schedule`: β(t).
    - `ts`: increasing save times.
    - `dim`: d; a traced number, so changing it does not recompile.
    - `rates`, `options`: as in `solve_full`.
    - `divergence`: the objective (default reverse KL, by the hand-derived eqs. (T1)–(T5));
      any other is integrated by the pull-back of its gradient (eq. (PB1)).

    **Returns:** a `Trajectory`; `final` is the final `GramState`.

    **Example:**
    ```python
    traj = solve_theory(GramState.from_models(q0, p), TargetStatistics.from_target(p),
                        LinearSchedule(0.2, 20.0), jnp.linspace(0, 40, 41), dim=64)
    ```
    """
    return integrate(
        *_theory_problem(state, target, schedule, ts, dim, rates, options, divergence),
        breakpoints=schedule.breakpoints,
    )


def _theory_args(target, schedule, rates, dim, options, divergence):
    if options.kernel != "accurate" and not isinstance(divergence, ReverseKL):
        raise ValueError(
            f"`options.kernel` = {options.kernel!r} applies to the reverse-KL theory only; use "
            '"accurate" with other objectives.'
        )
    static = TheoryStatic(options.quadrature, divergence, options.kernel)
    return (target, schedule, rates, dim, static)


def _theory_problem(state, target, schedule, ts, dim, rates, options, divergence):
    """The positional arguments of `integrate` / `integrate_lanes` for the theory ODE."""
    dim = jnp.asarray(dim, dtype=state.R.dtype)
    args = _theory_args(target, schedule, rates, dim, options, divergence)
    return _theory_field, state, args, ts, options, theory_save


@eqx.filter_jit
def solve_theory_lanes(
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    ts: Float[Array, "n t"],
    *,
    dim: Float[ArrayLike, " n"],
    rates: LearningRates,
    options: SolverOptions = SolverOptions(),
    divergence: AbstractDivergence = ReverseKL(),
    lanes: int = 256,
) -> tuple[Trajectory, Int[Array, ""]]:
    """`solve_theory` for a batch of N trajectories, stepped by `lanes` lanes that refill
    (`integrate_lanes`; docs/theory.md, §10, "Lane refill").

    Each trajectory equals `jax.vmap(solve_theory)` of the same inputs (the same accepted steps
    where the right-hand side rounds alike, docs/theory.md §10; saved records to rounding), at
    about mean rather than max steps per trajectory. As under
    `vmap`, the schedule's parameters are traced, so its kinks are resolved by step rejection.

    **Arguments:** as `solve_theory`, every array leaf batched over a leading axis N (`dim` and
    `rates` too); `lanes`: trajectories stepped at once.

    **Returns:** `(trajectories, iterations)`: a `Trajectory` batched over N and the number of
    lock-step iterations.

    **Example:**
    ```python
    trajs, _ = solve_theory_lanes(states, stats, schedules, ts, dim=dims, rates=rates, lanes=64)
    ```
    """
    return integrate_lanes(
        *_theory_problem(state, target, schedule, ts, dim, rates, options, divergence),
        lanes=lanes,
        breakpoints=schedule.breakpoints,
    )
