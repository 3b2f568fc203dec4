"""Dense accuracy scan of the 1-D integral kernel `sigmoid_moments` against adaptive quadrature.

The reference is `scipy.integrate.quad_vec` in z (all orders −1…6 at once) on [−13, 13], broken
at the step/kink z0 = −m/√v and at z0 ± {1, 4, 12, 40}/√v, as in tests/test_integrals.py. The grid
is m ∈ {0, ±10^{−4} … ±50} (log-spaced) by v ∈ {0} ∪ [1e−10, 1e4] (log-spaced, plus the points
0.8 and 1), and a randomized set (m uniform, v log-uniform); every (m, v) is representable in
float32, so the same reference serves both dtypes. Writes the maximum absolute error per order
(float64 and float32) to --out, and the grid with its reference values to --table (the table that
tests/test_integrals.py checks against).

    python benchmarks/kernel_accuracy.py [--n-m 30] [--n-v 50] [--n-random 500] [--reuse]
"""

import argparse
import functools
import json
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402

from modecollapse import sigmoid_moments  # noqa: E402

ORDERS = tuple(range(-1, 7))


@functools.cache
def _poly(n: int) -> np.ndarray:
    """σ^{(n)} = P_n(σ), coefficients highest degree first (independent of the module's own)."""
    p = np.poly1d([1.0, 0.0])
    ds = np.poly1d([-1.0, 1.0, 0.0])
    for _ in range(n):
        p = p.deriv() * ds
    return p.coeffs


def _f_all(x: float) -> np.ndarray:
    """(f_{-1}(x), …, f_6(x)) in float64, accurate in both tails."""
    e = math.exp(-abs(x))
    s = e / (1.0 + e)  # σ(−|x|)
    out = [max(x, 0.0) + math.log1p(e), s if x < 0 else 1.0 - s]
    for n in ORDERS[2:]:
        val = np.polyval(_poly(n), s)
        out.append(val if (x <= 0 or n % 2 == 1) else -val)
    return np.array(out)


def reference(m: float, v: float) -> np.ndarray:
    """E[f_n(m + √v Z)] for n = −1…6 by adaptive quadrature in z."""
    if v == 0:
        return _f_all(m)
    sd = math.sqrt(v)
    z0 = -m / sd
    pts = list(np.arange(-13.0, 13.5, 2.0)) + [
        z0 + d / sd for d in (0, 1, -1, 4, -4, 12, -12, 40, -40)
    ]
    pts = np.unique(np.clip(pts, -13.0, 13.0))
    c = 1.0 / math.sqrt(2.0 * math.pi)

    def integrand(z):
        return _f_all(m + sd * z) * (c * math.exp(-0.5 * z * z))

    total = np.zeros(len(ORDERS))
    for a, b in zip(pts[:-1], pts[1:]):
        total += integrate.quad_vec(integrand, a, b, epsabs=1e-16, epsrel=1e-14, limit=200)[0]
    return total


def grid(n_m: int, n_v: int, n_random: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.logspace(-4, math.log10(50.0), n_m)
    ms = np.concatenate([-pos[::-1], [0.0], pos])
    vs = np.concatenate([[0.0], np.logspace(-10, 4, n_v), [0.8, 1.0]])
    m, v = (a.ravel() for a in np.meshgrid(ms, vs, indexing="ij"))
    rng = np.random.default_rng(1)
    m = np.concatenate([m, rng.uniform(-50.0, 50.0, n_random)])
    v = np.concatenate([v, np.exp(rng.uniform(math.log(1e-10), math.log(1e4), n_random))])
    # Representable in float32, so that one reference serves both dtypes.
    return m.astype(np.float32).astype(np.float64), v.astype(np.float32).astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-m", type=int, default=30)
    parser.add_argument("--n-v", type=int, default=50)
    parser.add_argument("--n-random", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results/kernel_accuracy.json")
    parser.add_argument("--table", default="tests/data/integrals_reference.npz")
    parser.add_argument(
        "--reuse", action="store_true", help="read the grid and reference from --table"
    )
    args = parser.parse_args()
    if args.reuse:
        data = np.load(args.table)
        m, v, ref = data["m"], data["v"], data["reference"]
    else:
        m, v = grid(args.n_m, args.n_v, args.n_random)
        start = time.perf_counter()
        ref = np.stack([reference(a, b) for a, b in zip(m, v)], axis=-1)
        print(f"{m.size} points, reference in {time.perf_counter() - start:.0f} s")
    errors = {}
    # the accurate rule (float64: (I7), float32: (I5)), and the fast rule (I6) in float64
    rules = ((jnp.float64, "accurate"), (jnp.float32, "accurate"), (jnp.float64, "fast"))
    for dtype, kernel in rules:
        out = sigmoid_moments(ORDERS, jnp.asarray(m, dtype), jnp.asarray(v, dtype), kernel=kernel)
        name = jnp.dtype(dtype).name + ("" if kernel == "accurate" else f"_{kernel}")
        errors[name] = {}
        for n, o, r in zip(ORDERS, out, ref):
            err = np.abs(np.asarray(o, np.float64) - r)
            i = int(np.argmax(err))
            rel = float(np.max(err / np.maximum(1.0, np.abs(r))))
            errors[name][str(n)] = {
                "max_abs": float(err[i]),
                "at_m": float(m[i]),
                "at_v": float(v[i]),
                "max_rel_where_above_1": rel,
            }
            print(
                f"{name} n={n:>2}: max abs {err[i]:.2e} at m={m[i]:.4g}, v={v[i]:.4g}"
                f" (relative for |E| > 1: {rel:.1e})"
            )
    report = {
        "what": "max |sigmoid_moments - quad| per order over the dense grid and random points"
        " (float64: the accurate rule (I7); float32: (I5); float64_fast: kernel='fast', eq. (I6))",
        "points": int(m.size),
        "grid": "m: 0, ±logspace(-4, log10 50); v: 0, logspace(-10, 4), 0.8, 1; plus random",
        "max_abs_error": errors,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    if not args.reuse:
        np.savez_compressed(args.table, m=m, v=v, orders=np.array(ORDERS), reference=ref)
        print(f"wrote {args.table}")


if __name__ == "__main__":
    main()
