"""The `run` and `compare` jobs: solve, assemble the JSON records, draw the figures."""

import os
import sys
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

from .._experiments._config import Experiment
from .._experiments._problem import (
    build_problem,
    max_abs_diff,
    run_full,
    run_theory,
    trajectory_record,
)
from .._figures._runs import compare_figure, overlaps_figure
from .._metrics import trajectory_outcome
from .._summary import TargetStatistics


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


def compare_experiment(
    exp: Experiment, dims: list[int], progress: bool = False
) -> tuple[dict[str, Any], bytes]:
    """Full flow against theory at each d, from the same initial state at each d.

    **Arguments:**

    - `exp`: a validated experiment (its `dim` is replaced by each of `dims`).
    - `dims`: the dimensions.
    - `progress`: show progress bars.

    **Returns:** `(report, png_bytes)`, the compare.json record and compare.png; prints the table.

    **Example:**
    ```python
    report, png = compare_experiment(load_experiment(None), [8, 64])
    [r["max_abs_diff"]["Q"] for r in report["rows"]]
    ```
    """
    problems = [build_problem(exp.with_dim(d)) for d in dims]  # validate every d before solving
    header = (
        f"{'d':>7} {'theory [s]':>11} {'full [s]':>10} {'steps th/full':>15} "
        f"{'max|dR|':>9} {'max|dQ|':>9} "
        f"{'max|dw|':>9} {'max|ds|':>9} {'max|dF|':>9}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for problem in problems:
        d = problem.experiment.dim
        theory, t_sec = run_theory(problem, progress)
        full, f_sec = run_full(problem, progress)
        diff = max_abs_diff(full, theory)
        rows.append(
            {
                "dim": d,
                "wall_seconds": {"theory": t_sec["solve"], "full": f_sec["solve"]},
                "compile_seconds": {"theory": t_sec["compile"], "full": f_sec["compile"]},
                "steps": {"theory": int(theory.num_steps), "full": int(full.num_steps)},
                "max_abs_diff": diff,
                "theory": trajectory_record(theory),
                "full": trajectory_record(full),
            }
        )
        print(
            f"{d:>7} {t_sec['solve']:>11.3f} {f_sec['solve']:>10.3f} "
            f"{int(theory.num_steps):>7d}/{int(full.num_steps):<7d} "
            + " ".join(f"{diff[k]:>9.1e}" for k in ("R", "Q", "weights", "scale", "objective")),
            flush=True,
        )
    report = {
        "dims": dims,
        "times": np.asarray(problems[0].ts).tolist(),
        "rows": rows,
        "config": exp.to_dict(),
    }
    return report, compare_figure(report)


def sweep_experiment(plan, out: str, *, resume: bool = False, progress: bool = False):
    """Run a sweep and write results.nc, summary.json and phase.png into `out`.

    **Arguments:**

    - `plan`: from `plan_sweep`.
    - `out`: the output folder; its checkpoint.npz is kept (and reused by `resume`).
    - `resume`, `progress`: see `run_sweep`.

    **Returns:** the summary dictionary (None on processes other than 0 of a multi-host run).

    **Example:**
    ```python
    summary = sweep_experiment(plan_sweep(raw, "theory"), "out/")
    summary["p_collapse"]
    ```
    """
    from .._experiments._io import to_json, write_outputs
    from .._experiments._sweep import run_sweep, summarise, write_netcdf
    from .._figures._runs import phase_figure

    results = run_sweep(plan, out, resume=resume, progress=progress)
    if jax.process_index() != 0:
        return None  # process 0 merges every process's checkpoint and writes the outputs
    summary = summarise(plan, results)
    write_netcdf(os.path.join(out, "results.nc"), plan, results)
    write_outputs(out, {"summary.json": to_json(summary), "phase.png": phase_figure(summary)})
    return summary
