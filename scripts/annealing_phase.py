"""Annealing phase diagrams: P(collapse) against (β0, duration) and the schedule family.

Target: J = 2 antipodal modes ±μ, |μ| = 5, σ = 1 (fixed separation as d grows), d = 1000.
Family: K = 2, random initialisation m_k = 3 g_k/√d, equal initial weights, trainable means and
weights (η_m = η_a = 1), adiabatic scale s(t)² = σ²/β(t). The horizon is t_end = 300.

- theory route (exact initial law, 2000 seeds per cell by default) for the linear schedule at
  ρ = ½ and ρ = 0.7, and for the geometric and exponential schedules at ρ = ½ (the exponential
  schedule's "duration" is the time to 95% of its rise, rate = 3/duration);
- the sharp formula (modecollapse.p_collapse_formula) at every cell: max abs error against the
  Monte Carlo and where it breaks down;
- full d-dimensional flow at 6 cells (500 seeds) with Wilson intervals;
- the Pareto front of annealing time against P(collapse).

Writes docs/figures/annealing_{phase,families,pareto,formula}.png and
benchmarks/results/annealing.json.

    .venv/bin/python scripts/annealing_phase.py [--seeds 2000] [--full-seeds 500] [--replot]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib

import jax

jax.config.update("jax_enable_x64", True)

import warnings  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import modecollapse as mc  # noqa: E402
from modecollapse.figures import png  # noqa: E402
from modecollapse.jobs import formula_arguments  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
DIAGRAMS = ("linear_rho0.5", "linear_rho0.7", "geometric_rho0.5", "exponential_rho0.5")
FULL_CELLS = {"beta0": [0.01, 0.1, 1.0], "duration": [5.0, 50.0]}


def _example(name: str) -> dict:
    """The committed experiment file examples/annealing_NAME.toml (its [sweep] is the grid)."""
    with open(os.path.join(ROOT, "examples", f"annealing_{name}.toml"), "rb") as f:
        return tomllib.load(f)


def _grid(raw: dict) -> tuple[list[float], list[float]]:
    """(β0 values, annealing times τ) of an example's grid (τ = 3/rate if exponential)."""
    params = raw["sweep"]["parameters"]
    kind = raw["annealing"]["kind"]
    (time_key,) = [k for k in params if k != "annealing.beta0"]
    name = time_key.split(".", 1)[1]
    times = [float(mc.annealing_time(kind, {name: v})) for v in params[time_key]]
    return params["annealing.beta0"], times


# The grid and the setup shared by the four diagrams, read from the files (checked equal).
_REF = _example(DIAGRAMS[0])
BETA0, DURATION = _grid(_REF)
DIM, T_END = _REF["dim"], _REF["t_end"]
NORM, INIT = _REF["target"]["means"]["norm"], _REF["variational"]["init"]["norm"]
for _name in DIAGRAMS:
    _b, _d = _grid(_example(_name))
    assert np.allclose(_b, BETA0) and np.allclose(_d, DURATION), f"{_name}: another grid"


def _sweep(name, beta0, durations, seeds, route, work, chunk=1000):
    raw = _example(name)
    kind = raw["annealing"]["kind"]
    # one design coordinate τ per cell, as the kind's own parameter (duration, or rate = 3/τ)
    (name,) = [n for n in mc.schedule_parameters(kind) if n != "beta0"]
    values = [float(mc.design_parameters(kind, 1.0, d)[name]) for d in durations]
    raw["sweep"] = {
        "seeds": seeds,
        "chunk": chunk,
        "parameters": {"annealing.beta0": beta0, f"annealing.{name}": values},
    }
    plan = mc.plan_sweep(raw, route)
    shutil.rmtree(work, ignore_errors=True)
    results = mc.run_sweep(plan, work, progress=sys.stderr.isatty())
    return mc.summarise(plan, results)


def _formula_grid(name, beta0, durations):
    raw = _example(name)
    raw.pop("sweep")
    setting = formula_arguments(mc.parse_experiment(raw))
    kind = raw["annealing"]["kind"]
    with warnings.catch_warnings():  # ρ = 0.7 is outside the formula's regime, knowingly
        warnings.simplefilter("ignore", mc.FormulaRegimeWarning)
        return [
            [float(mc.p_collapse_formula(mc.make_schedule(kind, b, d), setting)) for d in durations]
            for b in beta0
        ]


def _heat(ax, grid, ci, formula, title):
    grid = np.asarray(grid, float)
    img = ax.imshow(grid.T, origin="lower", cmap="magma_r", vmin=0, vmax=1, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            color = "w" if grid[i, j] > 0.5 else "k"
            text = f"{grid[i, j]:.3f}\n[{ci[i][j][0]:.3f},{ci[i][j][1]:.3f}]"
            if formula is not None:
                text += f"\nformula {formula[i][j]:.3f}"
            ax.text(i, j, text, ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xticks(range(len(BETA0)), [f"{b:g}" for b in BETA0])
    ax.set_yticks(range(len(DURATION)), [f"{d:g}" for d in DURATION])
    ax.set_xlabel("β0 (1 = no annealing)")
    ax.set_ylabel("annealing time τ")
    ax.set_title(title, fontsize=9)
    return img


def figures(report: dict) -> None:
    d = report["diagrams"]
    seeds = report["seeds"]
    # (1) linear schedule at both target weights
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for ax, name in zip(axes, ("linear_rho0.5", "linear_rho0.7")):
        g = d[name]
        img = _heat(
            ax,
            g["p_collapse"],
            g["p_collapse_ci"],
            g["formula"],
            f"linear schedule, ρ = {g['rho']}: P(collapse), Wilson 95%, formula",
        )
    fig.colorbar(img, ax=axes, fraction=0.03)
    fig.suptitle(f"Theory ODE, {seeds} seeds per cell; d = {DIM}, |μ| = {NORM}, c = {INIT}")
    _save(fig, "annealing_phase.png")
    # (2) schedule families at ρ = ½
    fig, axes = plt.subplots(1, 3, figsize=(18, 5), layout="constrained")
    for ax, name in zip(axes, ("linear_rho0.5", "geometric_rho0.5", "exponential_rho0.5")):
        g = d[name]
        img = _heat(ax, g["p_collapse"], g["p_collapse_ci"], g["formula"], f"{g['kind']}, ρ = ½")
    fig.colorbar(img, ax=axes, fraction=0.02)
    fig.suptitle("P(collapse) by schedule family (exponential: τ = time to 95% of the rise)")
    _save(fig, "annealing_families.png")
    # (3) Pareto front: annealing time against P(collapse)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for k, name in enumerate(("linear_rho0.5", "geometric_rho0.5", "exponential_rho0.5")):
        front = d[name]["pareto"]
        tau = [p["duration"] for p in front]
        ax.errorbar(
            tau,
            [p["p_collapse"] for p in front],
            yerr=np.abs(np.array([p["ci"] for p in front]).T - [p["p_collapse"] for p in front]),
            marker="o",
            capsize=3,
            color=f"C{k}",
            label=f"{d[name]['kind']} (best β0 per τ)",
        )
    none = d["linear_rho0.5"]["p_collapse"][BETA0.index(1.0)][0]
    ax.axhline(none, color="k", ls=":", label=f"no annealing ({none:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("annealing time τ (cost)")
    ax.set_ylabel("P(collapse)")
    ax.set_title("Pareto front, ρ = ½ (theory, Wilson 95%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, "annealing_pareto.png")
    # (4) formula against Monte Carlo
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    for k, (name, g) in enumerate(d.items()):
        mc = np.asarray(g["p_collapse"], float).ravel()
        f = np.asarray(g["formula"], float).ravel()
        ci = np.asarray(g["p_collapse_ci"], float).reshape(-1, 2)
        ax.errorbar(f, mc, yerr=np.abs(ci.T - mc), fmt="o", ms=4, capsize=2, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("formula P(collapse)")
    ax.set_ylabel("theory-ODE Monte Carlo P(collapse)")
    ax.set_title(f"max |formula − MC| = {report['formula_error']['max_abs']:.3f}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, "annealing_formula.png")


def _save(fig, name: str) -> None:
    with open(os.path.join(ROOT, "docs/figures", name), "wb") as f:
        f.write(png(fig))


def _pareto(g: dict) -> list[dict]:
    front = []
    p = np.asarray(g["p_collapse"], float)
    for j, tau in enumerate(DURATION):
        i = int(np.argmin(p[: BETA0.index(1.0), j]))  # annealed rows only
        front.append(
            dict(
                duration=tau,
                beta0=BETA0[i],
                p_collapse=float(p[i, j]),
                ci=g["p_collapse_ci"][i][j],
            )
        )
    return front


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--full-seeds", type=int, default=500)
    parser.add_argument("--replot", action="store_true", help="redraw the figures from the JSON")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/annealing.json"))
    args = parser.parse_args()
    if args.replot:
        with open(args.out) as f:
            figures(json.load(f))
        return
    work = tempfile.mkdtemp(prefix="modecollapse-annealing-")
    start = time.perf_counter()
    report: dict = {
        "setup": dict(
            dim=DIM,
            target_norm=NORM,
            target_scale=1.0,
            init_norm=INIT,
            t_end=T_END,
            learning_rates=dict(means=1.0, weights=1.0),
            scale="adiabatic",
            exponential_duration="time to 95% of the rise: rate = 3/duration",
        ),
        "seeds": args.seeds,
        "beta0": BETA0,
        "duration": DURATION,
        "diagrams": {},
    }
    errors = []
    for name in DIAGRAMS:
        raw = _example(name)
        rho, kind = raw["target"]["weights"][0], raw["annealing"]["kind"]
        print(f"{name}: theory sweep ...", file=sys.stderr, flush=True)
        s = _sweep(name, BETA0, DURATION, args.seeds, "theory", os.path.join(work, name))
        formula = _formula_grid(name, BETA0, DURATION)
        err = np.abs(np.asarray(formula) - np.asarray(s["p_collapse"], float))
        g = dict(
            rho=rho,
            kind=kind,
            p_collapse=s["p_collapse"],
            p_collapse_ci=s["p_collapse_ci"],
            p_label=s["p_label"],
            failed=s["failed"],
            trajectories_per_second=s["trajectories_per_second"],
            formula=formula,
            formula_abs_error=err.tolist(),
        )
        g["pareto"] = _pareto(g)
        report["diagrams"][name] = g
        for i, b in enumerate(BETA0):
            for j, tau in enumerate(DURATION):
                errors.append(dict(diagram=name, beta0=b, duration=tau, error=float(err[i, j])))
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    worst = sorted(errors, key=lambda e: -e["error"])
    report["formula_error"] = dict(
        max_abs=worst[0]["error"],
        mean_abs=float(np.mean([e["error"] for e in errors])),
        worst_cells=worst[:6],
        per_diagram={
            n: float(np.max(g["formula_abs_error"])) for n, g in report["diagrams"].items()
        },
    )
    # full-route validation (linear, ρ = ½)
    print("full-route validation ...", file=sys.stderr, flush=True)
    b, t = FULL_CELLS["beta0"], FULL_CELLS["duration"]
    full = _sweep("linear_rho0.5", b, t, args.full_seeds, "full", os.path.join(work, "vf"), 500)
    theory = report["diagrams"]["linear_rho0.5"]
    rows = []
    for i, bi in enumerate(b):
        for j, tj in enumerate(t):
            ti, tj_ = BETA0.index(bi), DURATION.index(tj)
            pt, ct = theory["p_collapse"][ti][tj_], theory["p_collapse_ci"][ti][tj_]
            pf, cf = full["p_collapse"][i][j], full["p_collapse_ci"][i][j]
            rows.append(
                dict(
                    beta0=bi,
                    duration=tj,
                    theory=pt,
                    theory_ci=ct,
                    full=pf,
                    full_ci=cf,
                    overlap=bool(ct[0] <= cf[1] and cf[0] <= ct[1]),
                )
            )
    report["validation"] = dict(
        route="full d-dimensional flow, exact gradients",
        seeds=args.full_seeds,
        rows=rows,
        all_overlap=all(r["overlap"] for r in rows),
        full_trajectories_per_second=full["trajectories_per_second"],
    )
    report["wall_seconds"] = time.perf_counter() - start
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    figures(report)
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"done in {report['wall_seconds']:.0f} s; formula max abs error "
        f"{report['formula_error']['max_abs']:.3f}; validation overlap "
        f"{report['validation']['all_overlap']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
