"""`modecollapse design`: optimise an annealing schedule (eq. (A1)), then check it by simulation.

docs/theory.md, §14. The library half (the objective and its optimiser) is `_annealing._design`.
"""

import argparse
import os
import time
import tomllib
import warnings
from typing import Any

import numpy as np

from .._annealing._design import optimise_schedule
from .._annealing._formula import (
    FormulaRegimeWarning,
    FormulaSetting,
    p_collapse_formula,
    warn_formula_regime,
)
from .._annealing._schedules import (
    annealing_time,
    design_kinds,
    design_parameters,
    make_schedule,
    schedule_parameters,
)
from .._experiments._config import (
    ConfigError,
    Experiment,
    check_formula_inputs,
    load_experiment,
    parse_experiment,
)
from .._experiments._io import to_json
from .._experiments._problem import NumericalFailure
from ._command import Command, Output, Prepared, add_common_arguments, check_out, show_progress


def formula_arguments(exp: Experiment) -> FormulaSetting:
    """The `FormulaSetting` of an experiment, or a one-line `ConfigError`.

    The formula covers K = J = 2, an antipodal target, random initialisation with equal initial
    weights, and an adiabatic (or frozen, rate 0) scale. A trained scale is mapped to the adiabatic
    case and ρ ≠ ½ is accepted, both outside the formula's regime: the setting carries the
    experiment's `weights_rate` and `scale_rate` so that `formula_regime` says so.

    **Arguments:**

    - `exp`: a parsed experiment.

    **Returns:** a `FormulaSetting` (everything the formula needs but the schedule).

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
    scale_rate = 0.0
    if a.scale == "adiabatic":
        coupling: dict[str, Any] = {"scale_coupling": "adiabatic"}
    elif v.learning_rates["scale"] == 0.0:
        coupling = {"scale_coupling": "frozen", "variational_scale": v.scale}
    else:
        # a trained scale relaxes to σ²/β(t) (up to O(1/d)): the formula's adiabatic case
        coupling = {"scale_coupling": "adiabatic"}
        scale_rate = float(v.learning_rates["scale"])
    return FormulaSetting(
        target_norm=t.means["norm"],
        weight=t.weights[0],
        scale=t.scale,
        init_norm=v.init["norm"],
        dim=exp.dim,
        t_end=exp.t_end,
        rate=v.learning_rates["means"],
        weights_rate=float(v.learning_rates["weights"]),
        scale_rate=scale_rate,
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
    - `kind`, `beta0`, `duration`: the schedule in the design's coordinates (β0, τ); see
      `make_schedule` (for "exponential", rate = 3/τ).
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
    params = design_parameters(kind, float(beta0), float(duration))
    raw["annealing"] = {"kind": kind, **params, "scale": exp.annealing.scale}
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

    Outside the formula's regime (`formula_regime`: ρ ≠ ½ with trainable weights, or a trained
    scale treated as adiabatic) it warns once with `FormulaRegimeWarning`; the report's
    `formula_regime` is `{"ok": ..., "reasons": [...]}` either way.

    **Returns:** `(report, png)`: the JSON-ready report and the figure (landscape and path).

    **Example:**
    ```python
    report, png = design_experiment(load_design_experiment(None), price=1e-3)
    report["optimum"]
    ```
    """
    kind = exp.annealing.kind
    if kind not in design_kinds():
        raise ConfigError(
            f"`annealing.kind`: design needs a schedule family {design_kinds()}, got {kind!r}."
        )
    formula = formula_arguments(exp)
    regime = warn_formula_regime(formula)  # said once here, and recorded in the report
    a = exp.annealing
    params = {n: float(getattr(a, n)) for n in schedule_parameters(kind)}
    beta0 = params["beta0"]
    duration = float(np.asarray(annealing_time(kind, params)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormulaRegimeWarning)
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
        if not np.isfinite(result.p) or not np.isfinite(result.history[0]["p"]):
            raise NumericalFailure(
                f"the collapse formula gave P = {result.p} (start {result.history[0]['p']}) on "
                f"`annealing` {kind} beta0 = {beta0:g}, duration = {duration:g}."
            )
        betas = np.geomspace(0.005, 1.0, 7)
        taus = np.geomspace(1.0, 400.0, 7)
        land = np.array(
            [
                [float(p_collapse_formula(make_schedule(kind, b, t), formula)) for t in taus]
                for b in betas
            ]
        )
    best_sim = simulate_collapse(exp, kind, result.beta0, result.duration, seeds, progress)
    report = dict(
        family=kind,
        price=price,
        formula_arguments=formula.to_dict(),
        formula_regime=regime,
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


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser, "experiment TOML file (default: a built-in antipodal K = J = 2 experiment)"
    )
    parser.add_argument(
        "--price", type=float, default=1e-3, help="cost of one unit of annealing time (1e-3)"
    )
    parser.add_argument("--steps", type=int, default=100, help="Adam steps at most (100)")
    parser.add_argument(
        "--budget", type=float, default=90.0, help="optimiser wall-clock seconds at most (90)"
    )
    parser.add_argument(
        "--seeds", type=int, default=2000, help="theory-ODE trajectories per check (2000)"
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    if args.config is None:
        exp = parse_experiment(tomllib.loads(DEFAULT_DESIGN_TOML))
    else:
        exp = load_experiment(args.config)
    formula_arguments(exp)  # one-line ConfigError if the formula does not cover the experiment
    check_formula_inputs(exp)  # and the formula's run-time checks, named by experiment key
    if exp.annealing.kind == "none":
        raise ConfigError("`annealing.kind`: design needs a schedule family to optimise, not none.")
    for name in ("price", "budget"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"`--{name}`: must be > 0, got {getattr(args, name)}.")
    for name in ("steps", "seeds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"`--{name}`: must be >= 1, got {getattr(args, name)}.")
    check_out(args.out)
    return Prepared(exp, args.precision or "float64")


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    report, figure = design_experiment(
        prepared.experiment,  # type: ignore[arg-type]
        price=args.price,
        steps=args.steps,
        budget=args.budget,
        seeds=args.seeds,
        progress=show_progress(args),
    )
    o, s = report["optimum"], report["start"]
    lines = (
        f"wrote {os.path.join(args.out, 'design.json')} and design.png",
        f"  start   beta0 = {s['beta0']:.4g}, duration = {s['duration']:.4g}: P(collapse) "
        f"formula {s['p_formula']:.3f}",
        f"  optimum beta0 = {o['beta0']:.4g}, duration = {o['duration']:.4g}: P(collapse) "
        f"formula {o['p_formula']:.3f}, simulated {o['p_simulated']:.3f} "
        f"[{o['p_simulated_ci'][0]:.3f}, {o['p_simulated_ci'][1]:.3f}]",
    )
    return Output({"design.json": to_json(report), "design.png": figure}, lines)


COMMAND = Command(
    help="optimise the annealing schedule (beta0, duration) through the collapse formula",
    description="Minimise P_formula(collapse) + price * duration over the experiment's "
    "schedule family with Adam, differentiating through the formula's ODE solves "
    "(docs/theory.md, §14); then simulate P(collapse) with the theory ODE at the optimum. "
    "Writes DIR/design.json and DIR/design.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse design`."""
