"""`modecollapse design`: the CLI command of the schedule-design job (`_jobs._design`).

The job itself (formula arguments, optimisation, simulated check, the built-in experiment
`DEFAULT_DESIGN_TOML`) lives in `_jobs._design`; this module adds its arguments and its jax-free
validation, so that every input is checked before anything compiles.
"""

import argparse
import os
import tomllib

from .._experiments._config import (
    ConfigError,
    check_formula_inputs,
    load_experiment,
    parse_experiment,
)
from .._experiments._io import to_json
from ._command import Command, Output, Prepared, add_common_arguments, check_out, show_progress
from ._design import DEFAULT_DESIGN_TOML, design_experiment, formula_arguments


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
