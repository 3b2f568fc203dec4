"""Atomic output files, JSON records and timed (compile, then run) calls."""

import json
import os
import tempfile
import time
from typing import Any

import jax


def write_outputs(out: str, files: dict[str, bytes]) -> None:
    """Write every file atomically (temporary name, then rename); everything is rendered first."""
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(out, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


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
