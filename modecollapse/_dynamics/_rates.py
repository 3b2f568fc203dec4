"""Learning rates Λ = diag(η_m, η_a, η_s) of the gradient flow (docs/theory.md, eq. (D1))."""

import equinox as eqx
from jaxtyping import Array

from .._annealing._schedules import AbstractSchedule, adiabatic_log_scale_rate
from .._numerics._dtypes import as_float


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
        """(log s)˙: −η_s ∂F/∂log s given `trained` = ∂F/∂log s, or eq. (S5) if adiabatic.

        **Arguments:**

        - `trained`: ∂F/∂log s; its dtype is the dtype of the result.
        - `schedule`, `t`: β(t), for the adiabatic rate.

        **Returns:** the scalar rate, in the dtype of `trained` (float32 stays float32).

        **Example:**
        ```python
        LearningRates(scale=0.1).log_scale_rate(jnp.array(2.0), NoAnnealing(), 0.0)  # -0.2
        ```
        """
        if self.adiabatic_scale:
            return as_float(adiabatic_log_scale_rate(schedule, t), like=trained)
        return -as_float(self.scale, like=trained) * trained
