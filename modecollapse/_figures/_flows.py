"""Figures of flow VI: density and samples, mode-mass trajectories, Lipschitz bound (§15)."""

import itertools
from typing import Any

import numpy as np

from .._metrics import LABELS
from ._base import plt, png

_LABEL_COLORS = {
    "covered": "C2",
    "mean_alignment": "C3",
    "vanishing_weight": "C1",
    "other": "C4",
    "failed": "k",
}


def _plane(means: np.ndarray) -> np.ndarray:
    """Two orthonormal directions: the span of the target means, completed by e_i if needed."""
    dim = means.shape[1]
    basis: list[np.ndarray] = []
    for v in list(means - means.mean(0)) + list(means) + list(np.eye(dim)):
        for b in basis:
            v = v - (b @ v) * b
        n = np.linalg.norm(v)
        if n > 1e-8:
            basis.append(v / n)
        if len(basis) == 2:
            break
    return np.array(basis)


def samples_panel(ax, x: np.ndarray, means: np.ndarray, density=None, target_x=None) -> None:
    """Flow samples (and, for d = 2, log-density contours) on the plane of the target modes."""
    P = _plane(means)
    if target_x is not None:
        tp = target_x @ P.T
        ax.scatter(tp[:, 0], tp[:, 1], s=2, color="0.75", label="target samples")
    if density is not None:
        gx, gy, logq = density
        ax.contour(gx, gy, logq, levels=np.linspace(logq.max() - 8, logq.max(), 9), cmap="Blues")
    xp = x @ P.T
    ax.scatter(xp[:, 0], xp[:, 1], s=2, color="C0", alpha=0.5, label="flow samples")
    mp = means @ P.T
    ax.scatter(mp[:, 0], mp[:, 1], marker="x", s=60, color="C3", label="target means")
    ax.set_xlabel("mode direction" if means.shape[1] > 2 else "x₁")
    ax.set_ylabel("orthogonal direction" if means.shape[1] > 2 else "x₂")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="upper right")


def masses_panel(ax, times, masses, labels, rho, coverage, examples: dict[str, int]) -> None:
    """Per-mode mass trajectories of one example seed per label (solid mode 1, dashed mode 2…)."""
    styles = ["-", "--", ":", "-."]
    for name, s in examples.items():
        for j in range(masses.shape[2]):
            ax.plot(
                times,
                masses[s, :, j],
                ls=styles[j % 4],
                color=_LABEL_COLORS[name],
                label=f"seed {s} ({name.replace('_', ' ')}), mode {j + 1}",
            )
    for j, r in enumerate(rho):
        ax.axhline(coverage * r, color="0.5", lw=0.8, ls=styles[j % 4])
    ax.set_xlabel("t = step · learning rate")
    ax.set_ylabel("mode mass E_q[π_j]")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def flow_figure(result: dict[str, Any], x: np.ndarray, density, target_x: np.ndarray) -> bytes:
    """flow.png of `modecollapse flow`: samples/density, mode masses, objective, Lipschitz."""
    times = np.asarray(result["times"])
    masses = np.asarray(result["masses"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), layout="constrained")
    means = np.asarray(result["target"]["means"])
    samples_panel(axes[0, 0], x, means, density, target_x)
    dim = means.shape[1]
    axes[0, 0].set_title(
        f"seed 0, {result['outcome']['per_seed'][0]['label']}: "
        + (
            "density and samples"
            if dim == 2
            else f"projection on the target-mode plane (d = {dim})"
        )
    )
    masses_panel(
        axes[0, 1],
        times,
        masses,
        None,
        result["target"]["weights"],
        result["outcome"]["thresholds"]["coverage"],
        result["examples"],
    )
    axes[0, 1].set_title("per-mode mass trajectories (grey: coverage thresholds)")
    ax = axes[1, 0]
    for s, curve in enumerate(np.asarray(result["loss"])):
        ax.plot(times, curve, lw=0.8, alpha=0.7)
    ax.set_xlabel("t")
    ax.set_ylabel("objective (NF5) at β(t)")
    ax.grid(alpha=0.3)
    tw = ax.twinx()
    beta = np.asarray(result["beta"])
    tw.plot(times, beta if beta.ndim == 1 else beta[0], color="k", ls="--", label="β(t)")
    tw.set_ylabel("β(t)")
    tw.set_ylim(0, 1.05)
    ax.set_title("loss curves (all seeds) and β(t)")
    ax = axes[1, 1]
    lo = np.asarray(result["lipschitz"]["lower"], float)
    hi = np.asarray(result["lipschitz"]["upper"], float)
    for s in range(lo.shape[0]):
        ax.plot(times, lo[s], color="C0", lw=0.8)
        ax.plot(times, hi[s], color="C1", lw=0.8)
    ax.plot([], [], color="C0", label="lower estimate (PF7)")
    ax.plot([], [], color="C1", label="layer-wise upper bound (PF8)")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title("Lipschitz constant of g during training")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    outcome = result["outcome"]["labels"]
    fig.suptitle(
        "RealNVP reverse-KL VI: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in outcome.items() if v)
    )
    return png(fig)


def phase_comparison_figure(cells: dict[str, Any], dim: int) -> bytes:
    """flow_phase_d{dim}.png: P(collapse) over (β0, duration), flows beside the theory."""
    from ._base import heatmap

    betas, durations = cells["beta0"], cells["duration"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    img = None
    for ax, route in zip(axes[:2], ("flow", "theory")):
        c = cells[route]
        img = heatmap(
            ax,
            c["p_collapse"],
            c["p_collapse_ci"],
            betas,
            durations,
            "β0",
            "duration τ",
            f"{route}: P(collapse) [Wilson 95%], {c['seeds']} seeds/cell",
        )
    heatmap(
        axes[2],
        cells["flow"]["p_vanishing_weight"],
        None,
        betas,
        durations,
        "β0",
        "duration τ",
        "flow: P(vanishing weight analogue)",
    )
    assert img is not None
    fig.colorbar(img, ax=axes, fraction=0.02)
    fig.suptitle(f"J = K = 2 antipodal target, d = {dim}: RealNVP flows vs Gaussian-mixture theory")
    return png(fig)


def lipschitz_figure(report: dict[str, Any]) -> bytes:
    """flow_lipschitz.png: the bound (PF3)–(PF4) against L, trained flows placed on it."""
    fig, axes = plt.subplots(
        1,
        len(report["dims"]),
        figsize=(6 * len(report["dims"]), 4.8),
        layout="constrained",
        squeeze=False,
    )
    for ax, key in zip(axes[0], report["dims"]):
        r = report["dims"][key]
        L = np.asarray(r["curve"]["L"])
        ax.plot(L, r["curve"]["bound"], color="k", lw=2, label="TV lower bound (PF3)–(PF4)")
        ax.plot(
            L,
            r["curve"]["bound_ball"],
            color="k",
            ls="--",
            lw=1,
            label=f"same with η = {r['outside']:g} (ball of (PF8))",
        )
        for s in r["flows"]:
            c = _LABEL_COLORS[s["label"]]
            ax.plot([s["L_lower"], s["L_upper"]], [s["tv"], s["tv"]], color=c, lw=0.5, alpha=0.4)
            ax.scatter(s["L_lower"], s["tv"], color=c, s=14, marker="o")
            ax.scatter(s["L_upper"], s["tv"], color=c, s=14, marker="^")
        for name in LABELS:
            if any(s["label"] == name for s in r["flows"]):
                ax.scatter([], [], color=_LABEL_COLORS[name], label=name.replace("_", " "))
        ax.scatter([], [], color="0.4", marker="o", label="at lower estimate (PF7)")
        ax.scatter([], [], color="0.4", marker="^", label="at upper bound (PF8)")
        ax.axvline(
            r["L_threshold_cover"],
            color="C2",
            ls=":",
            label=f"L*(TV of best covering flow) = {r['L_threshold_cover']:.2f}",
        )
        ax.set_xscale("log")
        ax.set_xlabel("Lipschitz constant L")
        ax.set_ylabel("TV(q, p)")
        ax.set_title(f"d = {key}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle("push-forward bound: TV(g#N(0,I), p) ≥ B(L); flows: estimated TV (PF9)")
    return png(fig)


def mode_mass_figure(panels: list[dict[str, Any]]) -> bytes:
    """flow_mode_masses.png: per-mode mass trajectories exhibiting each outcome."""
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(7 * cols, 4.2 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        masses_panel(
            ax,
            np.asarray(panel["times"]),
            np.asarray(panel["masses"]),
            None,
            panel["rho"],
            panel["coverage"],
            panel["examples"],
        )
        ax.set_title(panel["title"], fontsize=9)
    fig.suptitle("RealNVP flows: per-mode mass trajectories, one seed per outcome")
    return png(fig)


def _weights(target) -> str:
    return "/".join(f"{w:g}" for w in target)


def _collapse_axes(ax, xlabel: str, title: str) -> None:
    """A P(collapse) axis: [0, 1], the 10% level dotted, labels and title."""
    ax.axhline(0.1, color="k", lw=0.5, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("P(collapse)")
    ax.set_title(title, fontsize=9)


def flow_sweep_figure(result: dict[str, Any]) -> bytes:
    """P(collapse) against the annealing time τ: flows (solid, Wilson 95% bars) and the theory
    (dashed), one line per β0; cells without annealing (β0 = 1) as horizontal lines. One panel
    per (target, schedule, optimizer), one row per d."""
    cells = result["cells"]
    dims = sorted({c["d"] for c in cells})
    cols = sorted({(tuple(c["target"]), c["schedule"], c["optimizer"]) for c in cells})
    fig, axes = plt.subplots(
        len(dims), len(cols), figsize=(4.2 * len(cols), 3.3 * len(dims)), squeeze=False
    )
    for i, d in enumerate(dims):
        for j, (target, schedule, optimizer) in enumerate(cols):
            ax = axes[i, j]
            here = [
                c
                for c in cells
                if c["d"] == d
                and tuple(c["target"]) == target
                and c["schedule"] == schedule
                and c["optimizer"] == optimizer
            ]
            taus = sorted({c["tau"] for c in here if c["tau"] > 0})
            for k, b0 in enumerate(sorted({c["beta0"] for c in here if c["tau"] > 0})):
                row = sorted(
                    (c for c in here if c["beta0"] == b0 and c["tau"] > 0), key=lambda c: c["tau"]
                )
                x = np.array([c["tau"] for c in row])
                p = np.array([np.nan if c["p_collapse"] is None else c["p_collapse"] for c in row])
                ci = np.array([c["ci"] for c in row])
                ax.errorbar(
                    x,
                    p,
                    yerr=np.clip([p - ci[:, 0], ci[:, 1] - p], 0.0, None),
                    color=f"C{k}",
                    marker="o",
                    capsize=2,
                    label=f"flows, β0 = {b0:g}",
                )
                if row[0].get("p_collapse_theory") is not None:
                    ax.plot(
                        x,
                        [c["p_collapse_theory"] for c in row],
                        color=f"C{k}",
                        ls="--",
                        marker="s",
                        mfc="none",
                        label=f"theory, β0 = {b0:g}",
                    )
            base = [c for c in here if c["tau"] == 0]
            if base:
                ax.axhline(base[0]["p_collapse"], color="0.4", lw=1, label="flows, no annealing")
                if base[0].get("p_collapse_theory") is not None:
                    ax.axhline(
                        base[0]["p_collapse_theory"],
                        color="0.4",
                        lw=1,
                        ls="--",
                        label="theory, no annealing",
                    )
            if taus:
                ax.set_xscale("log", base=2)
                ax.set_xticks(taus, [f"{t:g}" for t in taus])
            _collapse_axes(
                ax,
                "annealing time τ (flow time, NF6)",
                f"d = {d}, ρ = {_weights(target)}, {schedule}, {optimizer}",
            )
            if i == 0 and j == 0:
                ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return png(fig)


def flow_law_figure(law: list[dict[str, Any]]) -> bytes:
    """P(collapse) against d at the longest anneal (coloured, one colour per β0) and without
    annealing (grey): flows under SGD (solid, filled), Adam (dash-dot) and the theory (dashed,
    open). One panel per (schedule, target); the records are `laws` of the flow-theory report."""
    schedules = sorted({r["schedule"] for r in law}, key=lambda s: s != "linear")
    targets = sorted({tuple(r["target"]) for r in law})
    betas = sorted({r["beta0"] for r in law})
    fig, axes = plt.subplots(
        len(schedules),
        len(targets),
        figsize=(5 * len(targets), 3.8 * len(schedules)),
        squeeze=False,
    )
    styles = {
        ("p_collapse", "sgd"): ("-", "flows, SGD"),
        ("p_collapse", "adam"): ("-.", "flows, Adam"),
        ("p_collapse_theory", "sgd"): ("--", "theory"),
    }
    for (i, schedule), (j, target) in itertools.product(enumerate(schedules), enumerate(targets)):
        ax = axes[i, j]
        tau = None
        for (col, opt), (ls, name) in styles.items():
            for k, b0 in enumerate(betas):
                rows = sorted(
                    (
                        r
                        for r in law
                        if r["schedule"] == schedule
                        and tuple(r["target"]) == target
                        and r["beta0"] == b0
                        and r["optimizer"] == opt
                    ),
                    key=lambda r: r["d"],
                )
                if not rows:
                    continue
                tau = rows[0]["taus"][-1]
                d = [r["d"] for r in rows]
                y = [np.nan if r[col][-1] is None else r[col][-1] for r in rows]
                mfc = "none" if col == "p_collapse_theory" else f"C{k}"
                ax.plot(
                    d,
                    y,
                    ls=ls,
                    marker="o",
                    mfc=mfc,
                    color=f"C{k}",
                    label=f"{name}, β0 = {b0:g}, τ = {tau:g}",
                )
                if k == 0:
                    base = "p_unannealed" if col == "p_collapse" else "p_unannealed_theory"
                    y0 = [np.nan if r[base] is None else r[base] for r in rows]
                    ax.plot(
                        d,
                        y0,
                        ls=ls,
                        marker="s",
                        mfc="none" if mfc == "none" else "0.5",
                        color="0.5",
                        label=f"{name}, no annealing",
                    )
        ax.set_xscale("log", base=2)
        _collapse_axes(ax, "d", f"{schedule}, ρ = {_weights(target)}: longest anneal vs none")
        if i == 0 and j == 0:
            ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return png(fig)


def flow_covered_figure(panels: list[dict[str, Any]]) -> bytes:
    """Fraction of flows covering both modes against flow time (solid) and the mean mass of the
    minor mode (dotted), one line per d; the grey line marks the end of the anneal."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for k, line in enumerate(panel["lines"]):
            ax.plot(line["times"], line["covered_fraction"], color=f"C{k}", label=line["label"])
            ax.plot(line["times"], line["minor_mass"], color=f"C{k}", ls=":")
            ax.axvline(line["tau"], color="0.6", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("flow time t (NF6)")
        ax.set_ylabel("covered fraction (solid), minor-mode mass (dotted)")
        ax.set_title(panel["title"], fontsize=9)
        if panel["lines"]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)
