"""`modecollapse run`: solve an experiment by both routes; the result.json record and figure."""

import argparse
import os
import sys
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

from .._experiments._config import Experiment, check_explicit_step, load_experiment
from .._experiments._io import to_json
from .._experiments._problem import (
    build_problem,
    max_abs_diff,
    run_full,
    run_theory,
    trajectory_record,
)
from .._figures._runs import overlaps_figure
from .._metrics import trajectory_outcome
from .._summary import TargetStatistics
from ._command import (
    Command,
    Output,
    Prepared,
    add_common_arguments,
    check_out,
    show_progress,
    with_precision,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# One compiled computation for every metric (persistently cached by the CLI), instead of some
# hundred eagerly dispatched small ones: about 1 s of the CLI's start-up.
_jit_outcome = eqx.filter_jit(trajectory_outcome)


def _outcome(traj, problem) -> dict[str, Any]:
    key = jr.fold_in(jr.key(problem.experiment.seed), 1)
    stats = TargetStatistics.from_target(problem.target)
    return _jit_outcome(traj, stats, problem.experiment.dim, key).to_dict()


def run_experiment(exp: Experiment, progress: bool = False) -> tuple[dict[str, Any], bytes]:
    """Solve one experiment by both routes; returns the result.json record and overlaps.png.

    **Arguments:**

    - `exp`: a validated experiment.
    - `progress`: show progress bars.

    **Returns:** `(result, png_bytes)`. Raises `ConfigError` or `NumericalFailure`.

    **Example:**
    ```python
    result, png = run_experiment(load_experiment(None))
    result["max_abs_diff"]["R"]  # ~1e-8
    ```
    """
    if exp.simulation.full:
        check_explicit_step(exp)  # a diverging Euler step is refused before anything compiles
    problem = build_problem(exp)
    _log(f"theory ODE (K = {exp.variational.components}, J = {len(exp.target.weights)}) ...")
    theory, t_sec = run_theory(problem, progress)
    full, f_sec = None, None
    if exp.simulation.full:
        _log(f"full flow (d = {exp.dim}, estimator {exp.simulation.estimator}) ...")
        full, f_sec = run_full(problem, progress)
    result = {
        "times": np.asarray(problem.ts).tolist(),
        "beta": np.asarray(jax.vmap(problem.schedule)(problem.ts)).tolist(),
        "theory": trajectory_record(theory),
        "full": trajectory_record(full),
        "max_abs_diff": None if full is None else max_abs_diff(full, theory),
        "wall_seconds": {
            "theory": t_sec["solve"],
            "full": None if f_sec is None else f_sec["solve"],
        },
        "compile_seconds": {
            "theory": t_sec["compile"],
            "full": None if f_sec is None else f_sec["compile"],
        },
        "outcome": _outcome(theory, problem),
        "outcome_full": None if full is None else _outcome(full, problem),
        "config": exp.to_dict(),
    }
    print(
        f"outcome (theory): {result['outcome']['label']}, masses "
        + ", ".join(f"{m:.3f}" for m in result["outcome"]["masses"])
    )
    if result["max_abs_diff"] is not None:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_diff"].items())
        print(f"max |full - theory|: {diffs}")
    return result, overlaps_figure(result)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "experiment TOML file (default: the built-in bimodal experiment)")


def _prepare(args: argparse.Namespace) -> Prepared:
    exp = with_precision(load_experiment(args.config), args.precision)
    if exp.simulation.full:
        check_explicit_step(exp)
    check_out(args.out)
    return Prepared(exp, exp.simulation.precision)


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    result, figure = run_experiment(prepared.experiment, progress=show_progress(args))  # type: ignore[arg-type]
    return Output(
        {"result.json": to_json(result), "overlaps.png": figure},
        (f"wrote {os.path.join(args.out, 'result.json')} and overlaps.png",),
    )


COMMAND = Command(
    help="solve one experiment: theory ODE and (optionally) the full flow",
    description="Solve an experiment with the summary-statistic ODE and, if "
    "[simulation] full = true, the full d-dimensional flow. Writes DIR/result.json and "
    "DIR/overlaps.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse run`."""
