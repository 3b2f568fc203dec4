"""Command-line interface: argparse and dispatch only.

Every command is a job module under `_jobs/` with a `COMMAND` (its arguments, a jax-free
`prepare` that validates everything before anything compiles, and the job); `COMMANDS` below is
the one table. Adding a command is one job module plus one line here. The CLI turns
`ConfigError` into exit status 2, a failed run-time input check into exit status 2 and a failed
solve into exit status 1, each with one line and nothing written.
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._experiments._config import ConfigError
from ._experiments._io import write_outputs
from ._jobs._agreement import COMMAND as AGREEMENT
from ._jobs._command import Command, Output, Prepared
from ._jobs._compare import COMMAND as COMPARE
from ._jobs._design import COMMAND as DESIGN
from ._jobs._flow import COMMAND as FLOW
from ._jobs._run import COMMAND as RUN
from ._jobs._show_config import COMMAND as CONFIG
from ._jobs._sweep import COMMAND as SWEEP

COMMANDS: dict[str, Command] = {
    "run": RUN,
    "compare": COMPARE,
    "sweep": SWEEP,
    "agreement": AGREEMENT,
    "flow": FLOW,
    "design": DESIGN,
    "config": CONFIG,
}
"""`modecollapse NAME` → its `Command`, in the order `--help` lists them."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fail(message: str, status: int = 2) -> NoReturn:
    print(f"modecollapse: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modecollapse",
        description="Variational inference on Gaussian-mixture targets: the full d-dimensional "
        "reverse-KL gradient flow, its exact summary-statistic ODE, and mode collapse.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        command.add_arguments(p)
    return parser


def _precision(args: argparse.Namespace) -> str:
    """--precision, else the experiment file's `[simulation] precision` (run, compare, sweep),
    else float64: the precision the command's `prepare` chooses."""
    return COMMANDS[args.command].prepare(args).precision


def _configure_jax(precision: str) -> dict[str, Any]:
    """x64 on for float64 only; the persistent compilation cache (MODECOLLAPSE_CACHE_DIR).

    Returns the previous precision, for `_restore_jax` (the cache stays: it only stores
    compilations). Equinox's run-time checks are handled by `_execute`.
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
    return previous


def _restore_jax(previous: dict[str, Any]) -> None:
    """Undo `_configure_jax`, so that calling `main` in a process leaves the library as it was."""
    if "jax_enable_x64" in previous:
        import jax

        jax.config.update("jax_enable_x64", previous["jax_enable_x64"])


def _check_mode(mode: str) -> str:
    """Set how equinox's run-time checks fail ("raise" or "nan"); returns the previous mode.

    Equinox reads the documented EQX_ON_ERROR variable once, at import, into `equinox._errors`;
    this sets the same value for the checks traced from now on.
    """
    import equinox._errors

    previous = equinox._errors.EQX_ON_ERROR  # pyright: ignore
    equinox._errors.EQX_ON_ERROR = mode  # pyright: ignore
    return previous


def _execute(command: Command, args: argparse.Namespace, prepared: Prepared) -> Output:
    """Run a job fast, and if it fails, once more with every run-time check raising.

    JAX does not persist executables that contain host callbacks, and a raising `eqx.error_if`
    (diffrax's own `ts` and `dt0` checks included) compiles to one, so with checks raising every
    solve recompiles on every start (measured: warm `run` ≈ 7 s with the cache, ≈ 14 s without).
    The first attempt therefore traces the checks in "nan" mode. The inputs were validated by
    `prepare`, and each job raises `NumericalFailure` on a failed or non-finite result, so a
    tripped check cannot pass silently: on `NumericalFailure` the job runs again with the checks
    raising, so that a failed check reports its own message; otherwise the second run reports
    the numerical failure. Sweeps record failed trajectories instead (docs/theory.md, §10).
    EQX_ON_ERROR set in the environment is respected as it is.
    """
    if not command.uses_jax or "EQX_ON_ERROR" in os.environ:
        return command.execute(args, prepared)
    import jax

    from ._experiments._problem import NumericalFailure

    previous = _check_mode("nan")
    try:
        return command.execute(args, prepared)
    except NumericalFailure:
        pass
    finally:
        _check_mode(previous)
        jax.clear_caches()  # what was traced in "nan" mode must not serve later calls
    return command.execute(args, prepared)


_CHECK = re.compile(r"EquinoxRuntimeError: (.+)")


def _failed_check(error: Exception) -> str | None:
    """The message of a failed `eqx.error_if` run-time check (its first line), else None."""
    import equinox as eqx

    # equinox's text: stack lines, then "equinox.EquinoxRuntimeError: <message>", then advice;
    # under a plain `jax.jit` JAX wraps it as "..._EquinoxRuntimeError: <message>"
    found = _CHECK.search(str(error))
    if found:
        return found.group(1).strip()
    if isinstance(error, eqx.EquinoxRuntimeError):
        return type(error).__name__
    return None


def _experiment_line(prepared: Prepared | None) -> str:
    """The experiment actually run (built-in or file, with --precision), as one JSON line."""
    if prepared is None or prepared.experiment is None:
        return ""
    config = json.dumps(prepared.experiment.to_dict(), separators=(",", ":"))
    return f" Config: {config} Precision: {prepared.precision}."


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `modecollapse` console script (float64 unless float32 is chosen)."""
    args = _parser().parse_args(argv)
    command = COMMANDS[args.command]
    previous: dict[str, Any] = {}
    prepared: Prepared | None = None
    try:
        prepared = command.prepare(args)  # jax-free: every input is checked before compiling
        if command.uses_jax:
            previous = _configure_jax(prepared.precision)
        output = _execute(command, args, prepared)
        if output.files:
            write_outputs(args.out, output.files)  # type: ignore[arg-type]
        for line in output.lines:
            print(line)
    except ConfigError as e:
        _fail(str(e), 2)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written.", 130)
    except Exception as e:  # numerical failures and anything unexpected: one line, no traceback
        if os.environ.get("MODECOLLAPSE_DEBUG"):
            raise
        from ._experiments._problem import NumericalFailure

        if isinstance(e, NumericalFailure):
            _fail(f"numerical failure: {e} Nothing was written.{_experiment_line(prepared)}", 1)
        check = _failed_check(e)
        if check is not None:
            _fail(
                f"a run-time input check failed: {check} Nothing was written."
                f"{_experiment_line(prepared)}",
                2,
            )
        _fail(f"{type(e).__name__}: {e} (set MODECOLLAPSE_DEBUG=1 for a traceback)", 1)
    finally:
        _restore_jax(previous)
