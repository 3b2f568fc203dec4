"""What a CLI command is: its arguments, a jax-free preparation, and the job that runs it.

Each `modecollapse` command is one job module under `_jobs/` that defines a `COMMAND`; `_cli`
lists them in one table. A job never imports the CLI: it returns an `Output` (the files, as
bytes or text, and the lines to print), and the CLI writes and prints it.
"""

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from .._experiments._config import ConfigError, Experiment


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A command's validated input, built before anything compiles.

    **Arguments:**

    - `experiment`: the experiment actually run (the failure message prints it), or None.
    - `precision`: "float64" or "float32", the precision the CLI sets before the job runs.
    - `extra`: anything else the job needs (the sweep plan, the dimensions, ...).

    **Example:**
    ```python
    Prepared(load_experiment(None), "float64")
    ```
    """

    experiment: Experiment | None
    precision: str = "float64"
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class Output:
    """What a job returns: files for the output folder, and lines for the terminal.

    **Arguments:**

    - `files`: {name: bytes or text}, written atomically into `--out` by the CLI (none: the job
      wrote its own, e.g. a checkpointed sweep).
    - `lines`: printed to stdout after the files are written.

    **Example:**
    ```python
    Output({"result.json": text, "overlaps.png": png}, ("wrote out/result.json and overlaps.png",))
    ```
    """

    files: dict[str, bytes | str] = dataclasses.field(default_factory=dict)
    lines: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Command:
    """One CLI command: `modecollapse NAME ...`.

    **Arguments:**

    - `help`, `description`: the argparse texts.
    - `add_arguments`: adds the command's flags to its subparser.
    - `prepare`: validates the arguments and the experiment file without compiling anything
      (raises `ConfigError`); returns a `Prepared`.
    - `execute`: runs the job on the prepared input; returns an `Output`.
    - `uses_jax`: whether the CLI configures jax (precision, compilation cache) before `execute`.

    **Example:**
    ```python
    COMMAND = Command("solve", "Solve.", add_arguments, prepare, execute)
    ```
    """

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], Prepared]
    execute: Callable[[argparse.Namespace, Prepared], Output]
    uses_jax: bool = True


def add_common_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """`--config`, `--out`, `--progress`/`--no-progress` and `--precision`, shared by the jobs.

    **Arguments:**

    - `parser`: the command's subparser.
    - `config_help`: the help text of `--config` (names the command's built-in experiment).

    **Returns:** None.

    **Example:**
    ```python
    add_common_arguments(parser, "experiment TOML file (default: the built-in experiment)")
    ```
    """
    parser.add_argument("--config", metavar="FILE", help=config_help)
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder (created)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress bars (default: only on a terminal)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--precision",
        choices=("float32", "float64"),
        default=None,
        help="floating-point precision; overrides [simulation] precision (default float64)",
    )


def check_out(path: str) -> None:
    """Refuse an `--out` that is a file or whose parent folder is missing (`ConfigError`).

    **Arguments:**

    - `path`: the output folder.

    **Returns:** None.

    **Example:**
    ```python
    check_out("out/")
    ```
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"`--out`: {path!r} exists and is not a directory.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"`--out`: the parent folder {parent!r} does not exist.")


def show_progress(args: argparse.Namespace) -> bool:
    """`--progress`/`--no-progress`, else progress bars only on a terminal.

    **Arguments:**

    - `args`: the parsed arguments.

    **Returns:** whether to show progress bars.

    **Example:**
    ```python
    show_progress(args)
    ```
    """
    return sys.stderr.isatty() if args.progress is None else args.progress


def with_precision(exp: Experiment, precision: str | None) -> Experiment:
    """The experiment with `[simulation] precision` replaced by `--precision` (if given).

    **Arguments:**

    - `exp`: an experiment.
    - `precision`: "float32", "float64" or None (keep the file's).

    **Returns:** the experiment actually run.

    **Example:**
    ```python
    with_precision(load_experiment(None), "float32").simulation.precision  # "float32"
    ```
    """
    if precision is None:
        return exp
    sim = dataclasses.replace(exp.simulation, precision=precision)
    return dataclasses.replace(exp, simulation=sim)
