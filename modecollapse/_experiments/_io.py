"""Atomic output files, JSON records and timed (compile, then run) calls."""

import json
import os
import tempfile
import time
from typing import Any

import jax


def write_file(path: str, data: bytes) -> None:
    """Write one file atomically: a temporary name in the same folder (created), then a rename.

    **Arguments:**

    - `path`: the file; `data`: its bytes.

    **Returns:** None. On any error nothing is left behind, and an older file stays as it was.

    **Example:**
    ```python
    write_file("docs/figures/phase.png", png_bytes)
    ```
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_outputs(out: str, files: dict[str, bytes]) -> None:
    """Write every file atomically (temporary name, then rename); everything is rendered first."""
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
        write_file(os.path.join(out, name), data)


def to_json(obj: Any) -> bytes:
    """A JSON record as bytes (indented, one trailing newline), ready for `write_outputs`."""
    return (json.dumps(obj, indent=1) + "\n").encode()


def timed(fn, *args, **kwargs) -> tuple[Any, dict[str, float]]:
    """Compile ahead of time, then run: the two wall times are reported separately.

    **Arguments:**

    - `fn`: a jitted function (`jax.jit` / `eqx.filter_jit`, anything with `.lower`); a plain
      function is wrapped in `jax.jit`.
    - `args`, `kwargs`: its arguments.

    **Returns:** `(output, {"compile": seconds, "solve": seconds})`, the output ready (blocked on).

    **Example:**
    ```python
    traj, seconds = timed(solve_theory, state, stats, schedule, ts, dim=64)
    seconds["solve"]
    ```
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    mid = time.perf_counter()
    out = jax.block_until_ready(compiled(*args, **kwargs))
    return out, {"compile": mid - start, "solve": time.perf_counter() - mid}
