"""Phase diagrams of mode collapse (theory route) with full-route validation.

(a) fixed weights: P(mean alignment) against the initial norm c and the target weight ρ_1;
(b) trainable weights, initial norm 8: P(vanishing weight) against η_a/η_m and ρ_1;
(c) K = 3 components on a J = 3 target: how often each outcome occurs, against c.

Each diagram runs the theory route with the exact initial-law sampler at d = 1000 (2000 seeds per
cell by default), then the full d-dimensional flow at a 2×2 sub-grid of cells (300 seeds), and
checks that the Wilson intervals overlap. Writes docs/figures/phase_{a,b,c}.png and
benchmarks/results/phase_diagrams.json.

    .venv/bin/python scripts/phase_diagrams.py [--seeds 2000] [--full-seeds 300] [--only a,b,c]
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import modecollapse as mc  # noqa: E402
from modecollapse.figures import phase_figure, png  # noqa: E402

mc.one_cpu_device_per_core()  # as `modecollapse sweep` does: chunks sharded over every core
mc.prefer_wide_cpu_vectors()  # 512-bit vectors where the CPU has them

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 1000


def _example(name: str) -> dict:
    """A committed experiment file under examples/ (its [sweep] table is the diagram's grid)."""
    with open(os.path.join(ROOT, "examples", f"phase_{name}.toml"), "rb") as f:
        raw = tomllib.load(f)
    assert raw["dim"] == DIM, f"examples/phase_{name}.toml: dim {raw['dim']} != {DIM}"
    return raw


def _spec(name: str, title: str, validation: dict, mechanism: str) -> dict:
    raw = _example(name)
    return dict(
        title=title,
        base=raw,
        grid=raw["sweep"]["parameters"],
        validation=validation,
        mechanism=mechanism,
    )


DIAGRAMS = {
    "a": _spec(
        "a",
        "(a) fixed weights: P(mean alignment)",
        {"variational.init.norm": [0.5, 4.0], "target.weights": [[0.5, 0.5], [0.8, 0.2]]},
        "mean_alignment",
    ),
    "b": _spec(
        "b",
        "(b) trainable weights, initial norm 8: P(vanishing weight)",
        {
            "variational.learning_rates.weights": [0.1, 3.0],
            "target.weights": [[0.5, 0.5], [0.8, 0.2]],
        },
        "vanishing_weight",
    ),
    "c": _spec(
        "c",
        "(c) K = 3 on J = 3: outcomes",
        {"variational.init.norm": [0.5, 1.0, 2.0, 8.0]},
        "mean_alignment",
    ),
}


def _sweep(base: dict, grid: dict, seeds: int, route: str, work: str, chunk: int = 1000):
    raw = copy.deepcopy(base)
    raw["sweep"] = {"seeds": seeds, "chunk": chunk, "parameters": grid}
    plan = mc.plan_sweep(raw, route)
    shutil.rmtree(work, ignore_errors=True)
    results = mc.run_sweep(plan, work, progress=sys.stderr.isatty())
    return mc.summarise(plan, results)


def _cell(summary: dict, index: tuple[int, ...], key: str):
    node = summary[key]
    for i in index:
        node = node[i]
    return node


def _sub_summary(summary: dict, grid: dict, sub: dict):
    """The theory summary restricted to the sub-grid `sub` of `grid`, or None if it is not one.

    Every grid point uses the same seeds (common random numbers), so a cell of the diagram's
    sweep is exactly the theory sweep of that cell: no need to run it again.
    """
    if list(sub) != list(grid) or any(v not in grid[k] for k, vs in sub.items() for v in vs):
        return None
    picks = [[grid[k].index(v) for v in vs] for k, vs in sub.items()]

    def take(node, depth=0):
        if depth == len(picks):
            return node
        return [take(node[i], depth + 1) for i in picks[depth]]

    out = {k: take(summary[k]) for k in ("p_collapse", "p_collapse_ci")}
    out["p_label"] = {k: take(v) for k, v in summary["p_label"].items()}
    out["trajectories_per_second"] = summary["trajectories_per_second"]
    return out


def validate(
    name: str, theory_seeds: int, full_seeds: int, work: str, theory_summary: dict | None = None
) -> list[dict]:
    """Theory against the full flow at the validation cells: P(collapse) and P(mechanism)."""
    spec = DIAGRAMS[name]
    grid = spec["validation"]
    theory = None
    if theory_summary is not None:
        theory = _sub_summary(theory_summary, spec["grid"], grid)
    if theory is None:
        theory = _sweep(spec["base"], grid, theory_seeds, "theory", os.path.join(work, "vt"))
    full = _sweep(spec["base"], grid, full_seeds, "full", os.path.join(work, "vf"), chunk=300)
    rows = []
    for index in np.ndindex(*[len(v) for v in grid.values()]):
        cell = {k: v[i] for (k, v), i in zip(grid.items(), index)}
        row = {"cell": cell, "theory_seeds": theory_seeds, "full_seeds": full_seeds}
        for what, key in (("p_collapse", "p_collapse"), ("p_mechanism", spec["mechanism"])):
            if what == "p_collapse":
                pt, pf = _cell(theory, index, key), _cell(full, index, key)
                ct, cf = _cell(theory, index, "p_collapse_ci"), _cell(full, index, "p_collapse_ci")
            else:
                pt = _cell(theory["p_label"], index, key)
                pf = _cell(full["p_label"], index, key)
                ct = _wilson_from(pt, theory_seeds)
                cf = _wilson_from(pf, full_seeds)
            row[what] = {
                "theory": pt,
                "theory_ci": ct,
                "full": pf,
                "full_ci": cf,
                "overlap": bool(ct[0] <= cf[1] and cf[0] <= ct[1]),
            }
        rows.append(row)
    row_t = {
        "theory_traj_per_s": theory["trajectories_per_second"],
        "full_traj_per_s": full["trajectories_per_second"],
    }
    return rows, row_t


def _wilson_from(p: float, n: int):
    from modecollapse.metrics import wilson_interval

    lo, hi = wilson_interval(np.array(round(p * n)), np.array(n))
    return [float(lo), float(hi)]


def _outcome_figure(summary: dict, title: str) -> bytes:
    ((name, values),) = summary["parameters"].items()
    labels = ["covered", "mean_alignment", "vanishing_weight", "other"]
    x = np.arange(len(values))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bottom = np.zeros(len(values))
    for k, label in enumerate(labels):
        p = np.array(summary["p_label"][label], float)
        ax.bar(x, p, bottom=bottom, color=f"C{k}", label=label.replace("_", " "))
        bottom += p
    ci = np.array(summary["p_collapse_ci"], float)
    pc = np.array(summary["p_collapse"], float)
    ax.errorbar(
        x,
        1 - pc,
        yerr=[(1 - pc) - (1 - ci[:, 1]), (1 - ci[:, 0]) - (1 - pc)],
        fmt="none",
        ecolor="k",
        capsize=4,
        label="Wilson 95% of P(covered)",
    )
    ax.set_xticks(x, [f"{v:g}" for v in values])
    ax.set_xlabel(name)
    ax.set_ylabel("fraction of seeds")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"{title}, {summary['seeds']} seeds per bar")
    return png(fig)


def _write_figure(name: str, summary: dict) -> None:
    spec = DIAGRAMS[name]
    if name == "c":
        png = _outcome_figure(summary, spec["title"])
    else:
        png = phase_figure({**summary, "title": spec["title"]})
    with open(os.path.join(ROOT, f"docs/figures/phase_{name}.png"), "wb") as f:
        f.write(png)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--full-seeds", type=int, default=300)
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument(
        "--replot", action="store_true", help="redraw the figures from the JSON report only"
    )
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks/results/phase_diagrams.json")
    )
    args = parser.parse_args()
    report = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            report = json.load(f)
    if args.replot:
        for name in args.only.split(","):
            _write_figure(name, {**report[name], "route": "theory"})
        return
    work = tempfile.mkdtemp(prefix="modecollapse-phase-")
    for name in args.only.split(","):
        spec = DIAGRAMS[name]
        start = time.perf_counter()
        print(f"diagram {name}: theory sweep ...", file=sys.stderr, flush=True)
        summary = _sweep(spec["base"], spec["grid"], args.seeds, "theory", os.path.join(work, name))
        print(f"diagram {name}: full-route validation ...", file=sys.stderr, flush=True)
        rows, speed = validate(
            name, args.seeds, args.full_seeds, os.path.join(work, name + "v"), summary
        )
        _write_figure(name, summary)
        report[name] = {
            "title": spec["title"],
            "dim": DIM,
            "parameters": summary["parameters"],
            "seeds": args.seeds,
            "p_collapse": summary["p_collapse"],
            "p_collapse_ci": summary["p_collapse_ci"],
            "p_label": summary["p_label"],
            "labels": summary["labels"],
            "failed": summary["failed"],
            "theory_trajectories_per_second": summary["trajectories_per_second"],
            "validation": rows,
            "validation_speed": speed,
            "all_overlap": all(
                r[w]["overlap"] for r in rows for w in ("p_collapse", "p_mechanism")
            ),
            "wall_seconds": time.perf_counter() - start,
            "config": summary["config"],
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(
            f"diagram {name}: done in {report[name]['wall_seconds']:.0f} s; validation overlap: "
            f"{report[name]['all_overlap']}",
            file=sys.stderr,
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
