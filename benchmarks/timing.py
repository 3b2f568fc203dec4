"""The one timing helper of the benchmarks: the median wall time of a compiled call."""

import time

import jax
import numpy as np


def median_seconds(fn, *args, repeats: int = 3) -> float:
    """Median seconds of `fn(*args)` over `repeats` calls, after one untimed (compiling) call.

    **Example:** `median_seconds(jax.jit(f), x, repeats=7)`
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))
