"""The full d-dimensional gradient flow dθ/dt = −Λ ∇_θ F(θ; β(t)) (docs/theory.md, eq. (D1))."""

import equinox as eqx
from jaxtyping import Array, Float

from .._annealing._schedules import AbstractSchedule
from .._estimators._estimators import AbstractEstimator, ExactEstimator
from .._mixtures import GaussianMixture, IsotropicMixture
from .._objective import ReverseKL, objective
from .._summary import GramState, Trajectory, record
from ._rates import LearningRates
from ._solve import SolverOptions, integrate


def full_vector_field(t, y, args, step_index=None):
    """The full flow's right-hand side (eq. (D1)): dθ/dt = −Λ ∇_θ F(θ; β(t)) for
    θ = `y` = (means, logits, log_scale).

    **Arguments:**

    - `t`: the time; `y`: the parameters θ.
    - `args`: `(target, schedule, estimator, rates)`.
    - `step_index`: the integer Euler step, for the SGD estimators (None otherwise).

    **Returns:** (ṁ, ȧ, (log s)˙), the same structure as `y`.

    **Example:**
    ```python
    full_vector_field(0.0, (M, a, log_s), (p, NoAnnealing(), ExactEstimator(), LearningRates()))
    ```
    """
    target, schedule, estimator, rates = args
    beta = schedule(t)

    # The estimator's own route to ∇_θ F (chunked and memory-lean for the particle estimators).
    family = IsotropicMixture(*y)
    grads = estimator.value_and_grad(family, target, beta, t, step_index)[1]
    g_means, g_logits, g_log_scale = grads
    dlog_s = rates.log_scale_rate(g_log_scale, schedule, t)
    return (-rates.means * g_means, -rates.weights * g_logits, dlog_s)


def _sgd_vector_field(t, y, args):
    # The fixed-step Euler route passes its integer step counter along (`StepCountingEuler`):
    # step n of an SGD estimator draws the particles of fold_in(key, n) (issue 11, fault 7).
    args, step_index = args
    return full_vector_field(t, y, args, step_index)


def _full_save(t, y, args):
    target, schedule, estimator, _ = args
    family = IsotropicMixture(*y)
    divergence = getattr(estimator, "divergence", ReverseKL())
    if isinstance(divergence, ReverseKL):
        value = objective(family, target, schedule(t))
    else:
        value = divergence(family, target, schedule(t))
    return record(GramState.from_models(family, target), value)


@eqx.filter_jit
def solve_full(
    family: IsotropicMixture,
    target: GaussianMixture,
    schedule: AbstractSchedule,
    ts: Float[Array, " t"],
    *,
    rates: LearningRates = LearningRates(),
    estimator: AbstractEstimator = ExactEstimator(),
    options: SolverOptions = SolverOptions(),
) -> Trajectory:
    """Integrate the full d-dimensional gradient flow (eq. (D1)) with diffrax.

    **Arguments:**

    - `family`: the initial variational mixture q_θ(0).
    - `target`: the target p.
    - `schedule`: the annealing schedule β(t).
    - `ts`: increasing save times; the solve runs over [ts[0], ts[-1]].
    - `rates`: the per-group learning rates Λ.
    - `estimator`: the gradient route: `ExactEstimator()` (default), `FixedParticles`, or
      `FreshParticles` (which switches the solver to fixed-step Euler, i.e. SGD).
    - `options`: solver, tolerances, max steps, progress bar.

    **Returns:** a `Trajectory` of the summary statistics at `ts`; `final` is the final
    `IsotropicMixture`. Failures are returned, not raised: see `Trajectory.failure`.

    **Example:**
    ```python
    traj = solve_full(q0, p, LinearSchedule(0.2, 20.0), jnp.linspace(0, 40, 41))
    traj.R.shape  # (41, K, J)
    ```
    """
    y0 = (family.means, family.logits, family.log_scale)
    return integrate(
        full_vector_field if estimator.fixed_step is None else _sgd_vector_field,
        y0,
        (target, schedule, estimator, rates),
        ts,
        options,
        _full_save,
        fixed_step=estimator.fixed_step,
        breakpoints=schedule.breakpoints,
        final=lambda y: IsotropicMixture(*y),
    )
