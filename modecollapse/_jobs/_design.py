"""`modecollapse design`: optimise an annealing schedule (eq. (A1)), then check it by simulation.

docs/theory.md, §14. The library half (the objective and its optimiser) is `_annealing._design`.
"""

import time
from typing import Any

import numpy as np

from .._annealing._design import DESIGN_KINDS, EXP_FACTOR, make_schedule, optimise_schedule
from .._annealing._formula import p_collapse_formula
from .._experiments._config import ConfigError, Experiment


def formula_arguments(exp: Experiment) -> dict[str, Any]:
    """The arguments of `p_collapse_formula` for an experiment, or a one-line `ConfigError`.

    The formula covers K = J = 2, an antipodal target, random initialisation with equal initial
    weights, and an adiabatic (or frozen, rate 0) scale.

    **Arguments:**

    - `exp`: a parsed experiment.

    **Returns:** keyword arguments for `p_collapse_formula` (all but the schedule).

    **Example:**
    ```python
    kwargs = formula_arguments(load_experiment(None))
    ```
    """
    t, v, a = exp.target, exp.variational, exp.annealing
    if t.means["kind"] != "antipodal":
        raise ConfigError("`target.means.kind`: the collapse formula needs an antipodal target.")
    if v.components != 2:
        raise ConfigError("`variational.components`: the collapse formula needs 2 components.")
    if v.init["kind"] != "random":
        raise ConfigError("`variational.init.kind`: the collapse formula needs random init.")
    if abs(v.weights[0] - v.weights[1]) > 1e-12:
        raise ConfigError("`variational.weights`: the collapse formula needs equal weights.")
    if a.scale == "adiabatic":
        coupling: dict[str, Any] = {"scale_coupling": "adiabatic"}
    elif v.learning_rates["scale"] == 0.0:
        coupling = {"scale_coupling": "frozen", "variational_scale": v.scale}
    else:
        # a trained scale relaxes to σ²/β(t) (up to O(1/d)): the formula's adiabatic case
        coupling = {"scale_coupling": "adiabatic"}
    return dict(
        target_norm=t.means["norm"],
        weight=t.weights[0],
        scale=t.scale,
        init_norm=v.init["norm"],
        dim=exp.dim,
        t_end=exp.t_end,
        rate=v.learning_rates["means"],
        **coupling,
    )


DEFAULT_DESIGN_TOML = """\
# modecollapse built-in design experiment: two antipodal modes |μ| = 5 with weights ½, ½, two
# components started at random with norm 3 in d = 1000, adiabatic scale; the optimiser starts
# from a linear schedule with β0 = 0.5 and duration 10.
dim = 1000
t_end = 300.0
save_points = 2
seed = 0

[target]
weights = [0.5, 0.5]
scale = 1.0
means = { kind = "antipodal", norm = 5.0 }

[variational]
components = 2
weights = [0.5, 0.5]
scale = 1.0
init = { kind = "random", norm = 3.0 }
learning_rates = { means = 1.0, weights = 1.0, scale = 0.0 }

[annealing]
kind = "linear"
beta0 = 0.5
duration = 10.0
scale = "adiabatic"

[simulation]
full = false
estimator = "exact"
rtol = 1e-6
atol = 1e-8
"""


def _plain(node: Any) -> Any:
    """An experiment's dict without None entries (absent optional keys), for re-parsing."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if v is not None}
    if isinstance(node, tuple | list):
        return [_plain(v) for v in node]
    return node


def simulate_collapse(
    exp: Experiment, kind: str, beta0: float, duration: float, seeds: int, progress: bool = False
) -> dict[str, Any]:
    """P(collapse) of the theory ODE at one schedule, over `seeds` exact initial draws.

    **Arguments:**

    - `exp`: the experiment (its annealing table is replaced).
    - `kind`, `beta0`, `duration`: the schedule (see `make_schedule`).
    - `seeds`: Monte Carlo trajectories.
    - `progress`: a progress bar.

    **Returns:** `{"p_collapse", "ci" (Wilson 95%), "p_label", "seeds", "seconds"}`.

    **Example:**
    ```python
    simulate_collapse(load_experiment(None), "linear", 0.1, 50.0, seeds=500)["p_collapse"]
    ```
    """
    import shutil
    import tempfile

    from .._experiments._sweep import plan_sweep, run_sweep, summarise

    raw = _plain(exp.to_dict())
    raw.pop("sweep", None)
    raw.pop("flow", None)
    annealing = {"kind": kind, "beta0": float(beta0), "scale": exp.annealing.scale}
    if kind == "exponential":
        annealing["rate"] = EXP_FACTOR / float(duration)
    else:
        annealing["duration"] = float(duration)
    raw["annealing"] = annealing
    raw["sweep"] = {"seeds": seeds, "chunk": min(seeds, 2000)}
    raw["sweep"]["parameters"] = {"annealing.beta0": [float(beta0)]}
    work = tempfile.mkdtemp(prefix="modecollapse-design-")
    try:
        plan = plan_sweep(raw, "theory")
        start = time.perf_counter()
        summary = summarise(plan, run_sweep(plan, work, progress=progress))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(
        p_collapse=summary["p_collapse"][0],
        ci=summary["p_collapse_ci"][0],
        p_label={k: v[0] for k, v in summary["p_label"].items()},
        seeds=seeds,
        seconds=time.perf_counter() - start,
    )


def design_experiment(
    exp: Experiment,
    *,
    price: float = 1e-3,
    steps: int = 100,
    budget: float = 90.0,
    seeds: int = 2000,
    progress: bool = False,
) -> tuple[dict[str, Any], bytes]:
    """Optimise the schedule of `exp` (eq. (A1)) and check the optimum by simulation.

    **Arguments:**

    - `exp`: an experiment the formula covers (see `formula_arguments`); its `[annealing]` table
      gives the family and the starting point.
    - `price`: λ, the cost of one unit of annealing time.
    - `steps`, `budget`: Adam steps and wall-clock seconds at most for the optimiser.
    - `seeds`: theory-ODE trajectories for the simulated P(collapse) at the optimum.
    - `progress`: progress bars.

    **Returns:** `(report, png)`: the JSON-ready report and the figure (landscape and path).

    **Example:**
    ```python
    report, png = design_experiment(load_design_experiment(None), price=1e-3)
    report["optimum"]
    ```
    """
    kind = exp.annealing.kind
    if kind not in DESIGN_KINDS:
        raise ConfigError(
            f"`annealing.kind`: design needs a schedule family {DESIGN_KINDS}, got {kind!r}."
        )
    formula = formula_arguments(exp)
    a = exp.annealing
    beta0 = float(a.beta0)  # type: ignore[arg-type]
    duration = float(a.duration) if kind != "exponential" else EXP_FACTOR / float(a.rate)  # type: ignore[arg-type]
    result = optimise_schedule(
        kind,
        formula,
        beta0=beta0,
        duration=duration,
        price=price,
        steps=steps,
        budget=budget,
        progress=progress,
    )
    best_sim = simulate_collapse(exp, kind, result.beta0, result.duration, seeds, progress)
    betas = np.geomspace(0.005, 1.0, 7)
    taus = np.geomspace(1.0, 400.0, 7)
    land = np.array(
        [
            [float(p_collapse_formula(make_schedule(kind, b, t), **formula)) for t in taus]
            for b in betas
        ]
    )
    report = dict(
        family=kind,
        price=price,
        formula_arguments=formula,
        start=dict(
            beta0=beta0,
            duration=duration,
            p_formula=result.history[0]["p"],
        ),
        optimum=dict(
            beta0=result.beta0,
            duration=result.duration,
            objective=result.objective,
            p_formula=result.p,
            p_simulated=best_sim["p_collapse"],
            p_simulated_ci=best_sim["ci"],
            p_simulated_label=best_sim["p_label"],
        ),
        optimiser=dict(
            method="adam on (logit β0, log τ)",
            steps=result.steps,
            seconds=result.seconds,
            stopped=result.stopped,
            history=result.history,
        ),
        simulation=dict(route="theory", seeds=seeds),
        landscape=dict(beta0=betas.tolist(), duration=taus.tolist(), p_formula=land.tolist()),
        config=exp.to_dict(),
    )
    from .._figures._runs import design_figure

    return report, design_figure(report)
