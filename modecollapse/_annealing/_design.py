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
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._formula import FormulaSetting, p_collapse_formula
from ._schedules import design_kinds, make_schedule


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
    formula: FormulaSetting | Mapping[str, Any],
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

    - `kind`: the schedule family, one of `design_kinds()` (see `make_schedule`).
    - `formula`: the `FormulaSetting` (see `formula_arguments`), or its fields as a dict. Outside
      the formula's regime it warns once with `FormulaRegimeWarning` (`formula_regime`).
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
    if kind not in design_kinds():
        raise ValueError(f"`kind` must be one of {', '.join(design_kinds())}, got {kind!r}.")
    setting = formula if isinstance(formula, FormulaSetting) else FormulaSetting(**formula)

    @eqx.filter_jit
    def value_and_grad(theta):
        def objective(theta):
            b0, tau = jax.nn.sigmoid(theta[0]), jnp.exp(theta[1])
            # warns (at trace time, once) if `setting` is outside the formula's regime
            p = p_collapse_formula(make_schedule(kind, b0, tau), setting)
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
        # optax's Adam mixes its int32 step count with Python floats (bias correction), which
        # strict dtype promotion refuses; only this third-party call runs under "standard".
        with jax.numpy_dtype_promotion("standard"):
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
