"""`modecollapse compare`: the full flow against the theory at several dimensions."""

import argparse
import os
from typing import Any

import numpy as np

from .._experiments._config import (
    ConfigError,
    Experiment,
    check_explicit_step,
    load_experiment,
)
from .._experiments._io import to_json
from .._experiments._problem import (
    build_problem,
    max_abs_diff,
    run_full,
    run_theory,
    trajectory_record,
)
from .._figures._runs import compare_figure
from ._command import (
    Command,
    Output,
    Prepared,
    add_common_arguments,
    check_out,
    show_progress,
    with_precision,
)


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
    if exp.simulation.kernel != "accurate":  # both routes must share one kernel rule
        raise ConfigError(
            f"`simulation.kernel`: compare runs both routes, which share the accurate kernel; "
            f'set `kernel = "accurate"` (got {exp.simulation.kernel!r}).'
        )
    for d in dims:  # a diverging Euler step at any d is refused before anything compiles
        check_explicit_step(exp.with_dim(d))
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


def parse_dims(text: str) -> list[int]:
    """`--dims`: comma-separated dimensions, each >= 1; returns them sorted, without repeats.

    **Arguments:**

    - `text`: e.g. "8,64,512".

    **Returns:** the sorted distinct dimensions; raises `ConfigError` naming `--dims`.

    **Example:**
    ```python
    parse_dims("64,8,64")  # [8, 64]
    ```
    """
    try:
        dims = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"`--dims`: expected comma-separated integers, got {text!r}.") from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"`--dims`: every dimension must be >= 1, got {text!r}.")
    return sorted(set(dims))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "experiment TOML file (default: the built-in bimodal experiment)")
    parser.add_argument(
        "--dims",
        default="8,64,512,4096",
        metavar="D1,D2,...",
        help="comma-separated dimensions (default: 8,64,512,4096)",
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    exp = with_precision(load_experiment(args.config), args.precision)
    dims = parse_dims(args.dims)
    for d in dims:
        check_explicit_step(exp.with_dim(d))
    check_out(args.out)
    return Prepared(exp, exp.simulation.precision, dims)


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    report, figure = compare_experiment(
        prepared.experiment,  # type: ignore[arg-type]
        prepared.extra,
        progress=show_progress(args),
    )
    return Output(
        {"compare.json": to_json(report), "compare.png": figure},
        (f"wrote {os.path.join(args.out, 'compare.json')} and compare.png",),
    )


COMMAND = Command(
    help="full flow against theory at several dimensions",
    description="Run the full flow and the theory from the same initial state at each d; "
    "print a table (wall times, max abs difference per statistic) and write "
    "DIR/compare.json and DIR/compare.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse compare`."""
