"""Cost of one vector-field evaluation: theory (eqs. (T1)–(T5)) against the full flow (eq. (D1)).

Both are jit-compiled and timed side by side in one run (median of repeats), for K = J = 2 and a
range of d. The theory's cost must be flat in d; the `exact` full flow grows like K·J·d.

    python benchmarks/rhs_cost.py [--dims 8,64,...] [--out benchmarks/results/rhs_cost.json]
"""

import argparse
import json
import platform

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

import modecollapse as mc  # noqa: E402


def _median_seconds(fn, *args, repeats=200):
    return median_seconds(fn, *args, repeats=repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="8,64,512,4096,32768,262144")
    parser.add_argument("--out", default="benchmarks/results/rhs_cost.json")
    args = parser.parse_args()
    dims = [int(x) for x in args.dims.split(",")]
    schedule = mc.LinearSchedule(0.2, 20.0)
    rates = mc.LearningRates(1.0, 1.0, 0.01)
    theory_rhs = jax.jit(lambda t, y, tgt, d: mc.theory_vector_field(t, y, tgt, schedule, rates, d))
    full_rhs = jax.jit(
        lambda t, y, tgt: mc.full_vector_field(t, y, (tgt, schedule, mc.ExactEstimator(), rates))
    )
    rows = []
    print(f"{'d':>8} {'theory [us]':>12} {'full exact [us]':>16} {'full/theory':>12}")
    for d in dims:
        U = jnp.zeros((2, d)).at[0, 0].set(3.0).at[1, 0].set(-3.0)
        target = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
        family = mc.IsotropicMixture(jr.normal(jr.key(0), (2, d)) / jnp.sqrt(d), jnp.zeros(2), 0.0)
        state = mc.GramState.from_models(family, target)
        stats = mc.TargetStatistics.from_target(target)
        y = (family.means, family.logits, family.log_scale)
        th = _median_seconds(theory_rhs, 1.0, state, stats, float(d))
        fu = _median_seconds(full_rhs, 1.0, y, target)
        rows.append({"dim": d, "theory_seconds": th, "full_seconds": fu, "ratio": fu / th})
        print(f"{d:>8} {th * 1e6:>12.1f} {fu * 1e6:>16.1f} {fu / th:>12.2f}", flush=True)
    report = {
        "what": "median wall time of one jit-compiled vector-field evaluation, K = J = 2, float64",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, jax {jax.__version__}, "
        f"backend {jax.default_backend()}",
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
