"""Differentiable annealing-schedule design (docs/theory.md, §14, eqs. (A1)–(A3)).

The design objective is J(β0, τ) = P_formula(β0, τ) + λ·τ (eq. (A1)): the sharp formula's
P(collapse) (eq. (P9)) plus a price λ per unit of annealing time τ. It is smooth in (β0, τ), and
its gradient flows through the formula's diffrax solves. `optimise_schedule` minimises it with
optax (Adam) in the unconstrained coordinates β0 = sigmoid(θ0), τ = exp(θ1) (eq. (A2)), under a
wall-clock budget; `design_experiment` then checks the optimum against the theory-ODE Monte Carlo.
"""

import dataclasses
import math
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._formula import p_collapse_formula
from ._schedules import AbstractSchedule, ExponentialSchedule, GeometricSchedule, LinearSchedule

DESIGN_KINDS = ("linear", "geometric", "exponential")
# the exponential schedule has no end: its "duration" is the time to 95% of the rise, rate = 3/τ
EXP_FACTOR = 3.0


def make_schedule(kind: str, beta0, duration) -> AbstractSchedule:
    """The schedule of family `kind` with initial β0 and annealing time τ (eq. (A2)).

    **Arguments:**

    - `kind`: "linear", "geometric" or "exponential" (rate = 3/τ: 95% of the rise by τ).
    - `beta0`: β0 in (0, 1].
    - `duration`: τ > 0.

    **Returns:** an `AbstractSchedule`.

    **Example:**
    ```python
    make_schedule("exponential", 0.1, 30.0)  # ExponentialSchedule(0.1, rate=0.1)
    ```
    """
    if kind == "linear":
        return LinearSchedule(beta0, duration)
    if kind == "geometric":
        return GeometricSchedule(beta0, duration)
    if kind == "exponential":
        return ExponentialSchedule(beta0, EXP_FACTOR / duration)
    raise ValueError(f"`kind` must be one of {DESIGN_KINDS}, got {kind!r}.")


@dataclasses.dataclass
class DesignResult:
    """The optimiser's path and optimum (eq. (A1)).

    **Fields:** `beta0`, `duration`, `objective` and `p` at the optimum (the best iterate);
    `history`, one dict (beta0, duration, objective, p) per step; `steps`, `seconds`,
    `stopped` ("steps" or "budget").
    """

    beta0: float
    duration: float
    objective: float
    p: float
    history: list[dict[str, float]]
    steps: int
    seconds: float
    stopped: str


def _unconstrained(beta0: float, duration: float) -> jax.Array:
    b = min(max(beta0, 1e-6), 1 - 1e-6)
    return jnp.array([math.log(b / (1 - b)), math.log(duration)])


def optimise_schedule(
    kind: str,
    formula: dict[str, Any],
    *,
    beta0: float,
    duration: float,
    price: float,
    steps: int = 150,
    learning_rate: float = 0.1,
    budget: float = 120.0,
    progress: bool = False,
) -> DesignResult:
    """Minimise J = P_formula + λ·τ over (β0, τ) with Adam (eqs. (A1), (A2)).

    **Arguments:**

    - `kind`: the schedule family (see `make_schedule`).
    - `formula`: the other arguments of `p_collapse_formula` (see `formula_arguments`).
    - `beta0`, `duration`: the starting point.
    - `price`: λ, the cost of one unit of annealing time.
    - `steps`: Adam steps at most; `learning_rate`: Adam's step in (logit β0, log τ).
    - `budget`: wall-clock seconds at most (the step in flight finishes).
    - `progress`: a progress bar.

    **Returns:** a `DesignResult`.

    **Example:**
    ```python
    res = optimise_schedule("linear", formula_arguments(exp), beta0=0.5, duration=10.0,
                            price=1e-3)
    ```
    """
    if kind not in DESIGN_KINDS:
        raise ValueError(f"`kind` must be one of {DESIGN_KINDS}, got {kind!r}.")

    @eqx.filter_jit
    def value_and_grad(theta):
        def objective(theta):
            b0, tau = jax.nn.sigmoid(theta[0]), jnp.exp(theta[1])
            p = p_collapse_formula(make_schedule(kind, b0, tau), **formula)
            return p + price * tau, p

        return jax.value_and_grad(objective, has_aux=True)(theta)

    opt = optax.adam(learning_rate)
    theta: jax.Array = _unconstrained(beta0, duration)
    state = opt.init(theta)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    stopped = "steps"
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="design", disable=not progress, leave=False)
    for _ in range(steps):
        (value, p), grad = value_and_grad(theta)
        history.append(
            dict(
                beta0=float(jax.nn.sigmoid(theta[0])),
                duration=float(jnp.exp(theta[1])),
                objective=float(value),
                p=float(p),
            )
        )
        bar.update()
        if not np.all(np.isfinite(np.asarray(grad))):
            stopped = "non-finite gradient"
            break
        if time.perf_counter() - start > budget:
            stopped = "budget"
            break
        updates, state = opt.update(grad, state)
        theta = jnp.asarray(optax.apply_updates(theta, updates))
    bar.close()
    best = min(history, key=lambda h: h["objective"])
    return DesignResult(
        best["beta0"],
        best["duration"],
        best["objective"],
        best["p"],
        history,
        len(history),
        time.perf_counter() - start,
        stopped,
    )
