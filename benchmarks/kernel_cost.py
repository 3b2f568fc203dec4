"""Cost of the 1-D integral kernel: the joint kernel (eqs. (I5)–(I7)) against the previous kernel.

`sigmoid_moments(orders, m, v)` (docs/theory.md §8) is timed side by side with a frozen copy of
the previous kernel (below, `_old_sigmoid_moment`: 48-node Gauss–Hermite for v < 0.8 and closed
form + 81-node Gauss–Legendre for v ≥ 0.8, both branches evaluated, one call per order), under
`jax.jit(jax.vmap(...))` on a batch of (m, v) pairs spread over m ∈ [−50, 50], v ∈ [0, 1e4]
(log-uniform v, one pair in 16 with v = 0), median of repeats, in float64 and float32:

- all six orders −1…4: six previous calls against one joint call (the headline ratio);
- the theory's set (−1, 0, 1): three previous calls against one joint call;
- a single order (n = 0);
- the first derivative (a jvp in m and v) of the set (−1, 0, 1).

The measured maximum errors of the dense scan (benchmarks/kernel_accuracy.py) are copied into the
report when its output exists.

    python benchmarks/kernel_cost.py [--batch 65536] [--repeats 15]
        [--out benchmarks/results/kernel_cost.json]
"""

import argparse
import functools
import json
import math
import os
import platform

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jaxtyping import Array  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

from modecollapse import sigmoid_moments  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The previous kernel, frozen for comparison (verbatim but for the `_old` prefix of its names).
# ---------------------------------------------------------------------------------------------
# Below `_V_SWITCH`: Gauss–Hermite with `_GH_ORDER` nodes. At and above: the split (I2)–(I4) with
# Gauss–Legendre on `_PANELS` = (a, b, nodes) covering [0, 36]. Chosen by measurement against
# adaptive quadrature: each branch is accurate to ≤ 3e-13 (n ≤ 4) on its side of the switch; the
# total is 48 + 81 = 129 function evaluations per (m, v).
_V_SWITCH = 0.8
_GH_ORDER = 48
_PANELS = (
    (0.0, 1.25, 8),
    (1.25, 2.5, 8),
    (2.5, 4.0, 8),
    (4.0, 5.5, 8),
    (5.5, 7.5, 8),
    (7.5, 10.0, 8),
    (10.0, 13.0, 8),
    (13.0, 17.0, 8),
    (17.0, 22.0, 8),
    (22.0, 28.0, 5),
    (28.0, 36.0, 4),
)


@functools.cache
def _old_gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite.hermgauss(n)
    # ∫ e^{−t²} g(t) dt ≈ Σ w g(t); with z = √2 t this is √π E[g(Z/√2)].
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


@functools.cache
def _old_legendre_panels() -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = [], []
    for a, b, k in _PANELS:
        t, w = np.polynomial.legendre.leggauss(k)
        nodes.append(0.5 * (a + b) + 0.5 * (b - a) * t)
        weights.append(0.5 * (b - a) * w)
    return np.concatenate(nodes), np.concatenate(weights)


@functools.cache
def _old_sigmoid_derivative_poly(n: int) -> tuple[float, ...]:
    """Coefficients (lowest degree first) of P_n with σ^{(n)} = P_n(σ) (eq. (I4))."""
    p = np.polynomial.Polynomial([0.0, 1.0])
    ds = np.polynomial.Polynomial([0.0, 1.0, -1.0])  # σ' = σ(1 − σ)
    for _ in range(n):
        p = p.deriv() * ds
    return tuple(float(c) for c in p.coef)


def _old_horner(coef: tuple[float, ...], s: Array) -> Array:
    out = jnp.full_like(s, coef[-1])
    for c in reversed(coef[:-1]):
        out = out * s + c
    return out


def _old_f_reflected(n: int, y: Array) -> Array:
    """σ^{(n)}(−y) for y ≥ 0, n ≥ 1: P_n(σ(−y)), accurate in the tail where σ(−y) ≈ e^{−y}."""
    return _old_horner(_old_sigmoid_derivative_poly(n), jax.nn.sigmoid(-y))


def _old_f(n: int, x: Array) -> Array:
    """f_n(x), elementwise, accurate in both tails."""
    if n == -1:
        return jax.nn.softplus(x)
    if n == 0:
        return jax.nn.sigmoid(x)
    # Evaluate on the left, where σ is small and has full relative precision (eq. (I4)).
    parity = 1.0 if n % 2 == 1 else -1.0
    return jnp.where(x > 0, parity, 1.0) * _old_f_reflected(n, jnp.abs(x))


def _old_normal_cdf(t: Array) -> Array:
    # erfc keeps full relative precision in the lower tail.
    return 0.5 * jax.lax.erfc(-t / math.sqrt(2.0))


def _old_normal_pdf(t: Array) -> Array:
    return jnp.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)


def _old_small_variance(n: int, m: Array, v: Array) -> Array:
    """Gauss–Hermite in z; for 0 ≤ v ≤ _V_SWITCH."""
    z, w = _old_gauss_hermite(_GH_ORDER)
    z = jnp.asarray(z, m.dtype)
    w = jnp.asarray(w, m.dtype)
    x = m[..., None] + jnp.sqrt(v)[..., None] * z
    return jnp.sum(w * _old_f(n, x), axis=-1)


def _old_large_variance(n: int, m: Array, v: Array) -> Array:
    """Closed form + Gauss–Legendre remainder on [0, 36], eqs. (I2)–(I4); for v ≥ _V_SWITCH."""
    y, w = _old_legendre_panels()
    y = jnp.asarray(y, m.dtype)
    w = jnp.asarray(w, m.dtype)
    sd = jnp.sqrt(v)
    mm, ss = m[..., None], sd[..., None]
    # N(±y; m, v), computed directly: the cosh/sinh forms overflow for large |m| y / v.
    density_plus = _old_normal_pdf((y - mm) / ss) / ss
    density_minus = _old_normal_pdf((y + mm) / ss) / ss
    t = m / sd
    if n == -1:  # eq. (I2)
        remainder = jnp.log1p(jnp.exp(-y)) * (density_plus + density_minus)
        closed = m * _old_normal_cdf(t) + sd * _old_normal_pdf(t)
    elif n == 0:  # eq. (I3)
        remainder = jax.nn.sigmoid(-y) * (density_minus - density_plus)
        closed = _old_normal_cdf(t)
    else:  # eq. (I4)
        parity = 1.0 if n % 2 == 1 else -1.0
        remainder = _old_f_reflected(n, y) * (density_minus + parity * density_plus)
        closed = jnp.zeros_like(m)
    return closed + jnp.sum(w * remainder, axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _old_sigmoid_moment(n: int, m: Array, v: Array) -> Array:
    v = jnp.where(v > 0, v, 0.0)  # v < 0 (e.g. round-off in an ODE) is read as v = 0
    small = v < _V_SWITCH
    # Each branch only ever sees variances inside its own domain: no NaN/inf in the unused one.
    v_small = jnp.where(small, v, 0.0)
    v_large = jnp.where(small, _V_SWITCH, v)
    out = jnp.where(small, _old_small_variance(n, m, v_small), _old_large_variance(n, m, v_large))
    return jnp.where(v == 0, _old_f(n, m), out)


@_old_sigmoid_moment.defjvp
def _old_sigmoid_moment_jvp(
    n: int, primals: tuple[Array, Array], tangents: tuple[Array, Array]
) -> tuple[Array, Array]:
    # Heat equation, eq. (I1): ∂_m E[f_n] = E[f_{n+1}], ∂_v E[f_n] = ½ E[f_{n+2}].
    m, v = primals
    dm, dv = tangents
    out = _old_sigmoid_moment(n, m, v)
    d_out = _old_sigmoid_moment(n + 1, m, v) * dm + 0.5 * _old_sigmoid_moment(n + 2, m, v) * dv
    return out, d_out


# ---------------------------------------------------------------------------------------------


def _median_seconds(fn, *args, repeats):
    return median_seconds(fn, *args, repeats=repeats)


def _old_set(orders):
    return lambda m, v: tuple(_old_sigmoid_moment(n, m, v) for n in orders)


def _new_set(orders, kernel="accurate"):
    return lambda m, v: sigmoid_moments(orders, m, v, kernel=kernel)


def _jvp_of(fn):
    def jvp(m, v):
        return jax.jvp(fn, (m, v), (jnp.ones_like(m), jnp.ones_like(v)))

    return jvp


def _side_by_side(fn_a, fn_b, jvp, m, v, repeats):
    """Median ns per point of two kernels (or their jvps) under jit(vmap), interleaved so that
    both see the same load."""
    if jvp:
        fn_a, fn_b = _jvp_of(fn_a), _jvp_of(fn_b)
    fn_a, fn_b = jax.jit(jax.vmap(fn_a)), jax.jit(jax.vmap(fn_b))
    t_a, t_b = [], []
    for _ in range(3):
        t_a.append(_median_seconds(fn_a, m, v, repeats=repeats))
        t_b.append(_median_seconds(fn_b, m, v, repeats=repeats))
    return tuple(1e9 * float(np.median(t)) / m.shape[0] for t in (t_a, t_b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1 << 16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/kernel_cost.json")
    parser.add_argument("--accuracy", default="benchmarks/results/kernel_accuracy.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    m = rng.uniform(-50.0, 50.0, args.batch)
    v = np.exp(rng.uniform(math.log(1e-10), math.log(1e4), args.batch))
    v[::16] = 0.0
    cases = {
        "six orders -1..4": (tuple(range(-1, 5)), False),
        "theory set (-1, 0, 1)": ((-1, 0, 1), False),
        "single order 0": ((0,), False),
        "jvp of (-1, 0, 1)": ((-1, 0, 1), True),
    }
    rows = []
    print(f"{'case':<24} {'dtype':<8} {'previous [ns]':>14} {'joint [ns]':>11} {'ratio':>7}")
    for dtype in (jnp.float64, jnp.float32):
        mm, vv = jnp.asarray(m, dtype), jnp.asarray(v, dtype)
        for name, (orders, jvp) in cases.items():
            per_old, per_new = _side_by_side(
                _old_set(orders), _new_set(orders), jvp, mm, vv, args.repeats
            )
            rows.append(
                {
                    "case": name,
                    "dtype": jnp.dtype(dtype).name,
                    "previous_ns_per_point": per_old,
                    "joint_ns_per_point": per_new,
                    "ratio": per_old / per_new,
                }
            )
            print(
                f"{name:<24} {jnp.dtype(dtype).name:<8} {per_old:>14.1f} {per_new:>11.1f} "
                f"{per_old / per_new:>7.1f}",
                flush=True,
            )
    # The fast rule (I6) against the accurate one (I7), float64, interleaved in the same way.
    fast_rows = []
    mm, vv = jnp.asarray(m), jnp.asarray(v)
    for name in ("theory set (-1, 0, 1)", "jvp of (-1, 0, 1)"):
        orders, jvp = cases[name]
        per_acc, per_fast = _side_by_side(
            _new_set(orders), _new_set(orders, "fast"), jvp, mm, vv, args.repeats
        )
        fast_rows.append(
            {"case": name, "accurate_ns_per_point": per_acc, "fast_ns_per_point": per_fast}
        )
        print(f"fast: {name:<24} {per_acc:>8.1f} {per_fast:>8.1f} {per_acc / per_fast:>6.2f}")
    report = {
        "what": "median wall time per (m, v) pair under jax.jit(jax.vmap(...)), batch "
        f"{args.batch}: the previous kernel (one call per order) against sigmoid_moments",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} "
        f"cores, jax {jax.__version__}, backend {jax.default_backend()}",
        "rows": rows,
        "fast_rule": fast_rows,
    }
    if os.path.exists(args.accuracy):
        with open(args.accuracy) as f:
            report["max_abs_error"] = json.load(f)["max_abs_error"]
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
