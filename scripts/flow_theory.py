"""RealNVP flows against the Gaussian-mixture theory at d ∈ {2, 8, 32, 128}, with long annealing
and converged labels (README "Flows against the theory at scale", docs/theory.md §15).

The experiments are the 16 files examples/flow_theory/d{d}_{schedule}_{optimizer}.toml: each is a
`modecollapse flow` sweep over two targets (±4e₁, weights 0.6/0.4 and 0.8/0.2), β0 ∈ {0.1, 0.3, 1}
and τ ∈ {4, 16, 64} (linear, or exponential with rate 3/τ), every cell trained to t_end = τ + 24
(flow time t = step × learning rate, NF6), with the theory of a K = 2 mixture on the same cells.

The checks, examples/flow_theory_checks/*.toml, rerun some cells with a 4× longer settle (are the
labels final?) and with Adam at a 4× smaller learning rate.

This script runs the files that have no result yet in the work folder (the same job as
`modecollapse flow --config FILE --out WORK/NAME`), then assembles every cell into
benchmarks/results/flow_theory.json, reads off the law (τ₁₀: the τ at which P(collapse) falls to
10%; τ½: to half the unannealed value; interpolated linearly in log τ, eq. (NF9)), and draws
docs/figures/flow_theory_{schedule}_{optimizer}.png, flow_theory_law.png and
flow_theory_covered.png.

    .venv/bin/python scripts/flow_theory.py [--work out/flow_theory]
        [--checks-work out/flow_theory_checks] [--only NAME,...] [--no-run]

Wall time on the 2-core CPU: about an hour for all 16 files (the d = 128 files are half of it).
"""

import argparse
import glob
import itertools
import json
import os
import sys
import time
import tomllib

import jax

jax.config.update("jax_enable_x64", True)


import modecollapse as mc  # noqa: E402
from modecollapse.figures import (  # noqa: E402
    flow_covered_figure,
    flow_law_figure,
    flow_sweep_figure,
)
from modecollapse.jobs import cells_csv, flow_sweep_plan, run_flow_sweep  # noqa: E402
from modecollapse.metrics import collapse_crossing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "flow_theory")
CHECKS = os.path.join(ROOT, "examples", "flow_theory_checks")
FIG = os.path.join(ROOT, "docs", "figures")
RES = os.path.join(ROOT, "benchmarks", "results")
LEVEL = 0.1  # τ₁₀: P(collapse) ≤ 10%
STABLE = 0.95


def _clean(obj):
    """NaN → null, so that the JSON is standard (other tools read it)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _names() -> list[str]:
    order = {"2": 0, "8": 1, "32": 2, "128": 3, "linear": 0, "exponential": 1, "sgd": 0, "adam": 1}
    names = [os.path.basename(p)[:-5] for p in glob.glob(os.path.join(EXAMPLES, "*.toml"))]
    return sorted(names, key=lambda n: [order[x] for x in n[1:].split("_")])


def run_missing(names: list[str], work: str, progress: bool, folder: str = EXAMPLES) -> None:
    for name in names:
        out = os.path.join(work, name)
        if os.path.exists(os.path.join(out, "result.json")):
            continue
        with open(os.path.join(folder, name + ".toml"), "rb") as f:
            plan = flow_sweep_plan(tomllib.load(f))
        print(f"{time.strftime('%H:%M:%S')} {name}: {len(plan.points)} cells ...", flush=True)
        result, figure = run_flow_sweep(plan, progress=progress)
        text = json.dumps(_clean(result), indent=1, allow_nan=False)
        mc.write_file(os.path.join(out, "result.json"), (text + "\n").encode())
        mc.write_file(os.path.join(out, "cells.csv"), cells_csv(result["cells"]).encode())
        mc.write_file(os.path.join(out, "flow_sweep.png"), figure)


def crossing(taus, ps, level: float) -> dict:
    """Eq. (NF9) (`collapse_crossing`) as a JSON record."""
    tau, censored = collapse_crossing(taus, ps, level)
    return {"tau": tau, "censored": censored}


def _distinct(cells: list[dict]) -> list[dict]:
    """One cell per (target, β0, τ) of a file: β0 = 1 appears once per τ of the grid, and those
    cells are one shared run (`run_flow_sweep`)."""
    seen: dict[tuple, dict] = {}
    for c in cells:
        seen.setdefault((tuple(c["target"]), c["beta0"], c["tau"]), c)
    return list(seen.values())


def _key(c) -> tuple:
    return (c["d"], tuple(c["target"]), c["schedule"], c["optimizer"])


def laws(cells: list[dict]) -> list[dict]:
    """Per (d, target, schedule, optimizer, β0): τ₁₀ and τ½ for flows and the theory (NF9), the
    drop of P(collapse) from the shortest to the longest anneal, and the stability of labels."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault(_key(c), []).append(c)
    for key, here in groups.items():
        base = next(c for c in here if c["tau"] == 0)
        for b0 in sorted({c["beta0"] for c in here if c["tau"] > 0}):
            row = sorted(
                (c for c in here if c["beta0"] == b0 and c["tau"] > 0), key=lambda c: c["tau"]
            )
            taus = [c["tau"] for c in row]
            rec = {
                "d": key[0],
                "target": list(key[1]),
                "schedule": key[2],
                "optimizer": key[3],
                "beta0": b0,
                "taus": taus,
                "p_collapse": [c["p_collapse"] for c in row],
                "p_collapse_theory": [c["p_collapse_theory"] for c in row],
                "p_unannealed": base["p_collapse"],
                "p_unannealed_theory": base["p_collapse_theory"],
            }
            for route, col, p0 in (
                ("flow", "p_collapse", base["p_collapse"]),
                ("theory", "p_collapse_theory", base["p_collapse_theory"]),
            ):
                ps = [c[col] for c in row]
                rec[f"tau_10_{route}"] = crossing(taus, ps, LEVEL)
                rec[f"tau_half_{route}"] = crossing(taus, ps, 0.5 * p0) if p0 else None
                lo_short = row[0]["ci" if route == "flow" else "ci_theory"]
                hi_long = row[-1]["ci" if route == "flow" else "ci_theory"]
                # longer annealing lowers collapse: the Wilson intervals at τ_min and τ_max separate
                rec[f"longer_lowers_{route}"] = bool(hi_long[1] < lo_short[0])
                rec[f"monotone_{route}"] = bool(all(b <= a + 1e-12 for a, b in zip(ps, ps[1:])))
            rec["stable_fraction"] = [c["stable_fraction"] for c in row]
            out.append(rec)
    return out


def clock_map(law: list[dict]) -> list[dict]:
    """τ½ under Adam against τ½ under SGD, on the same (d, target, schedule, β0)."""
    by = {(r["d"], tuple(r["target"]), r["schedule"], r["beta0"], r["optimizer"]): r for r in law}
    out = []
    for (d, target, schedule, b0, opt), r in by.items():
        if opt != "sgd" or (d, target, schedule, b0, "adam") not in by:
            continue
        a = by[(d, target, schedule, b0, "adam")]
        hs, ha = r["tau_half_flow"], a["tau_half_flow"]
        ratio = bound = None
        if hs and ha and hs["censored"] is None and ha["censored"] is None:
            ratio = ha["tau"] / hs["tau"]
        elif hs and ha and hs["censored"] is None and ha["censored"] == "above":
            bound = ha["tau"] / hs["tau"]  # Adam has not halved P by the longest τ
        out.append(
            {
                "d": d,
                "target": list(target),
                "schedule": schedule,
                "beta0": b0,
                "tau_half_sgd": hs,
                "tau_half_adam": ha,
                "adam_over_sgd": ratio,
                "adam_over_sgd_at_least": bound,
                "tau_half_theory": r["tau_half_theory"],
            }
        )
    return out


def hotter_start(law: list[dict]) -> list[dict]:
    """A hotter start (β0 = 0.1 against 0.3) needs a longer anneal: τ₁₀ and P at each τ."""
    by = {(r["d"], tuple(r["target"]), r["schedule"], r["optimizer"], r["beta0"]): r for r in law}
    out = []
    for (d, target, schedule, opt, b0), hot in by.items():
        cold = by.get((d, target, schedule, opt, 0.3))
        if b0 != 0.1 or cold is None:
            continue
        rec = {"d": d, "target": list(target), "schedule": schedule, "optimizer": opt}
        for route, col in (("flow", "p_collapse"), ("theory", "p_collapse_theory")):
            rec[f"p_hot_minus_cold_{route}"] = [
                None if a is None or b is None else a - b for a, b in zip(hot[col], cold[col])
            ]
            rec[f"tau_10_hot_{route}"] = hot[f"tau_10_{route}"]
            rec[f"tau_10_cold_{route}"] = cold[f"tau_10_{route}"]
        out.append(rec)
    return out


def covered_panels(cells: list[dict]) -> list[dict]:
    """Covered fraction against time at the longest anneal, β0 = 0.1, per target and optimizer."""
    panels = []
    for target, schedule, opt in itertools.product(
        sorted({tuple(c["target"]) for c in cells}), ["linear"], ["sgd", "adam"]
    ):
        lines = []
        for c in cells:
            if (
                tuple(c["target"]) == target
                and c["schedule"] == schedule
                and c["optimizer"] == opt
                and c["beta0"] == 0.1
                and c["tau"] == max(x["tau"] for x in cells)
                and c["covered_fraction"] is not None
            ):
                lines.append(
                    {
                        "label": f"d = {c['d']}",
                        "times": c["times"],
                        "covered_fraction": c["covered_fraction"],
                        "minor_mass": [m[-1] for m in c["mean_masses"] or []],
                        "tau": c["tau"],
                    }
                )
        weights = "/".join(f"{w:g}" for w in target)
        panels.append({"title": f"ρ = {weights}, {schedule}, {opt}, β0 = 0.1", "lines": lines})
    return panels


def explain(c: dict) -> str:
    """Why a cell's stable fraction (NF8) is below 0.95, from the label changes in the window."""
    n = c["seeds"]
    failed = c["labels"].get("failed", 0)
    times, cov = c["times"], c["covered_fraction"]
    w0 = next(i for i, t in enumerate(times) if t >= 0.8 * times[-1])
    if c.get("window_lost") is None:  # older records: the covered fraction's net change
        net = round((cov[-1] - cov[w0]) * (n - failed))
        lost, gained = max(-net, 0), max(net, 0)
        counted = "flows (net)"
    else:
        lost, gained = int(c["window_lost"]), int(c["window_gained"])
        counted = "flows"
    flips = round((1.0 - c["stable_fraction"]) * n) - failed
    parts = []
    if lost > 0 and lost >= 3 * gained:
        parts.append(
            f"late mass loss still under way: {lost} {counted} lost a mode in the last 20% of "
            f"training, {gained} regained one, so P(collapse) = {c['p_collapse']:.2f} is a lower "
            "bound on the final value"
        )
    elif gained > 0 and gained >= 3 * lost:
        parts.append(
            f"late recovery still under way: {gained} {counted} regained a mode, {lost} lost one, "
            f"so P(collapse) = {c['p_collapse']:.2f} is an upper bound on the final value"
        )
    else:
        parts.append(
            f"borderline flicker: {flips} flows changed label and back or both ways ({lost} lost, "
            f"{gained} regained); their minor-mode mass sits near 0.1·ρ_j, where the 1024-sample "
            "mass estimate flips the label (NF8)"
        )
    if failed:
        parts.append(f"{failed} failed (non-finite) flows count as unstable")
    return "; ".join(parts)


_CELL = ("d", "target", "schedule", "optimizer", "learning_rate", "beta0", "tau", "t_end")
_SHOWN = ("p_collapse", "ci", "p_collapse_theory", "stable_fraction", "mean_final_kl", "labels")


def checks(cells: list[dict], work: str, run: bool, progress: bool) -> dict:
    """The checks of examples/flow_theory_checks: each of their cells beside the main cell with
    the same (d, target, schedule, β0, τ): a longer settle (are the labels final?) and Adam at a
    smaller learning rate (is Adam's collapse its step size?)."""
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CHECKS, "*.toml")))
    if run:
        run_missing(names, work, progress, CHECKS)
    out = {}
    for name in names:
        path = os.path.join(work, name, "result.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            result = json.load(f)
        rows = []
        for c in _distinct(result["cells"]):
            key = ("d", "target", "schedule", "beta0", "tau")
            peers = [m for m in cells if all(m[k] == c[k] for k in key)]
            rows.append(
                {
                    **{k: c[k] for k in _CELL},
                    **{k: c.get(k) for k in _SHOWN + ("window_lost", "window_gained")},
                    "main": list(
                        {
                            (m["optimizer"], m["t_end"]): {
                                k: m.get(k)
                                for k in ("optimizer", "learning_rate", "t_end") + _SHOWN
                            }
                            for m in peers
                        }.values()
                    ),
                }
            )
        out[name] = {
            "file": f"examples/flow_theory_checks/{name}.toml",
            "flow_seconds": result["flow_seconds"],
            "cells": rows,
        }
    return out


def _fmt_tau(c: dict) -> str:
    return {"above": ">{:g}", "at_or_below": "≤{:g}"}.get(c["censored"] or "", "{:.0f}").format(
        c["tau"]
    )


def markdown(cells: list[dict], law: list[dict]) -> str:
    """The README's tables: P(collapse) per cell (SGD / Adam / theory) and τ₁₀ per line."""
    lines = []
    pick = {
        (c["d"], tuple(c["target"]), c["schedule"], c["optimizer"], c["beta0"], c["tau"]): c
        for c in cells
    }

    def p(d, target, schedule, opt, b0, tau, col="p_collapse"):
        c = pick.get((d, target, schedule, opt, b0, tau))
        return "–" if c is None or c[col] is None else f"{c[col]:.2f}"

    dims = sorted({c["d"] for c in cells})
    taus = sorted({c["tau"] for c in cells if c["tau"] > 0})
    betas = sorted({c["beta0"] for c in cells if c["tau"] > 0})
    for target in sorted({tuple(c["target"]) for c in cells}):
        for schedule in ("linear", "exponential"):
            w = "/".join(f"{x:g}" for x in target)
            lines += [
                f"P(collapse), ρ = {w}, {schedule}: SGD / Adam / theory",
                "",
                "| d | β0 | no annealing | " + " | ".join(f"τ = {t:g}" for t in taus) + " |",
                "|---|---|---|" + "---|" * len(taus),
            ]
            for d in dims:
                for b0 in betas:
                    row = [
                        " / ".join(
                            [p(d, target, schedule, o, b, t) for o in ("sgd", "adam")]
                            + [p(d, target, schedule, "sgd", b, t, "p_collapse_theory")]
                        )
                        for b, t in [(1.0, 0.0)] + [(b0, t) for t in taus]
                    ]
                    lines.append(f"| {d} | {b0:g} | " + " | ".join(row) + " |")
            lines.append("")
    for target, (key, name) in itertools.product(
        sorted({tuple(r["target"]) for r in law}),
        (("tau_10", "τ₁₀"), ("tau_half", "τ½ (half the unannealed P)")),
    ):
        w = "/".join(f"{x:g}" for x in target)
        lines += [
            f"{name} (NF9), ρ = {w}: SGD / Adam / theory",
            "",
            "| d | β0 | linear | exponential |",
            "|---|---|---|---|",
        ]
        by = {
            (r["d"], tuple(r["target"]), r["schedule"], r["optimizer"], r["beta0"]): r for r in law
        }
        for d in dims:
            for b0 in betas:
                cols = []
                for schedule in ("linear", "exponential"):
                    parts = []
                    for opt, route in (("sgd", "flow"), ("adam", "flow"), ("sgd", "theory")):
                        r = by.get((d, target, schedule, opt, b0))
                        c = None if r is None else r[f"{key}_{route}"]
                        parts.append("–" if c is None else _fmt_tau(c))
                    cols.append(" / ".join(parts))
                lines.append(f"| {d} | {b0:g} | " + " | ".join(cols) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "flow_theory"))
    ap.add_argument("--only", default=None, help="comma-separated file names (default: all 16)")
    ap.add_argument("--checks-work", default=os.path.join(ROOT, "out", "flow_theory_checks"))
    ap.add_argument("--no-run", action="store_true", help="assemble the results already there")
    ap.add_argument("--markdown", action="store_true", help="print the README tables")
    args = ap.parse_args()
    names = _names() if args.only is None else args.only.split(",")
    if not args.no_run:
        run_missing(names, args.work, sys.stderr.isatty())
    cells, files = [], {}
    for name in names:
        path = os.path.join(args.work, name, "result.json")
        if not os.path.exists(path):
            print(f"{name}: no result yet", flush=True)
            continue
        with open(path) as f:
            result = json.load(f)
        for c in _distinct(result["cells"]):
            c = {**c, "file": f"examples/flow_theory/{name}.toml"}
            if c["stable_fraction"] < STABLE:
                c["stability_note"] = explain(c)
            cells.append(c)
        files[name] = {
            k: result[k]
            for k in ("flow_seconds", "theory_seconds", "flow_steps", "flow_steps_per_second")
        }
    law = laws(cells)
    report = {
        "description": "RealNVP flows (4 coupling layers, width 32, 32 particles per step, "
        "float32) against the theory of a K = 2 isotropic mixture (adiabatic scale, means and "
        "weights at rate 1, initial norm 1) on the same cells; common random numbers across "
        "cells; every cell trained to t_end = τ + 24 (NF6)",
        "collapse": "any label other than covered among non-failed runs; Wilson 95% (C7)",
        "stable_fraction": "eq. (NF8): the fraction of flows whose missed-mode set is the same at "
        "every record of the last 20% of training",
        "law": "eq. (NF9): τ_10 = smallest τ with P(collapse) ≤ 0.1, τ_half = smallest τ with "
        "P ≤ P(no annealing)/2, linear in log τ between grid points; censored 'above' = not "
        "reached by τ = 64, 'at_or_below' = already at τ = 4",
        "files": files,
        "cells": cells,
        "laws": law,
        "clock": clock_map(law),
        "hotter_start": hotter_start(law),
        "checks": checks(cells, args.checks_work, not args.no_run, sys.stderr.isatty()),
        "unstable_cells": [
            {
                k: c.get(k)
                for k in (
                    "d",
                    "target",
                    "schedule",
                    "optimizer",
                    "beta0",
                    "tau",
                    "stable_fraction",
                    "window_lost",
                    "window_gained",
                    "labels",
                )
            }
            | {"explanation": explain(c)}
            for c in cells
            if c["stable_fraction"] < STABLE
        ],
    }
    text = json.dumps(_clean(report), indent=1, allow_nan=False)
    mc.write_file(os.path.join(RES, "flow_theory.json"), (text + "\n").encode())
    for schedule, opt in itertools.product(("linear", "exponential"), ("sgd", "adam")):
        sub = [c for c in cells if c["schedule"] == schedule and c["optimizer"] == opt]
        if sub:
            mc.write_file(
                os.path.join(FIG, f"flow_theory_{schedule}_{opt}.png"),
                flow_sweep_figure({"cells": sub}),
            )
    if law:
        mc.write_file(os.path.join(FIG, "flow_theory_law.png"), flow_law_figure(law))
        mc.write_file(
            os.path.join(FIG, "flow_theory_covered.png"), flow_covered_figure(covered_panels(cells))
        )
    if args.markdown:
        print(markdown(cells, law))
    print(
        f"{len(cells)} cells from {len(files)} files; {len(report['unstable_cells'])} cells "
        f"below stable fraction {STABLE}",
        flush=True,
    )


if __name__ == "__main__":
    main()
