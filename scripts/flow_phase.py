"""RealNVP flows against the Gaussian-mixture theory: P(collapse) over (β0, duration), and the
push-forward Lipschitz bound (docs/theory.md, §15).

Target: J = 2 antipodal modes ±4 e_1, weights (0.6, 0.4), σ = 1, at d ∈ {2, 8, 32}. Linear
annealing β(t) = β0 + (1 − β0) min(1, t/τ) on a 4×4 grid of (β0, τ).

- flows: RealNVP (4 coupling layers, width 32, depth 2), Adam, learning rate 0.01, 1000 steps,
  64 fresh particles per step, float32; time t = step · learning rate (NF6), so t_end = 10 and
  τ is in the same units as the theory's time. 64 seeds per cell; every cell uses the same 64
  seeds (initialisations and particles): common random numbers. The whole grid of one d is one
  compiled, vmapped run.
- theory: the summary-statistic ODE of a K = 2 isotropic mixture (the repo's theory route), scale
  coupled adiabatically ([annealing] scale = "adiabatic", s(t)² = σ²/β(t), eq. (S5)), means and
  weights trained at rates 1, t_end = 40, initial norm 1; same grid, 64 seeds per cell.

Writes docs/figures/flow_phase_d{2,8,32}.png, docs/figures/flow_mode_masses.png,
docs/figures/flow_lipschitz.png, benchmarks/results/flow_phase.json and
benchmarks/results/flow_lipschitz.json.

    .venv/bin/python scripts/flow_phase.py [--seeds 64] [--dims 2,8,32]
        [--only phase,theory-long,lipschitz]

`theory-long` adds the theory at τ ∈ {16, 32, 64} (t_end 150): durations the flows' t_end = 10
does not reach.
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

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import modecollapse as mc  # noqa: E402
from modecollapse.figures import (  # noqa: E402
    lipschitz_figure,
    mode_mass_figure,
    phase_comparison_figure,
)
from modecollapse.metrics import LABELS, Label, Thresholds, label_index, wilson_interval  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG = os.path.join(ROOT, "docs", "figures")
RES = os.path.join(ROOT, "benchmarks", "results")

NORM = 4.0
WEIGHTS = [0.6, 0.4]
BETA0 = [0.05, 0.2, 0.5, 1.0]
DURATION = [1.0, 2.0, 4.0, 8.0]
FLOW = dict(layers=4, width=32, steps=1000, learning_rate=0.01, particles=64, optimizer="adam")


def _target(dim: int) -> mc.GaussianMixture:
    means = np.zeros((2, dim))
    means[0, 0], means[1, 0] = NORM, -NORM
    return mc.GaussianMixture(jnp.asarray(means), jnp.asarray(WEIGHTS))


def _theory_base(dim: int, **changes) -> dict:
    """examples/flow_phase_theory.toml at dimension `dim`, with top-level `changes`."""
    with open(os.path.join(ROOT, "examples", "flow_phase_theory.toml"), "rb") as f:
        raw = tomllib.load(f)
    raw.update(dim=dim, **changes)
    return raw


def _theory_sweep(raw: dict, grid: dict, seeds: int, work: str) -> dict:
    raw["sweep"] = {"seeds": seeds, "chunk": 2048, "parameters": grid}
    plan = mc.plan_sweep(raw, "theory")
    shutil.rmtree(work, ignore_errors=True)
    return mc.summarise(plan, mc.run_sweep(plan, work, progress=sys.stderr.isatty()))


def theory_cells(dim: int, seeds: int, work: str) -> dict:
    grid = {"annealing.beta0": BETA0, "annealing.duration": DURATION}
    t0 = time.perf_counter()
    summary = _theory_sweep(_theory_base(dim), grid, seeds, work)
    return {
        "seeds": seeds,
        "p_collapse": summary["p_collapse"],
        "p_collapse_ci": summary["p_collapse_ci"],
        "p_mean_alignment": summary["p_label"]["mean_alignment"],
        "p_vanishing_weight": summary["p_label"]["vanishing_weight"],
        "labels": summary["labels"],
        "seconds": time.perf_counter() - t0,
        "settings": "K = 2 isotropic mixture, summary-statistic ODE (theory route), scale "
        "adiabatic (S5), learning rates means 1 / weights 1, initial norm 1, t_end 40",
    }


def flow_cells(dim: int, seeds: int, progress: bool):
    n_cells = len(BETA0) * len(DURATION)
    b0, tau = np.meshgrid(BETA0, DURATION, indexing="ij")  # cell (i, j) = (β0_i, τ_j)
    b0 = np.repeat(b0.ravel(), seeds)
    tau = np.repeat(tau.ravel(), seeds)
    schedule = mc.LinearSchedule(jnp.asarray(b0, jnp.float32), jnp.asarray(tau, jnp.float32))
    ids = jnp.tile(jnp.arange(seeds), n_cells)
    t0 = time.perf_counter()
    run = mc.train_flows(
        jr.key(dim),
        _target(dim),
        schedule,
        seeds=n_cells * seeds,
        records=20,
        lipschitz=False,
        record_particles=512,
        final_particles=2048,
        dtype=jnp.float32,
        batched_schedule=True,
        seed_ids=ids,
        progress=progress,
        **FLOW,
    )
    jax.block_until_ready(run.kl)
    seconds = time.perf_counter() - t0
    label = np.asarray(run.label).reshape(len(BETA0), len(DURATION), seeds)
    ok = label != label_index(Label.failed)
    n_ok = ok.sum(-1)
    collapsed = (ok & (label != label_index(Label.covered))).sum(-1)
    lo, hi = wilson_interval(collapsed, n_ok)
    frac = lambda name: ((label == LABELS.index(name)).sum(-1) / np.maximum(n_ok, 1)).tolist()  # noqa: E731
    cells = {
        "seeds": seeds,
        "p_collapse": (collapsed / np.maximum(n_ok, 1)).tolist(),
        "p_collapse_ci": np.stack([lo, hi], -1).tolist(),
        "p_mean_alignment": frac("mean_alignment"),
        "p_vanishing_weight": frac("vanishing_weight"),
        "failed": int((~ok).sum()),
        "labels": {name: int((label == i).sum()) for i, name in enumerate(LABELS)},
        "mean_final_kl": np.asarray(run.kl).reshape(label.shape).mean(-1).tolist(),
        "seconds": seconds,
        "steps_per_second_all_runs": FLOW["steps"] * n_cells * seeds / seconds,
        "settings": {**FLOW, "records": 20, "dtype": "float32", "t_end": 10.0},
    }
    return cells, run


def _cell_slice(i: int, j: int, seeds: int) -> slice:
    start = (i * len(DURATION) + j) * seeds
    return slice(start, start + seeds)


def _panel(run, dim, i, j, seeds):
    sl = _cell_slice(i, j, seeds)
    masses = np.asarray(run.masses[sl])
    labels = np.asarray(run.label[sl])
    b0, tau = BETA0[i], DURATION[j]
    title = f"d = {dim}, " + ("no annealing (β0 = 1)" if b0 == 1 else f"β0 = {b0}, τ = {tau}")
    return {
        "title": title,
        "times": np.asarray(run.times).tolist(),
        "masses": masses.tolist(),
        "rho": WEIGHTS,
        "coverage": Thresholds().coverage,
        "examples": mc.example_seeds(labels),
    }


def _load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def phase(dims, seeds, work, progress):
    path = os.path.join(RES, "flow_phase.json")
    report = _load(path)
    report.update(
        {
            "target": {"J": 2, "means": f"±{NORM} e_1", "weights": WEIGHTS, "scale": 1.0},
            "grid": {"beta0": BETA0, "duration": DURATION},
            "schedule": "linear (S2)",
            "time_convention": "flows: t = step * learning_rate (NF6); theory: ODE time",
            "collapse": "any label other than covered among non-failed runs; Wilson 95% (C7)",
        }
    )
    report.setdefault("dims", {})
    panels = []
    for dim in dims:
        print(f"d = {dim}: theory ...", flush=True)
        theory = theory_cells(dim, seeds, os.path.join(work, f"theory{dim}"))
        print(f"  theory {theory['seconds']:.0f}s: {theory['p_collapse']}", flush=True)
        print(f"d = {dim}: flows ({16 * seeds} runs) ...", flush=True)
        flow, run = flow_cells(dim, seeds, progress)
        print(f"  flows {flow['seconds']:.0f}s: {flow['p_collapse']}", flush=True)
        cells = {"beta0": BETA0, "duration": DURATION, "flow": flow, "theory": theory}
        report["dims"][str(dim)] = cells
        mc.write_file(
            os.path.join(FIG, f"flow_phase_d{dim}.png"), phase_comparison_figure(cells, dim)
        )
        panels.append(_panel(run, dim, len(BETA0) - 1, 0, seeds))  # no annealing
        panels.append(_panel(run, dim, 0, len(DURATION) - 1, seeds))  # strongest annealing
        mc.write_file(path, (json.dumps(report, indent=1) + "\n").encode())
    mc.write_file(os.path.join(FIG, "flow_mode_masses.png"), mode_mass_figure(panels))


LONG_DURATION = [16.0, 32.0, 64.0]


def theory_long(dims, seeds, work):
    """Supplement: the theory at durations beyond the flows' t_end (t_end 150, same β0 grid)."""
    path = os.path.join(RES, "flow_phase.json")
    report = _load(path)
    out = report.setdefault("theory_long_durations", {})
    for dim in dims:
        base = _theory_base(dim, t_end=150.0, save_points=76)
        grid = {"annealing.beta0": BETA0, "annealing.duration": LONG_DURATION}
        summary = _theory_sweep(base, grid, seeds, os.path.join(work, "long"))
        out[str(dim)] = {
            "beta0": BETA0,
            "duration": LONG_DURATION,
            "t_end": 150.0,
            "seeds": seeds,
            "p_collapse": summary["p_collapse"],
            "p_collapse_ci": summary["p_collapse_ci"],
        }
        print(f"d = {dim}: theory, long durations: {summary['p_collapse']}", flush=True)
    mc.write_file(path, (json.dumps(report, indent=1) + "\n").encode())


def lipschitz(dims, seeds, progress):
    """Trained flows on the bound (PF3)–(PF4): no annealing and the strongest annealing cell."""
    report = {
        "bound": "TV(g#N(0,I), p) >= max over half-space pairs of (PF3); L*(eps) = inf{L: bound <= "
        "eps} (PF5)",
        "outside_ball_mass": mc.LIPSCHITZ_TAIL,
        "settings": {**FLOW, "dtype": "float32", "seeds_per_schedule": seeds},
        "dims": {},
    }
    for dim in dims:
        target = _target(dim)
        flows = []
        for b0, tau in ((1.0, 1.0), (BETA0[0], DURATION[-1])):
            run = mc.train_flows(
                jr.key(1000 + dim),
                target,
                mc.LinearSchedule(b0, tau),
                seeds=seeds,
                records=10,
                dtype=jnp.float32,
                progress=progress,
                **FLOW,
            )
            for s in range(seeds):
                flow = jax.tree.map(lambda a: a[s] if isinstance(a, jax.Array) else a, run.flows)
                x = flow.sample(jr.fold_in(jr.key(7), s), (8192,)).astype(jnp.float64)
                tv = float(run.tv[s])
                flows.append(
                    {
                        "schedule": {"beta0": b0, "duration": tau},
                        "label": LABELS[int(run.label[s])],
                        "tv": tv,
                        "kl": float(run.kl[s]),
                        "masses": np.asarray(run.masses[s, -1]).tolist(),
                        "L_lower": float(run.lipschitz_lower[s, -1]),
                        "L_upper": float(run.lipschitz_upper[s, -1]),
                        "L_lower_trajectory": np.asarray(run.lipschitz_lower[s]).tolist(),
                        "L_upper_trajectory": np.asarray(run.lipschitz_upper[s]).tolist(),
                        "L_required": float(mc.required_lipschitz(x, target)),
                        "L_threshold": mc.tv_threshold(target, tv),
                        "L_threshold_ball": mc.tv_threshold(target, tv, mc.LIPSCHITZ_TAIL),
                    }
                )
        top = max(
            [3.0] + [np.log10(f["L_upper"]) + 0.5 for f in flows if np.isfinite(f["L_upper"])]
        )
        L = np.logspace(-1, top, 241)
        covering = [f for f in flows if f["label"] == "covered"]
        best = min((f["tv"] for f in covering), default=float("nan"))
        checks = {
            "covered_flows": len(covering),
            "all_flows": len(flows),
            "lower_ge_threshold": sum(f["L_lower"] >= f["L_threshold"] for f in flows),
            "upper_ge_threshold_ball": sum(f["L_upper"] >= f["L_threshold_ball"] for f in flows),
            "lower_ge_required": sum(f["L_lower"] >= f["L_required"] for f in flows),
            "covered_lower_ge_threshold": sum(f["L_lower"] >= f["L_threshold"] for f in covering),
            "covered_lower_ge_required": sum(f["L_lower"] >= f["L_required"] for f in covering),
        }
        report["dims"][str(dim)] = {
            "curve": {
                "L": L.tolist(),
                "bound": np.asarray(mc.mixture_tv_bound(target, jnp.asarray(L))).tolist(),
                "bound_ball": np.asarray(
                    mc.mixture_tv_bound(target, jnp.asarray(L), mc.LIPSCHITZ_TAIL)
                ).tolist(),
            },
            "outside": mc.LIPSCHITZ_TAIL,
            "L_threshold_cover": mc.tv_threshold(target, best) if covering else float("nan"),
            "best_covering_tv": best,
            "checks": checks,
            "flows": flows,
        }
        print(f"d = {dim}: {checks}", flush=True)
    mc.write_file(
        os.path.join(RES, "flow_lipschitz.json"), (json.dumps(report, indent=1) + "\n").encode()
    )
    mc.write_file(os.path.join(FIG, "flow_lipschitz.png"), lipschitz_figure(report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--lipschitz-seeds", type=int, default=16)
    ap.add_argument("--dims", default="2,8,32")
    ap.add_argument("--only", default="phase,theory-long,lipschitz")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    parts = set(args.only.split(","))
    progress = sys.stderr.isatty()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if "phase" in parts:
            phase(dims, args.seeds, work, progress)
        if "theory-long" in parts:
            theory_long(dims, args.seeds, work)
        if "lipschitz" in parts:
            lipschitz(dims, args.lipschitz_seeds, progress)
    print(f"done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
