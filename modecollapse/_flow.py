"""The full d-dimensional gradient flow dθ/dt = −Λ ∇_θ F(θ; β(t)) (docs/theory.md, eq. (D1))."""

import equinox as eqx
from jaxtyping import Array, Float

from ._mixtures import GaussianMixture, IsotropicMixture
from ._objective import AbstractEstimator, ExactEstimator, objective
from ._particles import family_from_params
from ._schedules import AbstractSchedule, adiabatic_log_scale_rate
from ._solve import SolverOptions, integrate
from ._summary import GramState, Trajectory, record


class LearningRates(eqx.Module):
    """One rate per parameter group, Λ = diag(η_m, η_a, η_s) (eq. (D1)); a rate of 0 freezes it.

    **Arguments:**

    - `means`: η_m, the rate of the means m_k.
    - `weights`: η_a, the rate of the logits a_k (w = softmax(a)).
    - `scale`: η_s, the rate of log s. The scale force is O(d) (eq. (T5)): at large d use
      η_s ∝ 1/d or an implicit solver.
    - `adiabatic_scale`: instead of training it, let the scale follow the tempered variance,
      s(t)² = σ²/β(t) (eq. (S5)); `scale` is then ignored. Start from s(0)² = σ²/β(0).

    **Example:**
    ```python
    rates = LearningRates(means=1.0, weights=1.0, scale=0.01)
    ```
    """

    means: float | Array = 1.0
    weights: float | Array = 1.0
    scale: float | Array = 0.0
    adiabatic_scale: bool = eqx.field(static=True, default=False)

    def log_scale_rate(self, trained: Array, schedule: AbstractSchedule, t) -> Array:
        """(log s)˙: −η_s ∂F/∂log s given `trained` = ∂F/∂log s, or eq. (S5) if adiabatic."""
        if self.adiabatic_scale:
            return adiabatic_log_scale_rate(schedule, t)
        return -self.scale * trained


def _full_vector_field(t, y, args):
    means, logits, log_scale = y
    target, schedule, estimator, rates = args
    beta = schedule(t)

    # The estimator's own route to ∇_θ F (chunked and memory-lean for the particle estimators).
    family = family_from_params((means, logits, log_scale))
    _, (g_means, g_logits, g_log_scale) = estimator.value_and_grad(family, target, beta, t)
    dlog_s = rates.log_scale_rate(g_log_scale, schedule, t)
    return (-rates.means * g_means, -rates.weights * g_logits, dlog_s)


def _full_save(t, y, args):
    target, schedule, _, _ = args
    family = family_from_params(y)
    return record(GramState.from_models(family, target), objective(family, target, schedule(t)))


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
        _full_vector_field,
        y0,
        (target, schedule, estimator, rates),
        ts,
        options,
        _full_save,
        fixed_step=estimator.fixed_step,
        breakpoints=schedule.breakpoints,
        final=family_from_params,
    )
