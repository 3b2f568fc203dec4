"""Annealing schedules β(t) for the tempered target p^β (docs/theory.md, eqs. (S1)–(S4))."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class AbstractSchedule(eqx.Module):
    """An inverse temperature β(t) that rises to 1.

    Subclasses are Equinox modules, so their parameters are pytree leaves and every schedule is
    differentiable in them (`jax.grad` of anything computed along a solve reaches `beta0`, ...).
    """

    @abc.abstractmethod
    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        """β at time `t`."""

    @property
    @abc.abstractmethod
    def breakpoints(self) -> tuple[float, ...]:
        """Times where β(t) has a kink; the adaptive solvers step onto them exactly."""


class NoAnnealing(AbstractSchedule):
    """β(t) = 1: plain reverse-KL VI (eq. (S1)).

    **Example:**
    ```python
    schedule = NoAnnealing()
    schedule(3.0)  # Array(1.)
    ```
    """

    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        return jnp.ones_like(jnp.asarray(t, dtype=float))

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()


def _ramp(t: ArrayLike, duration: ArrayLike) -> Array:
    return jnp.clip(jnp.asarray(t) / duration, 0.0, 1.0)


class LinearSchedule(AbstractSchedule):
    """β(t) = β0 + (1 − β0)·min(1, t/duration) (eq. (S2)).

    **Arguments:**

    - `beta0`: initial inverse temperature, in (0, 1].
    - `duration`: time at which β reaches 1, > 0.

    **Example:**
    ```python
    schedule = LinearSchedule(beta0=0.2, duration=20.0)
    schedule(10.0)  # Array(0.6)
    ```
    """

    beta0: Float[ArrayLike, ""]
    duration: Float[ArrayLike, ""]

    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        beta0 = jnp.asarray(self.beta0)
        return beta0 + (1.0 - beta0) * _ramp(t, self.duration)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return _static_breakpoint(self.duration)


class GeometricSchedule(AbstractSchedule):
    """β(t) = β0^(1 − min(1, t/duration)) (eq. (S3)): linear in log β.

    **Arguments:**

    - `beta0`: initial inverse temperature, in (0, 1].
    - `duration`: time at which β reaches 1, > 0.

    **Example:**
    ```python
    schedule = GeometricSchedule(beta0=0.01, duration=10.0)
    schedule(5.0)  # Array(0.1)
    ```
    """

    beta0: Float[ArrayLike, ""]
    duration: Float[ArrayLike, ""]

    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        return jnp.exp((1.0 - _ramp(t, self.duration)) * jnp.log(self.beta0))

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return _static_breakpoint(self.duration)


class ExponentialSchedule(AbstractSchedule):
    """β(t) = 1 − (1 − β0)·exp(−rate·t) (eq. (S4)): smooth, reaches 1 only as t → ∞.

    **Arguments:**

    - `beta0`: initial inverse temperature, in (0, 1].
    - `rate`: relaxation rate of the temperature, > 0.

    **Example:**
    ```python
    schedule = ExponentialSchedule(beta0=0.5, rate=1.0)
    schedule(0.0)  # Array(0.5)
    ```
    """

    beta0: Float[ArrayLike, ""]
    rate: Float[ArrayLike, ""]

    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        return 1.0 - (1.0 - jnp.asarray(self.beta0)) * jnp.exp(-jnp.asarray(self.rate) * t)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()


def _static_breakpoint(duration) -> tuple[float, ...]:
    # Under tracing (e.g. differentiating w.r.t. `duration`) the kink is not known statically;
    # the adaptive controller then simply resolves it by step rejection.
    try:
        return (float(duration),)
    except Exception:
        return ()


def adiabatic_log_scale_rate(schedule: AbstractSchedule, t: ArrayLike) -> Float[Array, ""]:
    """d log s/dt = −½ β'(t)/β(t) for the adiabatic scale s(t)² = σ²/β(t) (eq. (S5)).

    **Arguments:**

    - `schedule`: β(t).
    - `t`: time.

    **Returns:** the rate of log s.

    **Example:**
    ```python
    adiabatic_log_scale_rate(LinearSchedule(0.2, 20.0), 5.0)  # −½ · 0.04 / 0.4
    ```
    """
    t = jnp.asarray(t, dtype=float)
    beta, dbeta = jax.jvp(schedule, (t,), (jnp.ones_like(t),))
    return -0.5 * dbeta / beta
