"""Mode collapse against the Rényi order α (theory route), with full-route validation.

(a) fixed weights, initial norm 1: P(mean alignment) against α and the target weight ρ_1;
(b) trainable weights (η_a = η_m), initial norm 8: P(vanishing weight) against α and ρ_1.

Each diagram runs the theory route with the exact initial-law sampler at d = 1000 (2000 seeds per
cell by default, examples/renyi_{a,b}.toml) for α < 1, and the same experiment under reverse KL
for α = 1 (the same seeds: common random numbers). The full d-dimensional flow then runs at a
2×2 sub-grid (300 seeds) and the Wilson intervals must overlap. `--only side` measures how the
α-dependence moves with the separation |μ| and with d; `--only pareto` compares avoiding collapse
by annealing (reverse KL, linear schedules of duration τ) with lowering α, and the final fit
KL(q‖p) each leaves; `--only bias` runs the VR-bound particle route at several n against the
exact theory. Writes docs/figures/renyi_alpha.png, docs/figures/renyi_pareto.png and
benchmarks/results/renyi_phase.json.

    .venv/bin/python scripts/renyi_phase.py [--seeds 2000] [--full-seeds 300]
        [--only a,b,side,pareto,bias]
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
from modecollapse.figures import png  # noqa: E402
from modecollapse.metrics import wilson_interval  # noqa: E402

mc.one_cpu_device_per_core()  # as `modecollapse sweep` does: chunks sharded over every core
mc.prefer_wide_cpu_vectors()  # 512-bit vectors where the CPU has them

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MECHANISM = {"a": "mean_alignment", "b": "vanishing_weight"}
VALIDATION = {"objective.alpha": [0.2, 0.5], "target.weights": [[0.6, 0.4], [0.8, 0.2]]}


def _example(name: str) -> dict:
    with open(os.path.join(ROOT, "examples", f"renyi_{name}.toml"), "rb") as f:
        return tomllib.load(f)


def _reverse(raw: dict) -> dict:
    """The same experiment under reverse KL (α = 1)."""
    out = copy.deepcopy(raw)
    out.pop("objective", None)
    return out


def _sweep(raw: dict, grid: dict, seeds: int, route: str, work: str, chunk: int = 500) -> dict:
    raw = copy.deepcopy(raw)
    raw["sweep"] = {"seeds": seeds, "chunk": chunk, "parameters": grid}
    plan = mc.plan_sweep(raw, route)
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    results = mc.run_sweep(plan, work, progress=sys.stderr.isatty())
    out = mc.summarise(plan, results)
    out["wall_seconds"] = time.perf_counter() - start
    return out


def _wilson(p: float, n: int) -> list[float]:
    lo, hi = wilson_interval(np.array(round(p * n)), np.array(n))
    return [float(lo), float(hi)]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def diagram(name: str, seeds: int, full_seeds: int, work: str) -> dict:
    """One α-diagram: the Rényi cells, the reverse-KL column, the full-route validation."""
    raw = _example(name)
    grid = raw["sweep"]["parameters"]
    mech = MECHANISM[name]
    _log(f"diagram {name}: Rényi theory sweep over {grid} ...")
    renyi = _sweep(raw, grid, seeds, "theory", os.path.join(work, name + "r"))
    _log(f"diagram {name}: reverse-KL column ...")
    rho = {"target.weights": grid["target.weights"]}
    kl = _sweep(_reverse(raw), rho, seeds, "theory", os.path.join(work, name + "k"), 1000)
    alphas = list(grid["objective.alpha"]) + [1.0]
    rows = []
    for j, weights in enumerate(grid["target.weights"]):
        for i, alpha in enumerate(alphas):
            src, idx = (renyi, (i, j)) if alpha < 1.0 else (kl, (j,))

            def cell(node, idx=idx):
                for k in idx:
                    node = node[k]
                return node

            rows.append(
                {
                    "alpha": alpha,
                    "target_weights": weights,
                    "seeds": seeds,
                    "p_collapse": cell(src["p_collapse"]),
                    "ci": cell(src["p_collapse_ci"]),
                    "p_mechanism": cell(src["p_label"][mech]),
                    "p_label": {k: cell(v) for k, v in src["p_label"].items()},
                }
            )
    _log(f"diagram {name}: full-route validation at {VALIDATION} ...")
    full = _sweep(raw, VALIDATION, full_seeds, "full", os.path.join(work, name + "f"), 300)
    checks = []
    for i, alpha in enumerate(VALIDATION["objective.alpha"]):
        for j, weights in enumerate(VALIDATION["target.weights"]):
            t = next(r for r in rows if r["alpha"] == alpha and r["target_weights"] == weights)
            pf = full["p_collapse"][i][j]
            cf = full["p_collapse_ci"][i][j]
            mf = full["p_label"][mech][i][j]
            ct_m, cf_m = _wilson(t["p_mechanism"], seeds), _wilson(mf, full_seeds)
            checks.append(
                {
                    "alpha": alpha,
                    "target_weights": weights,
                    "theory": t["p_collapse"],
                    "theory_ci": t["ci"],
                    "full": pf,
                    "full_ci": cf,
                    "theory_mechanism": t["p_mechanism"],
                    "full_mechanism": mf,
                    "overlap": bool(t["ci"][0] <= cf[1] and cf[0] <= t["ci"][1]),
                    "overlap_mechanism": bool(ct_m[0] <= cf_m[1] and cf_m[0] <= ct_m[1]),
                }
            )
    return {
        "title": raw_title(name),
        "mechanism": mech,
        "dim": raw["dim"],
        "cells": rows,
        "validation": checks,
        "full_seeds": full_seeds,
        "all_overlap": all(c["overlap"] and c["overlap_mechanism"] for c in checks),
        "failed_theory": renyi["failed"],
        "failed_full": full["failed"],
        "theory_trajectories_per_second": renyi["trajectories_per_second"],
        "full_trajectories_per_second": full["trajectories_per_second"],
        "wall_seconds": renyi["wall_seconds"] + kl["wall_seconds"] + full["wall_seconds"],
        "config": renyi["config"],
    }


def raw_title(name: str) -> str:
    with open(os.path.join(ROOT, "examples", f"renyi_{name}.toml")) as f:
        first = f.readline()
    return first.split("phase diagram", 1)[-1].split("(docs", 1)[0].strip()


def side(seeds: int, work: str) -> dict:
    """How the α-dependence of diagram (a) moves with the separation |μ| and with d."""
    raw = _example("a")
    alphas = [0.3, 0.7]
    grid = {"objective.alpha": alphas, "target.weights": [[0.6, 0.4]]}

    def row(r: dict, name: str) -> dict:
        s = _sweep(r, grid, seeds, "theory", os.path.join(work, name))
        k = _sweep(_reverse(r), {"target.weights": [[0.6, 0.4]]}, seeds, "theory", work + "k")
        p = [s["p_collapse"][i][0] for i in range(len(alphas))] + [k["p_collapse"][0]]
        return {"alpha": alphas + [1.0], "p_collapse": p}

    out = {"seeds": seeds, "separation": [], "dim": []}
    for norm in (2.0, 5.0):  # |μ| = 3 is diagram (a) itself
        r = copy.deepcopy(raw)
        r["target"]["means"]["norm"] = norm
        out["separation"].append({"norm": norm, **row(r, f"s{norm}")})
    for dim in (10, 100):  # d = 1000 is diagram (a) itself
        r = copy.deepcopy(raw)
        r["dim"] = dim
        out["dim"].append({"dim": dim, **row(r, f"d{dim}")})
    return out


def _runs(raw: dict, grid: dict, seeds: int, work: str) -> list[dict]:
    """P(collapse) and the final KL(q‖p) (the `kl` metric) at every point of a theory sweep."""
    raw = copy.deepcopy(raw)
    raw["sweep"] = {"seeds": seeds, "chunk": 500, "parameters": grid}
    plan = mc.plan_sweep(raw, "theory")
    shutil.rmtree(work, ignore_errors=True)
    results = mc.run_sweep(plan, work, progress=sys.stderr.isatty())
    summary = mc.summarise(plan, results)
    kl = results["kl"].reshape(len(plan.points), seeds)
    ok = results["status"].reshape(len(plan.points), seeds) == 0
    p = np.ravel(summary["p_collapse"])
    ci = np.reshape(summary["p_collapse_ci"], (-1, 2))
    return [
        {
            "p_collapse": float(p[g]),
            "ci": [float(c) for c in ci[g]],
            "final_kl_median": float(np.median(kl[g][ok[g]])),
            "final_kl_mean": float(np.mean(kl[g][ok[g]])),
            "failed": int((~ok[g]).sum()),
        }
        for g in range(len(plan.points))
    ]


def pareto(seeds: int, work: str) -> dict:
    """Annealing (reverse KL, linear β from 0.1 over τ) against lowering α, on diagram (a)'s
    setting at ρ_1 = 0.6: P(collapse) and the final KL(q‖p) each leaves."""
    raw = _example("a")
    raw["target"]["weights"] = [0.6, 0.4]
    alphas = [0.1, 0.2, 0.35, 0.5, 0.7]
    taus = [10.0, 25.0, 50.0, 100.0, 200.0]
    _log("pareto: Rényi α ...")
    renyi = _runs(raw, {"objective.alpha": alphas}, seeds, os.path.join(work, "pr"))
    kl = _reverse(raw)
    _log("pareto: reverse KL without annealing ...")
    none = _runs(kl, {"target.scale": [1.0]}, seeds, os.path.join(work, "p0"))
    kl["annealing"] = {"kind": "linear", "beta0": 0.1, "duration": 10.0}
    kl["t_end"] = 300.0
    _log("pareto: annealing τ ...")
    annealed = _runs(kl, {"annealing.duration": taus}, seeds, os.path.join(work, "pa"))
    return {
        "seeds": seeds,
        "target_weights": [0.6, 0.4],
        "annealing_beta0": 0.1,
        "annealing_t_end": 300.0,
        "annealing": [{"tau": 0.0, **none[0]}] + [{"tau": t, **r} for t, r in zip(taus, annealed)],
        "renyi": [{"alpha": a, **r} for a, r in zip(alphas, renyi)] + [{"alpha": 1.0, **none[0]}],
    }


def particle_bias(seeds: int, work: str) -> dict:
    """The VR-bound particle route (VR1) against the exact theory: P(collapse) against n.

    Diagram (a)'s setting at α = 0.5, ρ_1 = 0.6, d = 100: the full flow with `mc-fixed` particles
    (n per component, drawn once per trajectory) for several n, and the theory route (exact).
    """
    raw = _example("a")
    raw["dim"] = 100
    raw["target"]["weights"] = [0.6, 0.4]
    raw["objective"]["alpha"] = 0.5
    grid = {"target.weights": [[0.6, 0.4]]}
    theory = _sweep(raw, grid, seeds, "theory", os.path.join(work, "bt"))
    rows = [
        {
            "n": None,
            "route": "theory",
            "p_collapse": theory["p_collapse"][0],
            "ci": theory["p_collapse_ci"][0],
        }
    ]
    for n in (16, 128, 1024):
        r = copy.deepcopy(raw)
        r["simulation"].update(estimator="mc-fixed", particles=n)
        _log(f"particle bias: n = {n} ...")
        full = _sweep(r, grid, seeds, "full", os.path.join(work, f"b{n}"), chunk=seeds)
        rows.append(
            {
                "n": n,
                "route": "full mc-fixed",
                "p_collapse": full["p_collapse"][0],
                "ci": full["p_collapse_ci"][0],
                "failed": full["failed"],
            }
        )
    return {"seeds": seeds, "dim": 100, "alpha": 0.5, "target_weights": [0.6, 0.4], "rows": rows}


def alpha_figure(report: dict) -> bytes:
    names = [n for n in ("a", "b") if n in report]
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        rep = report[name]
        for j, weights in enumerate(sorted({tuple(c["target_weights"]) for c in rep["cells"]})):
            cells = sorted(
                (c for c in rep["cells"] if tuple(c["target_weights"]) == weights),
                key=lambda c: c["alpha"],
            )
            a = np.array([c["alpha"] for c in cells])
            p = np.array([c["p_collapse"] for c in cells])
            ci = np.array([c["ci"] for c in cells])
            m = np.array([c["p_mechanism"] for c in cells])
            ax.plot(a, p, "o-", color=f"C{j}", label=f"P(collapse), ρ₁ = {weights[0]:g}")
            ax.fill_between(a, ci[:, 0], ci[:, 1], color=f"C{j}", alpha=0.2)
            ax.plot(a, m, "s--", color=f"C{j}", alpha=0.7, label=f"P({rep['mechanism']})")
        for v in rep["validation"]:
            j = sorted({tuple(c["target_weights"]) for c in rep["cells"]}).index(
                tuple(v["target_weights"])
            )
            ax.errorbar(
                v["alpha"],
                v["full"],
                yerr=[
                    [max(0.0, v["full"] - v["full_ci"][0])],
                    [max(0.0, v["full_ci"][1] - v["full"])],
                ],
                fmt="D",
                color=f"C{j}",
                mfc="white",
                capsize=3,
            )
        ax.set_xlabel("Rényi order α (α = 1: reverse KL)")
        ax.set_ylabel("probability over seeds")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{rep['title']}\n{rep['cells'][0]['seeds']} seeds; ◇ full route", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def pareto_figure(rep: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    for key, label, tag in (("annealing", "annealing τ", "tau"), ("renyi", "Rényi α", "alpha")):
        rows = rep[key]
        x = [r["p_collapse"] for r in rows]
        y = [r["final_kl_mean"] for r in rows]
        ax.plot(x, y, "o-", label=label)
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(
                f"{r[tag]:g}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlabel("P(collapse)")
    ax.set_ylabel("mean final KL(q‖p) over seeds")
    ax.set_yscale("log")
    ax.set_title(
        f"Avoiding collapse: annealing vs lowering α ({rep['seeds']} seeds each)", fontsize=9
    )
    ax.legend()
    fig.tight_layout()
    return png(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--full-seeds", type=int, default=300)
    parser.add_argument("--side-seeds", type=int, default=300)
    parser.add_argument("--pareto-seeds", type=int, default=500)
    parser.add_argument("--bias-seeds", type=int, default=200)
    parser.add_argument("--only", default="a,b,side,pareto,bias")
    parser.add_argument("--replot", action="store_true", help="redraw the figures only")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/renyi_phase.json"))
    args = parser.parse_args()
    report = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            report = json.load(f)
    work = tempfile.mkdtemp(prefix="modecollapse-renyi-")
    if not args.replot:
        for part in args.only.split(","):
            start = time.perf_counter()
            if part in ("a", "b"):
                report[part] = diagram(part, args.seeds, args.full_seeds, work)
            elif part == "side":
                report["side"] = side(args.side_seeds, work)
            elif part == "pareto":
                report["pareto"] = pareto(args.pareto_seeds, work)
            elif part == "bias":
                report["bias"] = particle_bias(args.bias_seeds, work)
            report[part]["wall_seconds"] = time.perf_counter() - start
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)
            _log(f"{part}: done in {report[part]['wall_seconds']:.0f} s")
    if "a" in report or "b" in report:
        with open(os.path.join(ROOT, "docs/figures/renyi_alpha.png"), "wb") as f:
            f.write(alpha_figure(report))
    if "pareto" in report:
        with open(os.path.join(ROOT, "docs/figures/renyi_pareto.png"), "wb") as f:
            f.write(pareto_figure(report["pareto"]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
