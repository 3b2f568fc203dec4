"""`modecollapse config --show [COMMAND]`: print a command's built-in experiment as commented TOML.

The printed file is the starting point for an experiment: every key, tuning keys with their
defaults, one comment per key (`experiment_toml`), and it parses back to the same `Experiment`.
"""

import argparse
import tomllib

from .._experiments._config import (
    DEFAULT_FLOW_TOML,
    DEFAULT_SWEEP_TOML,
    DEFAULT_TOML,
    ConfigError,
    Experiment,
    experiment_toml,
    parse_experiment,
)
from ._command import Command, Output, Prepared
from ._design import DEFAULT_DESIGN_TOML

BUILTIN_TOML = {
    "run": DEFAULT_TOML,
    "compare": DEFAULT_TOML,
    "sweep": DEFAULT_SWEEP_TOML,
    "flow": DEFAULT_FLOW_TOML,
    "design": DEFAULT_DESIGN_TOML,
}
"""The built-in experiment file of each command that reads one (used when `--config` is absent)."""


def builtin_experiment(command: str) -> Experiment:
    """The experiment `modecollapse COMMAND` runs without `--config`.

    **Arguments:**

    - `command`: one of `BUILTIN_TOML` (run, compare, sweep, flow, design).

    **Returns:** the parsed `Experiment`.

    **Example:**
    ```python
    builtin_experiment("flow").dim  # 2
    ```
    """
    return parse_experiment(tomllib.loads(BUILTIN_TOML[command]))


def show_config(command: str) -> str:
    """The built-in experiment of `command` as commented TOML (see `experiment_toml`).

    **Arguments:**

    - `command`: one of `BUILTIN_TOML`.

    **Returns:** the TOML text; `parse_experiment(tomllib.loads(text))` equals
    `builtin_experiment(command)`.

    **Example:**
    ```python
    print(show_config("sweep"))
    ```
    """
    about = [
        line[1:].strip() for line in BUILTIN_TOML[command].splitlines() if line.startswith("#")
    ]
    header = "\n".join(
        [
            f"The built-in experiment of `modecollapse {command}` (used without --config).",
            "Save it, edit it, and pass it with --config FILE. Keys marked (default ...) may be",
            "left out; a commented-out key is unset.",
            *about,
        ]
    )
    return experiment_toml(builtin_experiment(command), header)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show",
        nargs="?",
        const="run",
        choices=tuple(BUILTIN_TOML),
        metavar="COMMAND",
        help="print the built-in experiment of COMMAND (run, compare, sweep, flow, design; "
        "default run) as commented TOML",
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    if args.show is None:
        raise ConfigError("`config`: give --show [COMMAND] to print a built-in experiment.")
    return Prepared(builtin_experiment(args.show))


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    return Output(lines=(show_config(args.show).rstrip("\n"),))


COMMAND = Command(
    help="print a command's built-in experiment as a commented TOML file",
    description="Print the experiment that COMMAND runs without --config, as commented TOML "
    "with every key (tuning keys at their defaults); it parses back to the same experiment.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
    uses_jax=False,
)
"""`modecollapse config`."""
