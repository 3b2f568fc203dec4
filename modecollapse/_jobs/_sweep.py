"""`modecollapse sweep`: P(collapse) over a grid of parameters and seeds (batched, checkpointed)."""

import argparse
import itertools
import json
import os
import tomllib

import jax

from .._experiments._config import (
    DEFAULT_SWEEP_TOML,
    ConfigError,
    check_explicit_step,
    load_experiment,
)
from .._experiments._io import to_json, write_outputs
from .._experiments._sweep import (
    one_cpu_device_per_core,
    plan_sweep,
    prefer_wide_cpu_vectors,
    run_sweep,
    summarise,
    write_netcdf,
)
from .._figures._runs import phase_figure
from ._command import Command, Output, Prepared, add_common_arguments, check_out, show_progress


def check_sweep_steps(plan) -> None:
    """Refuse a full-route sweep whose Euler step is unstable at any grid point (eq. (ST1)),
    before anything compiles; the message names the point. Jax-free.

    **Arguments:**

    - `plan`: from `plan_sweep`.

    **Returns:** None; raises `ConfigError`.

    **Example:**
    ```python
    check_sweep_steps(plan_sweep(raw, "full"))
    ```
    """
    if plan.route != "full":
        return
    for point, combo in zip(plan.points, itertools.product(*plan.values)):
        try:
            check_explicit_step(point)
        except ConfigError as e:
            shown = ", ".join(f"{n} = {json.dumps(v)}" for n, v in zip(plan.names, combo))
            raise ConfigError(f"{e} (at sweep point {shown})") from None


def sweep_experiment(
    plan,
    out: str,
    *,
    resume: bool = False,
    progress: bool = False,
    merge_timeout: float = 24 * 3600.0,
):
    """Run a sweep and write results.nc, summary.json and phase.png into `out`.

    **Arguments:**

    - `plan`: from `plan_sweep`.
    - `out`: the output folder; its checkpoint.npz is kept (and reused by `resume`).
    - `resume`, `progress`, `merge_timeout`: see `run_sweep`.

    **Returns:** the summary dictionary (None on processes other than 0 of a multi-host run).

    **Example:**
    ```python
    summary = sweep_experiment(plan_sweep(raw, "theory"), "out/")
    summary["p_collapse"]
    ```
    """
    check_sweep_steps(plan)
    results = run_sweep(plan, out, resume=resume, progress=progress, merge_timeout=merge_timeout)
    if jax.process_index() != 0:
        return None  # process 0 merges every process's checkpoint and writes the outputs
    summary = summarise(plan, results)
    write_netcdf(os.path.join(out, "results.nc"), plan, results)
    write_outputs(out, {"summary.json": to_json(summary), "phase.png": phase_figure(summary)})
    return summary


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser, "experiment TOML file with a [sweep] table (default: a built-in sweep)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.npz after an interruption",
    )
    parser.add_argument(
        "--route",
        choices=("theory", "full"),
        default="theory",
        help="theory ODE (default) or the full d-dimensional flow",
    )
    multi = parser.add_argument_group(
        "multi-host",
        "run one process per host with the same DIR on a shared filesystem; each takes every "
        "n-th chunk, and process 0 merges the checkpoints and writes the outputs",
    )
    multi.add_argument(
        "--coordinator", metavar="HOST:PORT", help="address of process 0 (jax.distributed)"
    )
    multi.add_argument("--num-processes", type=int, default=1, metavar="N")
    multi.add_argument("--process-id", type=int, metavar="I")
    multi.add_argument(
        "--merge-timeout",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="how long process 0 waits for the other processes' checkpoints (default 24 h)",
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    if args.config is None:
        raw = tomllib.loads(DEFAULT_SWEEP_TOML)
    else:
        load_experiment(args.config)  # readable, valid TOML and a valid base experiment
        with open(args.config, "rb") as f:
            raw = tomllib.load(f)
    if args.precision is not None:
        raw.setdefault("simulation", {})["precision"] = args.precision
    plan = plan_sweep(raw, args.route)
    check_sweep_steps(plan)
    check_out(args.out)
    if args.num_processes > 1 and (args.coordinator is None or args.process_id is None):
        raise ConfigError("`--num-processes`: also give --coordinator and --process-id.")
    if not args.merge_timeout > 0:
        raise ConfigError(f"`--merge-timeout`: must be > 0 seconds, got {args.merge_timeout}.")
    return Prepared(plan.base, plan.base.simulation.precision, plan)


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    one_cpu_device_per_core()  # a chunk is sharded over the local devices: one per core
    prefer_wide_cpu_vectors()  # 512-bit vectors where the CPU has them
    if args.num_processes > 1:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    summary = sweep_experiment(
        prepared.extra,
        args.out,
        resume=args.resume,
        progress=show_progress(args),
        merge_timeout=args.merge_timeout,
    )
    if summary is None:
        return Output()
    return Output(
        lines=(
            f"wrote {os.path.join(args.out, 'results.nc')}, summary.json and phase.png "
            f"({summary['trajectories_per_second']:.0f} trajectories/s)",
        )
    )


COMMAND = Command(
    help="P(collapse) over a grid of parameters and seeds (batched, checkpointed)",
    description="Run every (grid point, seed) of the experiment's [sweep] table as batched, "
    "jit-compiled chunks sharded over the local devices; checkpoint after every chunk. "
    "Writes DIR/results.nc, DIR/summary.json and DIR/phase.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
