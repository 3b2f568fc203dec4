"""`modecollapse flow`: one flow-VI experiment from an `Experiment` (docs/theory.md, §15)."""

import argparse
import os
import tomllib
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._experiments._config import (
    DEFAULT_FLOW_TOML,
    Experiment,
    FlowConfig,
    load_experiment,
    parse_experiment,
)
from .._experiments._io import to_json
from .._experiments._problem import NumericalFailure, build_problem, build_schedule
from .._figures._flows import flow_figure
from .._flows._pushforward import required_lipschitz, tv_threshold
from .._flows._vi import LIPSCHITZ_TAIL, example_seeds, train_flows
from .._metrics import Thresholds
from ._command import Command, Output, Prepared, add_common_arguments, check_out, show_progress

TIME_CONVENTION = (
    "t_i = i * learning_rate (eq. (NF6)); beta_i = beta(t_i); the annealing duration is in these "
    "units"
)


def _density_grid(flow, means: np.ndarray, n: int = 120):
    span = np.abs(means).max() + 3.5
    g = np.linspace(-span, span, n)
    gx, gy = np.meshgrid(g, g)
    pts = jnp.asarray(
        np.stack([gx, gy], -1), dtype=flow.layers[0].conditioner.layers[0].weight.dtype
    )
    return gx, gy, np.asarray(flow.log_prob(pts))


def _nested(a) -> Any:
    return np.asarray(a, dtype=float).tolist()


def run_flow_experiment(exp: Experiment, progress: bool = False) -> tuple[dict[str, Any], bytes]:
    """Train `[flow] seeds` RealNVP flows on the experiment's target under its annealing.

    **Arguments:**

    - `exp`: a validated experiment (a missing `[flow]` table means `FlowConfig()` defaults).
    - `progress`: a tqdm bar.

    **Returns:** `(result, png)`: the JSON record (loss curves, mode-mass trajectories, Lipschitz
    estimates, the `outcome` block, config) and the figure.

    **Example:**
    ```python
    result, png = run_flow_experiment(parse_experiment(tomllib.loads(DEFAULT_FLOW_TOML)))
    result["outcome"]["labels"]
    ```
    """
    fc = exp.flow or FlowConfig()
    problem = build_problem(exp)
    target = problem.target
    schedule = build_schedule(exp)
    thresholds = Thresholds()
    run = train_flows(
        jr.key(exp.seed),
        target,
        schedule,
        seeds=fc.seeds,
        layers=fc.layers,
        width=fc.width,
        steps=fc.steps,
        learning_rate=fc.learning_rate,
        particles=fc.particles,
        optimizer=fc.optimizer,
        records=fc.records,
        thresholds=thresholds,
        progress=progress,
    )
    outcome = run.outcome(thresholds)
    if outcome["labels"].get("failed", 0) == fc.seeds:  # one failed seed is an outcome; all is not
        raise NumericalFailure(
            f"every one of the {fc.seeds} flows failed (non-finite loss, masses or KL)."
        )
    flow0 = jax.tree.map(lambda a: a[0] if isinstance(a, jax.Array) else a, run.flows)
    x0 = np.asarray(flow0.sample(jr.key(exp.seed + 1), (2000,)))
    target_x = np.asarray(target.sample(jr.key(exp.seed + 2), (2000,)))
    means = np.asarray(target.means)
    push = []
    for s in range(fc.seeds):
        flow = jax.tree.map(lambda a: a[s] if isinstance(a, jax.Array) else a, run.flows)
        xs = flow.sample(jr.fold_in(jr.key(exp.seed + 3), s), (4096,))
        tv = float(run.tv[s])
        push.append(
            {
                "tv": tv,
                "L_required": float(required_lipschitz(xs, target)),
                "L_threshold": tv_threshold(target, tv) if np.isfinite(tv) else None,
                "L_lower": float(run.lipschitz_lower[s, -1]),
                "L_upper": float(run.lipschitz_upper[s, -1]),
            }
        )
    result = {
        "config": exp.to_dict(),
        "flow": {
            "layers": fc.layers,
            "width": fc.width,
            "steps": fc.steps,
            "learning_rate": fc.learning_rate,
            "particles": fc.particles,
            "optimizer": fc.optimizer,
            "seeds": fc.seeds,
            "records": fc.records,
        },
        "time_convention": TIME_CONVENTION,
        "target": {"means": _nested(means), "weights": _nested(target.weights)},
        "times": _nested(run.times),
        "beta": _nested(run.beta),
        "loss": _nested(run.loss),
        "masses": _nested(run.masses),
        "lipschitz": {
            "lower": _nested(run.lipschitz_lower),
            "upper": _nested(run.lipschitz_upper),
            "upper_ball_tail": LIPSCHITZ_TAIL,
        },
        "pushforward": push,
        "outcome": outcome,
        "examples": example_seeds(run.label),
    }
    density = _density_grid(flow0, means) if exp.dim == 2 else None
    return result, flow_figure(result, x0, density, target_x)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser, "experiment TOML file with a [flow] table (default: a built-in d = 2 experiment)"
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    if args.config is None:
        exp = parse_experiment(tomllib.loads(DEFAULT_FLOW_TOML))
    else:
        exp = load_experiment(args.config)
    check_out(args.out)
    # the flow job runs in float64 unless --precision says otherwise (the file's key is the
    # `build_problem` cast of the target, as before)
    return Prepared(exp, args.precision or "float64")


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    result, figure = run_flow_experiment(prepared.experiment, progress=show_progress(args))  # type: ignore[arg-type]
    return Output(
        {"result.json": to_json(result), "flow.png": figure},
        (f"wrote {os.path.join(args.out, 'result.json')} and flow.png",),
    )


COMMAND = Command(
    help="RealNVP normalizing-flow VI on the same target, under the same annealing",
    description="Train [flow] seeds RealNVP flows by reverse-KL VI (time t = step * "
    "learning_rate) on the experiment's target and annealing. Writes DIR/result.json (loss "
    "curves, mode-mass trajectories, Lipschitz estimates, outcome block) and DIR/flow.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse flow`."""
