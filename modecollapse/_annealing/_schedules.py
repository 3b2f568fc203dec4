"""Annealing schedules β(t) for the tempered target p^β (docs/theory.md, eqs. (S1)–(S5)).

`AbstractSchedule` declares the two abstract members; every concrete schedule is final (it is
never subclassed and overrides no concrete method). `SCHEDULES` is the one table of schedule
kinds: the name used in experiment files → the class, whose fields are the kind's parameters.
`schedule_from_kind` is the one constructor; `make_schedule` builds a kind from the design's
coordinates (β0, τ) (eq. (A2)).

Adding a schedule is one class below and one line in `SCHEDULES` (the jax-free config keeps the
same names in `_config.ANNEALING_KINDS`; tests/test_schedules.py checks that they agree).

**Dtype.** A schedule computes in the dtype of its parameters and of `t` together, with Python
numbers weak (JAX's rule): a float32 `beta0` gives a float32 β(t), also under x64, and a schedule
of Python floats follows the dtype of `t`.
"""

import abc
import dataclasses
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


class AbstractSchedule(eqx.Module):
    """An inverse temperature β(t) that rises to 1.

    Subclasses are Equinox modules, so their parameters are pytree leaves and every schedule is
    differentiable in them (`jax.grad` of anything computed along a solve reaches `beta0`, ...).
    Concrete subclasses are final and implement exactly the two abstract members.
    """

    @abc.abstractmethod
    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        """β at time `t`, in the dtype of the parameters and `t` together."""

    @property
    @abc.abstractmethod
    def breakpoints(self) -> tuple[float, ...]:
        """Times where β(t) has a kink; the adaptive solvers step onto them exactly.

        Empty when the kink is not known statically (a parameter traced under `jit`/`vmap`/
        `grad`): the adaptive controller then resolves the kink by step rejection.
        """


def _floats(*xs: ArrayLike) -> tuple[Array, ...]:
    """`xs` as arrays of one floating dtype: their common dtype, Python numbers weak."""
    dtype = jnp.result_type(float, *xs)
    return tuple(jnp.asarray(x, dtype) for x in xs)


class NoAnnealing(AbstractSchedule):
    """β(t) = 1: plain reverse-KL VI (eq. (S1)).

    **Returns** (when called at `t`): ones in the floating dtype of `t`.

    **Example:**
    ```python
    schedule = NoAnnealing()
    schedule(3.0)  # Array(1.)
    ```
    """

    def __call__(self, t: ArrayLike) -> Float[Array, ""]:
        (t,) = _floats(t)
        return jnp.ones_like(t)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()


def _ramp(t: Array, duration: Array) -> Array:
    return jnp.clip(t / duration, 0.0, 1.0)


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
        t, beta0, duration = _floats(t, self.beta0, self.duration)
        return beta0 + (1.0 - beta0) * _ramp(t, duration)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return _static_breakpoints(self.duration)


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
        t, beta0, duration = _floats(t, self.beta0, self.duration)
        return jnp.exp((1.0 - _ramp(t, duration)) * jnp.log(beta0))

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return _static_breakpoints(self.duration)


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
        t, beta0, rate = _floats(t, self.beta0, self.rate)
        return 1.0 - (1.0 - beta0) * jnp.exp(-rate * t)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()


# The one table of schedule kinds: kind (as in `[annealing] kind`) → class. A kind's parameters
# are its class's fields (`schedule_parameters`). Add a schedule here, one line.
SCHEDULES: dict[str, type[AbstractSchedule]] = {
    "none": NoAnnealing,
    "linear": LinearSchedule,
    "geometric": GeometricSchedule,
    "exponential": ExponentialSchedule,
}

# The design's annealing time τ (eq. (A2)) in a schedule's second parameter, both ways: a
# `duration` is τ itself; the exponential schedule has no end, and its `rate` is 3/τ (95% of the
# rise by τ, 1 − e^{−3} ≈ 0.95). A kind is designable iff its parameters are (beta0, one of these).
EXP_FACTOR = 3.0
_ANNEALING_TIME: dict[str, tuple[Callable, Callable]] = {  # name: (τ → value, value → τ)
    "duration": (lambda tau: tau, lambda duration: duration),
    "rate": (lambda tau: EXP_FACTOR / tau, lambda rate: EXP_FACTOR / rate),
}


def schedule_parameters(kind: str) -> tuple[str, ...]:
    """The parameter names of schedule kind `kind`: its class's fields, in order.

    **Arguments:**

    - `kind`: a key of `SCHEDULES`.

    **Returns:** the names, e.g. `("beta0", "rate")` for "exponential".

    **Example:**
    ```python
    schedule_parameters("linear")  # ("beta0", "duration")
    ```
    """
    return tuple(f.name for f in dataclasses.fields(_schedule_class(kind)))


def _schedule_class(kind: str) -> type[AbstractSchedule]:
    if kind not in SCHEDULES:
        raise ValueError(f"`kind` must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
    return SCHEDULES[kind]


def schedule_from_kind(kind: str, parameters: Mapping[str, ArrayLike]) -> AbstractSchedule:
    """The schedule of kind `kind` with `parameters`: the one constructor from a kind name.

    **Arguments:**

    - `kind`: a key of `SCHEDULES` ("none", "linear", "geometric", "exponential").
    - `parameters`: the kind's parameters by name (`schedule_parameters(kind)`); extra names are
      refused.

    **Returns:** an `AbstractSchedule` (eqs. (S1)–(S4)).

    **Example:**
    ```python
    schedule_from_kind("exponential", {"beta0": 0.1, "rate": 0.5})
    ```
    """
    names = schedule_parameters(kind)
    given = set(parameters)
    if given != set(names):
        raise ValueError(
            f"`parameters` of a {kind!r} schedule must be {names or '()'}, got "
            f"{tuple(sorted(given)) or '()'}; pass exactly those names."
        )
    return _schedule_class(kind)(**{n: parameters[n] for n in names})


def design_kinds() -> tuple[str, ...]:
    """The kinds the design can tune in (β0, τ) (eq. (A2)): parameters (beta0, an annealing time).

    **Returns:** the kind names, in table order.

    **Example:**
    ```python
    design_kinds()  # ("linear", "geometric", "exponential")
    ```
    """
    return tuple(k for k in SCHEDULES if _design_time_name(k) is not None)


def _design_time_name(kind: str) -> str | None:
    names = schedule_parameters(kind)
    if len(names) == 2 and names[0] == "beta0" and names[1] in _ANNEALING_TIME:
        return names[1]
    return None


def _design_name(kind: str) -> str:
    name = _design_time_name(kind) if kind in SCHEDULES else None
    if name is None:
        raise ValueError(f"`kind` must be one of {', '.join(design_kinds())}, got {kind!r}.")
    return name


def design_parameters(kind: str, beta0: ArrayLike, duration: ArrayLike) -> dict[str, ArrayLike]:
    """The parameters of kind `kind` at the design's coordinates (β0, τ) (eq. (A2)).

    **Arguments:**

    - `kind`: one of `design_kinds()`.
    - `beta0`: β0 in (0, 1].
    - `duration`: the annealing time τ > 0 (for "exponential", rate = 3/τ: 95% of the rise by τ).

    **Returns:** `{"beta0": β0, name: value}`, ready for `schedule_from_kind`.

    **Example:**
    ```python
    design_parameters("exponential", 0.1, 30.0)  # {"beta0": 0.1, "rate": 0.1}
    ```
    """
    name = _design_name(kind)
    return {"beta0": beta0, name: _ANNEALING_TIME[name][0](duration)}


def annealing_time(kind: str, parameters: Mapping[str, ArrayLike]) -> ArrayLike:
    """The design's annealing time τ of a schedule given by kind and parameters (eq. (A2)).

    The inverse of `design_parameters`: τ = duration, or 3/rate for "exponential".

    **Arguments:**

    - `kind`: one of `design_kinds()`.
    - `parameters`: the kind's parameters by name.

    **Returns:** τ.

    **Example:**
    ```python
    annealing_time("exponential", {"beta0": 0.1, "rate": 0.1})  # 30.0
    ```
    """
    name = _design_name(kind)
    return _ANNEALING_TIME[name][1](parameters[name])


def make_schedule(kind: str, beta0: ArrayLike, duration: ArrayLike) -> AbstractSchedule:
    """The schedule of family `kind` with initial β0 and annealing time τ (eq. (A2)).

    **Arguments:**

    - `kind`: one of `design_kinds()`: "linear", "geometric" or "exponential" (rate = 3/τ: 95%
      of the rise by τ).
    - `beta0`: β0 in (0, 1].
    - `duration`: τ > 0.

    **Returns:** an `AbstractSchedule`.

    **Example:**
    ```python
    make_schedule("exponential", 0.1, 30.0)  # ExponentialSchedule(0.1, rate=0.1)
    ```
    """
    return schedule_from_kind(kind, design_parameters(kind, beta0, duration))


def _static_breakpoints(duration: ArrayLike) -> tuple[float, ...]:
    """The kink(s) at t = duration, if `duration` is concrete.

    A Python or NumPy number or a concrete JAX array gives its value(s): a batched duration gives
    every member's kink, sorted. A tracer (a schedule parameter under `jit`, `vmap` or `grad`) has
    no value at trace time: no kink is returned, and the adaptive controller resolves it by step
    rejection (correct, a few more steps). Anything else is a bug and raises.
    """
    if isinstance(duration, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return ()
    values = np.unique(np.ravel(np.asarray(duration, dtype=np.float64)))
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`duration` must be a finite number, got {duration!r}.")
    return tuple(float(v) for v in values)


def adiabatic_log_scale_rate(schedule: AbstractSchedule, t: ArrayLike) -> Float[Array, ""]:
    """d log s/dt = −½ β'(t)/β(t) for the adiabatic scale s(t)² = σ²/β(t) (eq. (S5)).

    **Arguments:**

    - `schedule`: β(t).
    - `t`: time.

    **Returns:** the rate of log s, in the dtype of β(t) (the schedule's and `t`'s together).

    **Example:**
    ```python
    adiabatic_log_scale_rate(LinearSchedule(0.2, 20.0), 5.0)  # −½ · 0.04 / 0.4
    ```
    """
    (t,) = _floats(t, *jax.tree.leaves(schedule))[:1]
    beta, dbeta = jax.jvp(schedule, (t,), (jnp.ones_like(t),))
    return -0.5 * dbeta / beta
