"""The d → ∞ limit of the reduced flow in the extensive scaling (docs/theory.md, §11, (L1)–(L5)).

Extensive scaling: |μ_j|² = d·t_j, normalised statistics r = R/d, q = Q/d, t = T/d, and learning
rates η_m, η_a = η̃_a/d, η_s = η̃_s/d (eq. (L1)), so that means, weights and scale all move on
O(1) time. As d → ∞ the logit differences are O(d) with O(√d) spread, so every softmax
expectation becomes a hard assignment, and the theory ODE (T1)–(T5) becomes a closed ODE in which
each mean moves straight to its nearest target mode and the logits follow a replicator equation
in the normalised distances.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._annealing._schedules import AbstractSchedule
from .._numerics._dtypes import as_float, common_float
from .._summary import GramState, TargetStatistics, Trajectory, record
from ._rates import LearningRates
from ._solve import SolverOptions, integrate


def extensive_rates(rates: LearningRates, dim: ArrayLike) -> LearningRates:
    """Finite-d learning rates of the extensive scaling: (η_m, η̃_a/d, η̃_s/d) (eq. (L1)).

    **Arguments:**

    - `rates`: the O(1) rates (η_m, η̃_a, η̃_s) of the limit.
    - `dim`: d.

    **Returns:** the `LearningRates` to use at dimension d.

    **Example:**
    ```python
    extensive_rates(LearningRates(1.0, 1.0, 1.0), 1024)  # (1, 1/1024, 1/1024)
    ```
    """
    dtype = common_float(rates.means, rates.weights, rates.scale, dim)
    d = jnp.asarray(dim, dtype)
    return LearningRates(
        rates.means,
        jnp.asarray(rates.weights, dtype) / d,
        jnp.asarray(rates.scale, dtype) / d,
        rates.adiabatic_scale,
    )


def normalise(state: GramState, target: TargetStatistics, dim: ArrayLike):
    """(R/d, Q/d, a, log s) and (T/d, log ρ, σ): the normalised statistics (eq. (L1)).

    **Arguments:**

    - `state`, `target`: raw statistics at dimension d.
    - `dim`: d.

    **Returns:** `(state, target)` normalised.

    **Example:**
    ```python
    s, t = normalise(GramState.from_models(q, p), TargetStatistics.from_target(p), p.dim)
    ```
    """
    dim = as_float(dim, like=state.R)
    return (
        GramState(state.R / dim, state.Q / dim, state.logits, state.log_scale),
        TargetStatistics(target.T / dim, target.log_weights, target.scale),
    )


def _assignment(state: GramState, target: TargetStatistics) -> Array:
    # argmax_j of the normalised target logits (r_kj − t_jj/2)/σ²: the nearest mode (eq. (L2))
    score = state.R - 0.5 * jnp.diag(target.T)
    return jax.nn.one_hot(jnp.argmax(score, axis=1), target.T.shape[0], dtype=state.R.dtype)


def limit_vector_field(
    t: ArrayLike,
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    rates: LearningRates,
) -> GramState:
    """d(r, q, a, log s)/dt of the d → ∞ limit (eqs. (L2)–(L5)); `state`/`target` normalised.

    **Arguments:**

    - `t`: time.
    - `state`: normalised statistics (r, q, a, log s).
    - `target`: normalised target statistics (t = T/d, log ρ, σ).
    - `schedule`: β(t).
    - `rates`: the O(1) rates (η_m, η̃_a, η̃_s).

    **Returns:** the time derivative, as a `GramState`.

    **Example:**
    ```python
    limit_vector_field(0.0, state, target, NoAnnealing(), LearningRates(1.0, 1.0, 1.0))
    ```
    """
    beta = as_float(schedule(t), like=state.R)  # the state's dtype, whatever the schedule's
    sig2 = target.scale**2
    w = jax.nn.softmax(state.logits)
    P = _assignment(state, target)
    A = -rates.means * (beta / sig2) * jnp.diag(w)  # E^q → I (eq. (L3))
    B = rates.means * (beta / sig2) * w[:, None] * P
    r, q, T = state.R, state.Q, target.T
    dr = A @ r + B @ T
    dq = A @ q + q @ A.T + B @ r.T + r @ B.T
    dist = jnp.diag(q)[:, None] - 2 * r + jnp.diag(T)[None, :]
    G = 0.5 * beta / sig2 * jnp.min(dist, axis=1)  # replicator fitness (eq. (L4))
    da = -rates.weights * w * (G - jnp.dot(w, G))
    s2 = jnp.exp(2 * state.log_scale)
    dlog_s = rates.log_scale_rate(-(1.0 - beta * s2 / sig2), schedule, t)  # eq. (L5)
    return GramState(dr, dq, da, dlog_s)


def limit_objective(state: GramState, target: TargetStatistics, beta: ArrayLike) -> Array:
    """lim F/d: the objective per dimension in the limit (eq. (L6)).

    **Arguments:**

    - `state`, `target`: normalised statistics (r, q, a, log s) and (t, log ρ, σ).
    - `beta`: inverse temperature β.

    **Returns:** the scalar F/d, in the dtype of the state.

    **Example:**
    ```python
    state, target = normalise(GramState.from_models(q, p), TargetStatistics.from_target(p), 64)
    limit_objective(state, target, 1.0)
    ```
    """
    beta = as_float(beta, like=state.R)
    s2 = jnp.exp(2 * state.log_scale)
    sig2 = target.scale**2
    w = jax.nn.softmax(state.logits)
    q_sq = jnp.diag(state.Q)
    nearest = jnp.max(state.R - 0.5 * jnp.diag(target.T), axis=1)
    g = (
        -(q_sq + s2) * (0.5 / s2 - 0.5 * beta / sig2)
        + 0.5 * q_sq / s2
        - beta * nearest / sig2
        - 0.5 * jnp.log(2 * jnp.pi * s2)
        + 0.5 * beta * jnp.log(2 * jnp.pi * sig2)
    )
    return jnp.dot(w, g)


def _field(t, y, args):
    return limit_vector_field(t, y, *args)


def _save(t, y, args):
    target, schedule, _ = args
    return record(y, limit_objective(y, target, schedule(t)))


@eqx.filter_jit
def solve_limit(
    state: GramState,
    target: TargetStatistics,
    schedule: AbstractSchedule,
    ts: Float[Array, " t"],
    *,
    rates: LearningRates = LearningRates(),
    options: SolverOptions = SolverOptions(),
) -> Trajectory:
    """Integrate the d → ∞ limit ODE (eqs. (L2)–(L5)) in normalised statistics.

    **Arguments:**

    - `state`: initial normalised statistics, e.g. from `normalise`.
    - `target`: normalised target statistics.
    - `schedule`: β(t).
    - `ts`: save times.
    - `rates`: the O(1) rates (η_m, η̃_a, η̃_s) of the extensive scaling.
    - `options`: solver options.

    **Returns:** a `Trajectory` whose `R`, `Q` are normalised (R/d, Q/d) and whose `objective`
    is F/d.

    **Example:**
    ```python
    s, t = normalise(GramState.from_models(q, p), TargetStatistics.from_target(p), p.dim)
    traj = solve_limit(s, t, NoAnnealing(), jnp.linspace(0, 10, 11))
    ```
    """
    return integrate(
        _field,
        state,
        (target, schedule, rates),
        ts,
        options,
        _save,
        breakpoints=schedule.breakpoints,
    )
