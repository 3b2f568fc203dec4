"""`modecollapse flow`: one flow-VI experiment from an `Experiment` (docs/theory.md, §15)."""

import argparse
import csv
import dataclasses
import io
import itertools
import json
import os
import tempfile
import time
import tomllib
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._experiments._config import (
    DEFAULT_FLOW_TOML,
    ConfigError,
    Experiment,
    FlowConfig,
    flow_annealing_time,
    flow_steps,
    load_experiment,
    parse_experiment,
)
from .._experiments._io import to_json
from .._experiments._problem import NumericalFailure, build_problem, build_schedule
from .._experiments._sweep import SweepPlan, plan_sweep, run_sweep, summarise
from .._figures._flows import flow_figure, flow_sweep_figure
from .._flows._pushforward import required_lipschitz, tv_threshold
from .._flows._vi import LIPSCHITZ_TAIL, example_seeds, train_flows
from .._metrics import LABELS, Label, Thresholds, label_index, wilson_interval
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
        steps=flow_steps(exp),
        learning_rate=fc.learning_rate,
        particles=fc.particles,
        optimizer=fc.optimizer,
        records=fc.records,
        thresholds=thresholds,
        dtype=fc.precision,
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
            "steps": flow_steps(exp),
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


# --- a grid of flow cells against the theory (a [sweep] table) --------------------------------

_RECORD_PARTICLES = 1024
_FINAL_PARTICLES = 2048


def _run_key(point: Experiment, steps: int) -> str:
    """Cells that train identical flows share one run: without annealing, τ does not matter."""
    d = point.to_dict()
    if flow_annealing_time(point) == 0.0:
        d["annealing"] = {"kind": "none"}
    return json.dumps([d, steps], sort_keys=True, default=str)


def _batch_key(point: Experiment, steps: int) -> str:
    """Runs that can share one compiled, vmapped training: all but the schedule's numbers."""
    d = point.to_dict()
    d["annealing"] = {"kind": point.annealing.kind}
    return json.dumps([d, steps], sort_keys=True, default=str)


def flow_sweep_plan(raw: dict[str, Any]) -> SweepPlan:
    """The grid of a flow sweep: `plan_sweep` of the file's `[sweep]`, each point's theory t_end
    set to its flows' t_end (`flow_steps` · learning_rate). Jax-free.

    **Arguments:**

    - `raw`: the decoded TOML, with `[flow]` and `[sweep]` tables.

    **Returns:** a theory-route `SweepPlan` whose points carry the flows' `[flow]` table.

    **Example:**
    ```python
    plan = flow_sweep_plan(tomllib.load(open("examples/flow_theory/d8_linear_sgd.toml", "rb")))
    ```
    """
    plan = plan_sweep(raw, "theory")
    if plan.base.flow is None:
        raise ConfigError("`flow`: a flow sweep needs a [flow] table.")
    for name in plan.names:
        if name.startswith("flow.") or name == "seed":
            raise ConfigError(
                f"`sweep.parameters.{name}`: the flows' settings and seed are fixed within a flow "
                "sweep (common random numbers); write one file per value."
            )
    points = tuple(
        dataclasses.replace(p, t_end=flow_steps(p) * p.flow.learning_rate)  # type: ignore[union-attr]
        for p in plan.points
    )
    return dataclasses.replace(plan, points=points)


def _cell_flows(plan: SweepPlan, progress: bool) -> tuple[list[dict[str, Any]], float, int]:
    """Train every distinct flow run of the grid, batched by shape; per-cell flow records."""
    fc = plan.base.flow
    assert fc is not None
    seeds = plan.seeds
    steps = [flow_steps(p) for p in plan.points]
    runs: dict[str, int] = {}
    cell_run = [runs.setdefault(_run_key(p, n), len(runs)) for p, n in zip(plan.points, steps)]
    first = {r: cell_run.index(r) for r in range(len(runs))}
    batches: dict[str, list[int]] = {}
    for r, c in first.items():
        batches.setdefault(_batch_key(plan.points[c], steps[c]), []).append(r)
    per_run: dict[int, dict[str, Any]] = {}
    thresholds = Thresholds()
    t0 = time.perf_counter()
    flow_steps_total = 0
    for members in batches.values():
        cells = [first[r] for r in members]
        point = plan.points[cells[0]]
        dtype = jnp.dtype(fc.precision or point.simulation.precision)
        target = build_problem(point).target
        schedule = jax.tree.map(
            lambda *v: jnp.repeat(jnp.asarray(v, dtype), seeds),
            *[build_schedule(plan.points[c]) for c in cells],
        )
        batched = bool(jax.tree.leaves(schedule))  # "none" has no parameters to batch
        if not batched:
            schedule = build_schedule(point)
        run = train_flows(
            jr.key(point.seed),
            target,
            schedule,
            seeds=len(cells) * seeds,
            layers=fc.layers,
            width=fc.width,
            steps=steps[cells[0]],
            learning_rate=fc.learning_rate,
            particles=fc.particles,
            optimizer=fc.optimizer,
            records=fc.records,
            record_particles=_RECORD_PARTICLES,
            lipschitz=False,
            final_particles=_FINAL_PARTICLES,
            thresholds=thresholds,
            dtype=dtype,
            batched_schedule=batched,
            seed_ids=jnp.tile(jnp.arange(seeds), len(cells)),
            progress=progress,
        )
        flow_steps_total += len(cells) * seeds * steps[cells[0]]
        label = np.asarray(run.label).reshape(len(cells), seeds)
        stable = np.asarray(run.stable).reshape(len(cells), seeds)
        masses = np.asarray(run.masses).reshape(len(cells), seeds, *run.masses.shape[1:])
        kl = np.asarray(run.kl).reshape(len(cells), seeds)
        rho = np.asarray(target.weights)
        # the window of (NF8): which way its label changes went, loss of a mode or regain
        w0 = int(np.argmax(np.asarray(run.times) >= 0.8 * float(run.times[-1])))
        for i, r in enumerate(members):
            ok = label[i] != label_index(Label.failed)
            n_ok = int(ok.sum())
            collapsed = int((ok & (label[i] != label_index(Label.covered))).sum())
            lo, hi = wilson_interval(collapsed, n_ok)
            covered_t = np.all(masses[i] > thresholds.coverage * rho, axis=-1)  # (seeds, r)
            finite = np.isfinite(masses[i]).all(axis=(-2, -1))
            cov_final = (label[i] == label_index(Label.covered)) & np.isfinite(kl[i])
            per_run[r] = {
                "p_collapse": collapsed / n_ok if n_ok else None,
                "ci": [float(lo), float(hi)],
                "p_label": {
                    name: float((label[i] == k).sum() / max(n_ok, 1))
                    for k, name in enumerate(LABELS)
                    if name != "failed"
                },
                "labels": {name: int((label[i] == k).sum()) for k, name in enumerate(LABELS)},
                "stable_fraction": float(stable[i].mean()),
                "mean_final_kl": (
                    float(kl[i][np.isfinite(kl[i])].mean()) if np.isfinite(kl[i]).any() else None
                ),
                "times": _nested(run.times),
                "mean_masses": _nested(masses[i][finite].mean(0)) if finite.any() else None,
                # capacity: how well the flows that cover both modes fit (KL among them)
                "mean_final_kl_covered": (
                    float(np.mean(kl[i][cov_final])) if cov_final.any() else None
                ),
                "window_lost": int((finite & covered_t[:, w0] & ~covered_t[:, -1]).sum()),
                "window_gained": int((finite & ~covered_t[:, w0] & covered_t[:, -1]).sum()),
                "covered_fraction": _nested(covered_t[finite].mean(0)) if finite.any() else None,
            }
    seconds = time.perf_counter() - t0
    return [per_run[r] for r in cell_run], seconds, flow_steps_total


def run_flow_sweep(
    plan: SweepPlan, *, theory: bool = True, progress: bool = False
) -> tuple[dict[str, Any], bytes]:
    """Flows and the theory on every cell of a grid (docs/theory.md §15, flow cells).

    Every cell trains `[sweep] seeds` flows with the same seed ids (common random numbers: equal
    initialisations and particles across cells) for `flow_steps` steps, and, with `theory`, runs
    the summary-statistic ODE of the file's `[variational]` family on the same cell to the same
    t_end. Cells that train identical flows (β0 = 1 at several τ) share one run.

    **Arguments:**

    - `plan`: from `flow_sweep_plan`.
    - `theory`: also run the theory route on every cell.
    - `progress`: tqdm bars.

    **Returns:** `(result, png)`: the JSON record, with a list `cells` of {d, target, schedule,
    optimizer, beta0, tau, seeds, p_collapse, ci, p_collapse_theory, ci_theory,
    stable_fraction, ...}, and the figure P(collapse) against τ.

    **Example:**
    ```python
    result, png = run_flow_sweep(flow_sweep_plan(raw))
    [c["p_collapse"] for c in result["cells"]]
    ```
    """
    fc = plan.base.flow
    assert fc is not None
    flows, flow_seconds, total_steps = _cell_flows(plan, progress)
    theory_cells: list[dict[str, Any]] = [{} for _ in plan.points]
    theory_seconds = 0.0
    if theory:
        with tempfile.TemporaryDirectory() as work:
            t0 = time.perf_counter()
            summary = summarise(plan, run_sweep(plan, work, progress=progress))
            theory_seconds = time.perf_counter() - t0
        p = np.asarray(summary["p_collapse"], dtype=float).ravel()
        ci = np.asarray(summary["p_collapse_ci"], dtype=float).reshape(-1, 2)
        mech = {k: np.asarray(v, dtype=float).ravel() for k, v in summary["p_label"].items()}
        theory_cells = [
            {
                "p_collapse_theory": float(p[i]),
                "ci_theory": ci[i].tolist(),
                "p_label_theory": {k: float(v[i]) for k, v in mech.items()},
            }
            for i in range(len(plan.points))
        ]
    cells = []
    for point, combo, f, t in zip(
        plan.points, itertools.product(*plan.values), flows, theory_cells
    ):
        cells.append(
            {
                "d": point.dim,
                "target": list(point.target.weights),
                "schedule": point.annealing.kind,
                "optimizer": fc.optimizer,
                "learning_rate": fc.learning_rate,
                "beta0": point.annealing.beta0 if point.annealing.kind != "none" else 1.0,
                "tau": flow_annealing_time(point),
                "t_end": point.t_end,
                "steps": flow_steps(point),
                "seeds": plan.seeds,
                "point": dict(zip(plan.names, combo)),
                "p_collapse": f["p_collapse"],
                "ci": f["ci"],
                "p_collapse_theory": t.get("p_collapse_theory"),
                "ci_theory": t.get("ci_theory"),
                "stable_fraction": f["stable_fraction"],
                **{k: v for k, v in f.items() if k not in ("p_collapse", "ci", "stable_fraction")},
                **{k: v for k, v in t.items() if k not in ("p_collapse_theory", "ci_theory")},
            }
        )
    result = {
        "config": plan.base.to_dict(),
        "time_convention": TIME_CONVENTION,
        "collapse": "any label other than covered among non-failed runs; Wilson 95% (C7)",
        "stable": "eq. (NF8): the final missed-mode set holds over the last 20% of training",
        "cells": cells,
        "flow_seconds": flow_seconds,
        "theory_seconds": theory_seconds,
        "flow_steps": total_steps,
        "flow_steps_per_second": total_steps / flow_seconds if flow_seconds > 0 else None,
    }
    return result, flow_sweep_figure(result)


def cells_csv(cells: list[dict[str, Any]]) -> str:
    """The cells as CSV: one row per cell, the scalar columns of `run_flow_sweep`'s cells.

    **Example:** `open("cells.csv", "w").write(cells_csv(result["cells"]))`
    """
    columns = (
        "d target schedule optimizer learning_rate beta0 tau t_end steps seeds p_collapse ci_lo "
        "ci_hi p_collapse_theory ci_theory_lo ci_theory_hi stable_fraction mean_final_kl"
    ).split()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for c in cells:
        row = dict(c, target="/".join(f"{x:g}" for x in c["target"]))
        row["ci_lo"], row["ci_hi"] = c["ci"]
        row["ci_theory_lo"], row["ci_theory_hi"] = c["ci_theory"] or (None, None)
        w.writerow(["" if row.get(k) is None else row[k] for k in columns])
    return buf.getvalue()


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        "experiment TOML file with a [flow] table, and optionally a [sweep] grid of cells "
        "(default: a built-in d = 2 experiment)",
    )
    parser.add_argument(
        "--no-theory",
        dest="theory",
        action="store_false",
        help="with a [sweep] table: train the flows only, without the theory's cells",
    )


def _prepare(args: argparse.Namespace) -> Prepared:
    if args.config is None:
        raw = tomllib.loads(DEFAULT_FLOW_TOML)
        exp = parse_experiment(raw)
    else:
        exp = load_experiment(args.config)
        with open(args.config, "rb") as f:
            raw = tomllib.load(f)
    plan = None
    if exp.sweep is not None:
        if args.precision is not None:
            raw.setdefault("simulation", {})["precision"] = args.precision
        plan = flow_sweep_plan(raw)
        exp = plan.base
    check_out(args.out)
    # the flow job runs in float64 unless --precision says otherwise (the file's key is the
    # `build_problem` cast of the target, as before)
    return Prepared(exp, args.precision or "float64", plan)


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    if prepared.extra is not None:
        result, figure = run_flow_sweep(
            prepared.extra, theory=args.theory, progress=show_progress(args)
        )
        n = len(result["cells"])
        return Output(
            {
                "result.json": to_json(result),
                "cells.csv": cells_csv(result["cells"]).encode(),
                "flow_sweep.png": figure,
            },
            (
                f"wrote {os.path.join(args.out, 'result.json')}, cells.csv and flow_sweep.png "
                f"({n} cells, {result['flow_steps_per_second']:.0f} flow-steps/s)",
            ),
        )
    result, figure = run_flow_experiment(prepared.experiment, progress=show_progress(args))  # type: ignore[arg-type]
    return Output(
        {"result.json": to_json(result), "flow.png": figure},
        (f"wrote {os.path.join(args.out, 'result.json')} and flow.png",),
    )


COMMAND = Command(
    help="RealNVP normalizing-flow VI on the same target, under the same annealing",
    description="Train [flow] seeds RealNVP flows by reverse-KL VI (time t = step * "
    "learning_rate) on the experiment's target and annealing. Writes DIR/result.json (loss "
    "curves, mode-mass trajectories, Lipschitz estimates, outcome block) and DIR/flow.png. "
    "With a [sweep] table, trains [sweep] seeds flows on every grid cell (common random "
    "numbers) and runs the theory on the same cells: DIR/result.json (a list of cells), "
    "DIR/cells.csv and DIR/flow_sweep.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse flow`."""
