"""Command-line interface: `modecollapse run` and `modecollapse compare`."""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._experiments._config import ConfigError, Experiment, load_experiment
from ._experiments._io import to_json, write_outputs


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fail(message: str, status: int = 2) -> NoReturn:
    print(f"modecollapse: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _check_out(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"`--out`: {path!r} exists and is not a directory.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"`--out`: the parent folder {parent!r} does not exist.")


def _parse_dims(text: str) -> list[int]:
    try:
        dims = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"`--dims`: expected comma-separated integers, got {text!r}.") from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"`--dims`: every dimension must be >= 1, got {text!r}.")
    return sorted(set(dims))


def _progress(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _cmd_run(args) -> None:
    exp = _with_precision(load_experiment(args.config), args)
    _check_out(args.out)
    from ._jobs._run import run_experiment  # heavy imports (jax) only after validation of the file

    result, figure = run_experiment(exp, progress=_progress(args))
    write_outputs(args.out, {"result.json": to_json(result), "overlaps.png": figure})
    print(f"wrote {os.path.join(args.out, 'result.json')} and overlaps.png")


def _cmd_compare(args) -> None:
    exp: Experiment = _with_precision(load_experiment(args.config), args)
    dims = _parse_dims(args.dims)
    _check_out(args.out)
    from ._jobs._run import compare_experiment

    report, figure = compare_experiment(exp, dims, progress=_progress(args))
    write_outputs(args.out, {"compare.json": to_json(report), "compare.png": figure})
    print(f"wrote {os.path.join(args.out, 'compare.json')} and compare.png")


def _cmd_sweep(args) -> None:
    import tomllib

    if args.config is None:
        from ._experiments._config import DEFAULT_SWEEP_TOML

        raw = tomllib.loads(DEFAULT_SWEEP_TOML)
    else:
        load_experiment(args.config)  # readable, valid TOML and a valid base experiment
        with open(args.config, "rb") as f:
            raw = tomllib.load(f)
    from ._experiments._sweep import plan_sweep

    if args.precision is not None:
        raw.setdefault("simulation", {})["precision"] = args.precision
    plan = plan_sweep(raw, args.route)
    _check_out(args.out)
    if args.num_processes > 1:
        if args.coordinator is None or args.process_id is None:
            raise ConfigError("`--num-processes`: also give --coordinator and --process-id.")
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from ._jobs._run import sweep_experiment

    summary = sweep_experiment(plan, args.out, resume=args.resume, progress=_progress(args))
    if summary is not None:
        print(
            f"wrote {os.path.join(args.out, 'results.nc')}, summary.json and phase.png "
            f"({summary['trajectories_per_second']:.0f} trajectories/s)"
        )


def _cmd_flow(args) -> None:
    if args.config is None:
        import tomllib

        from ._experiments._config import DEFAULT_FLOW_TOML, parse_experiment

        exp = parse_experiment(tomllib.loads(DEFAULT_FLOW_TOML))
    else:
        exp = load_experiment(args.config)
    _check_out(args.out)
    from ._jobs._flow import run_flow_experiment

    result, figure = run_flow_experiment(exp, progress=_progress(args))
    write_outputs(args.out, {"result.json": to_json(result), "flow.png": figure})
    print(f"wrote {os.path.join(args.out, 'result.json')} and flow.png")


def _cmd_design(args) -> None:
    if args.config is None:
        import tomllib

        from ._experiments._config import parse_experiment
        from ._jobs._design import DEFAULT_DESIGN_TOML

        exp = parse_experiment(tomllib.loads(DEFAULT_DESIGN_TOML))
    else:
        exp = load_experiment(args.config)
    from ._jobs._design import formula_arguments

    formula_arguments(exp)  # one-line ConfigError if the formula does not cover the experiment
    if exp.annealing.kind == "none":
        raise ConfigError("`annealing.kind`: design needs a schedule family to optimise, not none.")
    for name in ("price", "budget"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"`--{name}`: must be > 0, got {getattr(args, name)}.")
    for name in ("steps", "seeds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"`--{name}`: must be >= 1, got {getattr(args, name)}.")
    _check_out(args.out)
    from ._jobs._design import design_experiment

    report, figure = design_experiment(
        exp,
        price=args.price,
        steps=args.steps,
        budget=args.budget,
        seeds=args.seeds,
        progress=_progress(args),
    )
    write_outputs(args.out, {"design.json": to_json(report), "design.png": figure})
    o, s = report["optimum"], report["start"]
    print(f"wrote {os.path.join(args.out, 'design.json')} and design.png")
    print(
        f"  start   beta0 = {s['beta0']:.4g}, duration = {s['duration']:.4g}: P(collapse) "
        f"formula {s['p_formula']:.3f}"
    )
    print(
        f"  optimum beta0 = {o['beta0']:.4g}, duration = {o['duration']:.4g}: P(collapse) "
        f"formula {o['p_formula']:.3f}, simulated {o['p_simulated']:.3f} "
        f"[{o['p_simulated_ci'][0]:.3f}, {o['p_simulated_ci'][1]:.3f}]"
    )


def _cmd_agreement(args) -> None:
    _check_out(args.out)
    from ._jobs._agreement import QUICK, agreement

    kwargs = QUICK if args.quick else {}
    report, png = agreement(progress=True, **kwargs)
    write_outputs(args.out, {"agreement.json": to_json(report), "agreement.png": png})
    print(f"wrote {os.path.join(args.out, 'agreement.json')} and agreement.png")
    for pair in ("full-theory", "full-limit", "full-limit0", "full-sgd"):
        s = report["slopes"][pair]
        print(
            f"  slope of {pair:<12} error against d: {s['value']:+.2f} "
            f"[{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]"
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modecollapse",
        description="Variational inference on Gaussian-mixture targets: the full d-dimensional "
        "reverse-KL gradient flow, its exact summary-statistic ODE, and mode collapse.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, config_help: str) -> None:
        p.add_argument("--config", metavar="FILE", help=config_help)
        p.add_argument("--out", metavar="DIR", required=True, help="output folder (created)")
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            "--progress",
            dest="progress",
            action="store_true",
            default=None,
            help="show progress bars (default: only on a terminal)",
        )
        g.add_argument("--no-progress", dest="progress", action="store_false")
        p.add_argument(
            "--precision",
            choices=("float32", "float64"),
            default=None,
            help="floating-point precision; overrides [simulation] precision (default float64)",
        )

    run = sub.add_parser(
        "run",
        help="solve one experiment: theory ODE and (optionally) the full flow",
        description="Solve an experiment with the summary-statistic ODE and, if "
        "[simulation] full = true, the full d-dimensional flow. Writes DIR/result.json and "
        "DIR/overlaps.png.",
    )
    common(run, "experiment TOML file (default: the built-in bimodal experiment)")
    run.set_defaults(func=_cmd_run)

    compare = sub.add_parser(
        "compare",
        help="full flow against theory at several dimensions",
        description="Run the full flow and the theory from the same initial state at each d; "
        "print a table (wall times, max abs difference per statistic) and write "
        "DIR/compare.json and DIR/compare.png.",
    )
    common(compare, "experiment TOML file (default: the built-in bimodal experiment)")
    compare.add_argument(
        "--dims",
        default="8,64,512,4096",
        metavar="D1,D2,...",
        help="comma-separated dimensions (default: 8,64,512,4096)",
    )
    compare.set_defaults(func=_cmd_compare)

    sweep = sub.add_parser(
        "sweep",
        help="P(collapse) over a grid of parameters and seeds (batched, checkpointed)",
        description="Run every (grid point, seed) of the experiment's [sweep] table as batched, "
        "jit-compiled chunks sharded over the local devices; checkpoint after every chunk. "
        "Writes DIR/results.nc, DIR/summary.json and DIR/phase.png.",
    )
    common(sweep, "experiment TOML file with a [sweep] table (default: a built-in sweep)")
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.npz after an interruption",
    )
    sweep.add_argument(
        "--route",
        choices=("theory", "full"),
        default="theory",
        help="theory ODE (default) or the full d-dimensional flow",
    )
    multi = sweep.add_argument_group(
        "multi-host",
        "run one process per host with the same DIR on a shared filesystem; each takes every "
        "n-th chunk, and process 0 merges the checkpoints and writes the outputs",
    )
    multi.add_argument(
        "--coordinator", metavar="HOST:PORT", help="address of process 0 (jax.distributed)"
    )
    multi.add_argument("--num-processes", type=int, default=1, metavar="N")
    multi.add_argument("--process-id", type=int, metavar="I")
    sweep.set_defaults(func=_cmd_sweep)

    agree = sub.add_parser(
        "agreement",
        help="full flow, SGD, finite-d theory and the d → ∞ limit as d grows (extensive scaling)",
        description="Run the agreement benchmark (docs/theory.md, §11): sup-time errors between "
        "every pair of routes at each d, log-log slopes with 95%% intervals, wall times. Writes "
        "DIR/agreement.json and DIR/agreement.png.",
    )
    agree.add_argument("--out", metavar="DIR", required=True, help="output folder (created)")
    agree.add_argument(
        "--quick",
        action="store_true",
        help="d in {16, 64, 256}, 20 seeds, 16 SGD particles (about 1-2 minutes)",
    )
    agree.set_defaults(func=_cmd_agreement)

    flow = sub.add_parser(
        "flow",
        help="RealNVP normalizing-flow VI on the same target, under the same annealing",
        description="Train [flow] seeds RealNVP flows by reverse-KL VI (time t = step * "
        "learning_rate) on the experiment's target and annealing. Writes DIR/result.json (loss "
        "curves, mode-mass trajectories, Lipschitz estimates, outcome block) and DIR/flow.png.",
    )
    common(flow, "experiment TOML file with a [flow] table (default: a built-in d = 2 experiment)")
    flow.set_defaults(func=_cmd_flow)

    design = sub.add_parser(
        "design",
        help="optimise the annealing schedule (beta0, duration) through the collapse formula",
        description="Minimise P_formula(collapse) + price * duration over the experiment's "
        "schedule family with Adam, differentiating through the formula's ODE solves "
        "(docs/theory.md, §14); then simulate P(collapse) with the theory ODE at the optimum. "
        "Writes DIR/design.json and DIR/design.png.",
    )
    common(design, "experiment TOML file (default: a built-in antipodal K = J = 2 experiment)")
    design.add_argument(
        "--price", type=float, default=1e-3, help="cost of one unit of annealing time (1e-3)"
    )
    design.add_argument("--steps", type=int, default=100, help="Adam steps at most (100)")
    design.add_argument(
        "--budget", type=float, default=90.0, help="optimiser wall-clock seconds at most (90)"
    )
    design.add_argument(
        "--seeds", type=int, default=2000, help="theory-ODE trajectories per check (2000)"
    )
    design.set_defaults(func=_cmd_design)
    return parser


def _precision(args) -> str:
    """--precision, else the experiment file's `[simulation] precision`, else float64."""
    if getattr(args, "precision", None) is not None:
        return args.precision
    if args.command in ("run", "compare", "sweep"):
        return load_experiment(args.config).simulation.precision
    return "float64"


def _configure_jax(precision: str) -> dict[str, Any]:
    """x64 on for float64 only; the persistent compilation cache (MODECOLLAPSE_CACHE_DIR).

    Returns the previous precision and equinox error mode, for `_restore_jax` (the cache stays:
    it only stores compilations).
    """
    import jax

    previous: dict[str, Any] = {"jax_enable_x64": jax.config.read("jax_enable_x64")}
    jax.config.update("jax_enable_x64", precision == "float64")
    cache = os.environ.get("MODECOLLAPSE_CACHE_DIR")
    if cache is None:
        cache = os.path.join(os.path.expanduser("~"), ".cache", "modecollapse", "jax")
    if cache:  # MODECOLLAPSE_CACHE_DIR="" turns the cache off
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        if "EQX_ON_ERROR" not in os.environ:
            # JAX does not cache executables with host callbacks, which equinox's runtime checks
            # (diffrax's `ts` checks) compile to; in the CLI a failed check gives NaN instead, and
            # the solve then fails with a one-line NumericalFailure. EQX_ON_ERROR=raise restores.
            # equinox reads the documented EQX_ON_ERROR variable once, at import, into this
            # module attribute; `main` restores it when it returns. Measured on the default
            # experiment: warm start 5 s with it, 8–10 s without.
            import equinox._errors

            previous["EQX_ON_ERROR"] = equinox._errors.EQX_ON_ERROR  # pyright: ignore
            equinox._errors.EQX_ON_ERROR = "nan"  # pyright: ignore
    return previous


def _restore_jax(previous: dict[str, Any]) -> None:
    """Undo `_configure_jax`, so that calling `main` in a process leaves the library as it was."""
    import jax

    if "jax_enable_x64" in previous:
        jax.config.update("jax_enable_x64", previous["jax_enable_x64"])
    if "EQX_ON_ERROR" in previous:
        import equinox._errors

        equinox._errors.EQX_ON_ERROR = previous["EQX_ON_ERROR"]  # pyright: ignore
        # Functions traced while the mode was "nan" sit in JAX's in-memory caches (eager
        # `eqx.error_if` included): drop them, so that later library calls raise again.
        jax.clear_caches()


def _with_precision(exp: Experiment, args) -> Experiment:
    if getattr(args, "precision", None) is None:
        return exp
    import dataclasses

    sim = dataclasses.replace(exp.simulation, precision=args.precision)
    return dataclasses.replace(exp, simulation=sim)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `modecollapse` console script (float64 unless float32 is chosen)."""
    args = _parser().parse_args(argv)
    previous: dict[str, Any] = {}
    try:
        previous = _configure_jax(_precision(args))
        args.func(args)
    except ConfigError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written.", 130)
    except Exception as e:  # numerical failures and anything unexpected: one line, no traceback
        from ._experiments._problem import NumericalFailure

        if isinstance(e, NumericalFailure):
            exp = load_experiment(args.config)
            _fail(
                f"numerical failure: {e} Nothing was written. Config: "
                f"{json.dumps(exp.to_dict(), separators=(',', ':'))}",
                1,
            )
        if os.environ.get("MODECOLLAPSE_DEBUG"):
            raise
        _fail(f"{type(e).__name__}: {e} (set MODECOLLAPSE_DEBUG=1 for a traceback)", 1)
    finally:
        _restore_jax(previous)
