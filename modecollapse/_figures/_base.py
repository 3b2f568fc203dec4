"""Shared figure machinery: the matplotlib backend, PNG encoding and the annotated heatmap."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def png(fig) -> bytes:
    """Encode a matplotlib figure as PNG bytes (130 dpi) and close it.

    **Arguments:**

    - `fig`: a matplotlib figure.

    **Returns:** the PNG file's bytes.

    **Example:**
    ```python
    fig, ax = plt.subplots(); ax.plot([0, 1]); data = png(fig)
    ```
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def format_value(value) -> str:
    """A grid value as a tick label: numbers by %g, lists joined by "/"."""
    if isinstance(value, list):
        return "/".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def heatmap(ax, grid, ci, xs, ys, xname, yname, title, annotate=True):
    """Draw a probability grid (cells `grid[i][j]` in [0, 1], x index i) with optional Wilson
    intervals `ci[i][j]` written in each cell; returns the image (for a colour bar)."""
    img = ax.imshow(
        np.asarray(grid, float).T, origin="lower", cmap="magma_r", vmin=0, vmax=1, aspect="auto"
    )
    ax.set_xticks(range(len(xs)), [format_value(v) for v in xs])
    ax.set_yticks(range(len(ys)), [format_value(v) for v in ys])
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title)
    if annotate:
        for i in range(len(xs)):
            for j in range(len(ys)):
                p = grid[i][j]
                if p is None:
                    continue
                text = f"{p:.2f}"
                if ci is not None:
                    lo, hi = ci[i][j]
                    text += f"\n[{lo:.2f}, {hi:.2f}]"
                ax.text(
                    i,
                    j,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if p > 0.55 else "black",
                )
    return img
