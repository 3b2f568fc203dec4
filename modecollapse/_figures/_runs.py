"""Figures: theory lines against full-flow markers."""

from typing import Any

import numpy as np

from ._base import format_value, heatmap, plt, png

_THEORY = dict(lw=1.8, alpha=0.9)
_FULL = dict(ls="none", marker="o", ms=3.5, mfc="none")


def _series(ax, ts, theory, full, label_fn, title, colors=None):
    theory = np.asarray(theory).reshape(len(ts), -1)
    full_arr = None if full is None else np.asarray(full).reshape(len(ts), -1)
    for i in range(theory.shape[1]):
        c = f"C{i}" if colors is None else colors[i]
        ax.plot(ts, theory[:, i], color=c, label=label_fn(i), **_THEORY)
        if full_arr is not None:
            ax.plot(ts, full_arr[:, i], color=c, **_FULL)
    ax.set_title(title)
    ax.set_xlabel("t")
    ax.grid(alpha=0.3)


def _index_labels(prefix: str, shape: tuple[int, ...]):
    idx = list(np.ndindex(*shape))
    return lambda i: prefix + "".join(str(j + 1) for j in idx[i])


def overlaps_figure(result: dict[str, Any]) -> bytes:
    """overlaps.png of `modecollapse run`: R, Q, weights, scale, F and β over time."""
    ts = np.asarray(result["times"])
    th, fu = result["theory"], result["full"]
    R = np.asarray(th["R"])
    Q = np.asarray(th["Q"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    get = lambda k: None if fu is None else fu[k]  # noqa: E731
    _series(axes[0, 0], ts, R, get("R"), _index_labels("R", R.shape[1:]), "overlaps R = M Uᵀ")
    _series(axes[0, 1], ts, Q, get("Q"), _index_labels("Q", Q.shape[1:]), "overlaps Q = M Mᵀ")
    _series(axes[0, 2], ts, th["weights"], get("weights"), lambda i: f"w{i + 1}", "weights w")
    _series(axes[1, 0], ts, th["scale"], get("scale"), lambda i: "s", "scale s")
    _series(
        axes[1, 1], ts, th["objective"], get("objective"), lambda i: "F", "objective F(θ; β(t))"
    )
    axes[1, 2].plot(ts, result["beta"], color="k")
    axes[1, 2].set_title("inverse temperature β(t)")
    axes[1, 2].set_xlabel("t")
    axes[1, 2].grid(alpha=0.3)
    for ax in axes.flat[:3]:
        ax.legend(fontsize=7, ncol=2)
    d = result["config"]["dim"]
    note = "lines: theory ODE; circles: full d-dimensional flow" if fu is not None else "theory ODE"
    fig.suptitle(f"modecollapse run, d = {d} ({note})")
    fig.tight_layout()
    return png(fig)


def compare_figure(report: dict[str, Any]) -> bytes:
    """compare.png: trajectories at the largest d, agreement and cost against d."""
    rows = report["rows"]
    dims = np.array([r["dim"] for r in rows])
    ts = np.asarray(report["times"])
    big = rows[-1]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    th, fu = big["theory"], big["full"]
    R = np.asarray(th["R"])
    _series(
        axes[0, 0], ts, R, fu["R"], _index_labels("R", R.shape[1:]), f"R(t) at d = {big['dim']}"
    )
    _series(
        axes[0, 1],
        ts,
        th["weights"],
        fu["weights"],
        lambda i: f"w{i + 1}",
        f"weights at d = {big['dim']}",
    )
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(rows):
        c = cmap(i / max(1, len(rows) - 1))
        axes[0, 2].plot(ts, r["theory"]["scale"], color=c, label=f"d = {r['dim']}", **_THEORY)
        axes[0, 2].plot(ts, r["full"]["scale"], color=c, **_FULL)
    axes[0, 2].set_title("scale s(t), every d")
    axes[0, 2].set_xlabel("t")
    axes[0, 2].grid(alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=7, ncol=2)
    for k, name in enumerate(["R", "Q", "weights", "scale", "objective"]):
        vals = np.array([max(r["max_abs_diff"][name], 1e-18) for r in rows])
        axes[1, 0].loglog(dims, vals, marker="o", color=f"C{k}", label=name)
    axes[1, 0].set_title("max |full − theory| over the trajectory")
    axes[1, 0].set_xlabel("d")
    axes[1, 0].legend(fontsize=7)
    axes[1, 0].grid(alpha=0.3, which="both")
    for route, marker in (("theory", "s"), ("full", "o")):
        per_step = [1e6 * r["wall_seconds"][route] / max(1, r["steps"][route]) for r in rows]
        axes[1, 1].loglog(dims, per_step, marker=marker, label=route)
    axes[1, 1].set_title("wall time per solver step [µs]")
    axes[1, 1].set_xlabel("d")
    axes[1, 1].legend(fontsize=7)
    axes[1, 1].grid(alpha=0.3, which="both")
    for i, r in enumerate(rows):
        c = cmap(i / max(1, len(rows) - 1))
        d = r["dim"]
        axes[1, 2].plot(
            ts, np.asarray(r["theory"]["objective"]) / d, color=c, label=f"d = {d}", **_THEORY
        )
        axes[1, 2].plot(ts, np.asarray(r["full"]["objective"]) / d, color=c, **_FULL)
    axes[1, 2].set_title("objective per dimension F(θ; β(t))/d, every d")
    axes[1, 2].set_xlabel("t")
    axes[1, 2].legend(fontsize=7)
    axes[1, 2].grid(alpha=0.3)
    fig.suptitle("full d-dimensional flow (circles) against the summary-statistic ODE (lines)")
    fig.tight_layout()
    return png(fig)


def phase_figure(summary: dict[str, Any]) -> bytes:
    """phase.png of a sweep: P(collapse) with Wilson 95% intervals, and each mechanism."""
    params = summary["parameters"]
    names = list(params)
    p, ci, per = summary["p_collapse"], summary["p_collapse_ci"], summary["p_label"]
    mechanisms = ("mean_alignment", "vanishing_weight")
    title = f"{summary['route']} route, {summary['seeds']} seeds per cell"
    if "title" in summary:
        title = f"{summary['title']} — {title}"
    if len(names) >= 2:
        # first two parameters on the axes; any further ones fixed at their first value
        grid = np.asarray(p, dtype=object)
        grid = grid.reshape(grid.shape[:2] + (-1,))[:, :, 0].tolist()
        cig = np.asarray(ci, dtype=object)
        cig = cig.reshape(cig.shape[:2] + (-1, 2))[:, :, 0, :].tolist()
        xs, ys = params[names[0]], params[names[1]]
        fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
        img = heatmap(axes[0], grid, cig, xs, ys, names[0], names[1], "P(collapse) [Wilson 95%]")
        for ax, mech in zip(axes[1:], mechanisms):
            m = np.asarray(per[mech], dtype=object)
            m = m.reshape(m.shape[:2] + (-1,))[:, :, 0].tolist()
            heatmap(ax, m, None, xs, ys, names[0], names[1], f"P({mech.replace('_', ' ')})")
        fig.colorbar(img, ax=axes, fraction=0.02)
        if len(names) > 2:
            title += "; " + ", ".join(f"{n} = {format_value(params[n][0])}" for n in names[2:])
    elif len(names) == 1:
        xs = params[names[0]]
        x = np.arange(len(xs))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        arr = np.array([np.nan if v is None else v for v in p], float)
        lo = np.array([np.nan if c[0] is None else c[0] for c in ci], float)
        hi = np.array([np.nan if c[1] is None else c[1] for c in ci], float)
        ax.plot(x, arr, marker="o", color="k", label="P(collapse)")
        ax.fill_between(x, lo, hi, color="k", alpha=0.15, label="Wilson 95%")
        for k, mech in enumerate(mechanisms):
            ax.plot(
                x,
                [np.nan if v is None else v for v in per[mech]],
                marker="s",
                ls="--",
                color=f"C{k}",
                label=f"P({mech.replace('_', ' ')})",
            )
        ax.set_xticks(x, [format_value(v) for v in xs])
        ax.set_xlabel(names[0])
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = list(summary["labels"])
        ax.bar(labels, [summary["labels"][k] for k in labels], color="C0")
        ax.set_ylabel("trajectories")
        lo, hi = ci
        title += f"; P(collapse) = {p:.3f} [{lo:.3f}, {hi:.3f}]"
    fig.suptitle(title)
    return png(fig)


def agreement_figure(report: dict[str, Any]) -> bytes:
    """agreement.png: error against d (log-log) and trajectories at the smallest and largest d."""
    dims = np.array(report["dims"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    ax = axes[0]
    for k, (pair, err) in enumerate(report["errors"].items()):
        mean, std = np.array(err["mean"]), np.array(err["std"])
        slope = report["slopes"][pair]
        ax.errorbar(
            dims,
            np.maximum(mean, 1e-16),
            yerr=std,
            marker="o",
            capsize=3,
            color=f"C{k}",
            label=f"{pair} (slope {slope['value']:.2f})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_title("sup-time error, normalised statistics (mean ± std over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ts = np.asarray(report["times"])
    for ax, d in zip(axes[1:], (dims[0], dims[-1])):
        ex = report["examples"][str(d)]
        for j, (stat, idx) in enumerate(
            (("R", (0, 0)), ("R", (1, 0)), ("Q", (0, 0)), ("Q", (0, 1)))
        ):
            c = f"C{j}"
            label = f"{stat}{idx[0] + 1}{idx[1] + 1}/d"
            get = lambda route: np.asarray(ex[route][stat])[:, idx[0], idx[1]]  # noqa: E731
            ax.plot(ts, get("theory"), color=c, lw=1.8, label=label + " theory")
            ax.plot(ts, get("full"), color=c, ls="none", marker="o", ms=4, mfc="none")
            ax.plot(ts, get("sgd"), color=c, ls="none", marker="x", ms=4)
            if "limit" in ex:  # the d → ∞ route exists for reverse KL only
                ax.plot(ts, get("limit"), color=c, ls="--", lw=1)
        ax.set_title(f"d = {d}: lines theory, circles full, crosses SGD, dashed d → ∞")
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return png(fig)


def design_figure(report: dict[str, Any]) -> bytes:
    """design.png: the formula's P(collapse) + λτ landscape, the optimiser's path, and checks."""
    land = report["landscape"]
    b, t = np.asarray(land["beta0"]), np.asarray(land["duration"])
    p = np.asarray(land["p_formula"])
    price = report["price"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    ax = axes[0]
    B, Tg = np.meshgrid(b, t, indexing="ij")
    cs = ax.contourf(B, Tg, p + price * Tg, levels=20, cmap="viridis")
    ax.contour(B, Tg, p, levels=[0.05], colors="w", linestyles="--")
    fig.colorbar(cs, ax=ax, label=f"P_formula + λτ  (λ = {price:g})")
    hist = report["optimiser"]["history"]
    ax.plot([h["beta0"] for h in hist], [h["duration"] for h in hist], "r.-", ms=3, lw=1)
    opt = report["optimum"]
    ax.plot(opt["beta0"], opt["duration"], "r*", ms=14, label="optimum")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("β0")
    ax.set_ylabel("annealing time τ")
    ax.set_title(f"{report['family']} schedule: objective (white dashes: P_formula = 5%)")
    ax.legend(loc="lower left")
    ax = axes[1]
    ax.plot([h["p"] for h in hist], label="P_formula along the path")
    ax.plot([h["objective"] for h in hist], label="objective P + λτ")
    best = min(range(len(hist)), key=lambda i: hist[i]["objective"])
    lo, hi = opt["p_simulated_ci"]
    ax.errorbar(
        [best],
        [opt["p_simulated"]],
        yerr=[[opt["p_simulated"] - lo], [hi - opt["p_simulated"]]],
        fmt="s",
        color="C3",
        capsize=4,
        label="simulated at the optimum (theory ODE, Wilson 95%)",
    )
    ax.set_xlabel("Adam step")
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("formula along the optimisation, and simulation")
    return png(fig)
