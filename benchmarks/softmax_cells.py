"""The randomized route (G9), `qmc_softmax_stats`, against independent references.

Measures, in one run (docs/theory.md, §8, (G9)):

- the 36 stored 4-logit hard cases (`tests/data/softmax_reference.npz`: nested adaptive
  quadrature, independent of every rule), for `--seeds` scramble seeds: the largest error of
  E[LSE], E[π] and E[ππᵀ], the share of entries (of those with an error above 1e-9) whose error
  exceeds 3 standard errors (SE), the largest error / SE among them, and the largest
  error / (8 SE + 4e-6), the bound `softmax_stats_error` relies on (< 1: it held everywhere);
- exchangeable logits at n = 5, 6, 8 (mean 3·1, cov a I + 7·11ᵀ, a = 1, 10², 10⁴; E[π] = 1/n
  exactly): the largest E[π] error of (G9), of the graded rule (n ≤ 6) and of the legacy rule,
  the SE, and the seconds per evaluation of (G9) (median of 3, compiled);
- the randomized hard cases of `benchmarks/softmax_stats.py` at n = 5 … 8 (`--cases` per n: ranks
  1, 2, n − 1 and n, antipodal, equal means; variances 1e-3 … 1e4, means to ±50), where no
  quadrature reference exists: the legacy default's and the graded rule's distance to (G9),
  |rule − cells|, with (G9)'s bound beside it. The rule's true error lies within the bound of
  that distance.

    python benchmarks/softmax_cells.py [--seeds 4] [--cases 6] [--out FILE.json]
"""

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

import modecollapse as mc  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "softmax_reference.npz"
BOUND_SE, BOUND_FLOOR = 8.0, 4e-6


_stats = jax.jit(mc.expected_softmax_stats, static_argnames="rule")


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in tree])


def stored_cases(seeds):
    with np.load(REFERENCE) as f:
        means, covs, refs = f["mean"], f["cov"], f["reference"]
    errs, ses = [], []
    for seed in range(seeds):
        for mean, cov in zip(means, covs):
            value, se = mc.qmc_softmax_stats(jnp.asarray(mean), jnp.asarray(cov), seed=seed)
            errs.append(_flat(value))
            ses.append(_flat(se))
    errs = np.abs(np.stack(errs) - np.tile(refs, (seeds, 1)))
    ses = np.stack(ses)
    # error / SE over the entries whose error is above rounding (exact entries have SE 0)
    ratio = (errs / np.maximum(ses, 1e-300))[errs > 1e-9]
    return {
        "cases": int(len(refs)),
        "seeds": seeds,
        "entries": int(errs.size),
        "max_abs_error": {
            "lse": float(errs[:, 0].max()),
            "resp": float(errs[:, 1:5].max()),
            "outer": float(errs[:, 5:].max()),
        },
        "entries_above_1e-9": int(ratio.size),
        "share_beyond_3_se": float(np.mean(ratio > 3.0)),
        "max_error_over_se": float(ratio.max()),
        "max_error_over_bound": float(np.max(errs / (BOUND_SE * ses + BOUND_FLOOR))),
    }


def exchangeable(n, a):
    mean, cov = jnp.full((n,), 3.0), a * jnp.eye(n) + 7.0 * jnp.ones((n, n))
    (_, resp, _), (_, resp_se, _) = mc.qmc_softmax_stats(mean, cov)
    row = {
        "n": n,
        "a": a,
        "cells_resp_error": float(np.max(np.abs(np.asarray(resp) - 1.0 / n))),
        "cells_resp_se": float(np.max(np.asarray(resp_se))),
        "cells_seconds": median_seconds(lambda m, c: mc.qmc_softmax_stats(m, c, seed=1), mean, cov),
    }
    rules = ("graded", "legacy") if n <= 6 else ("legacy",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mc.SoftmaxAccuracyWarning)
        for rule in rules:
            _, r, _ = _stats(mean, cov, rule=rule)
            row[f"{rule}_resp_error"] = float(np.max(np.abs(np.asarray(r) - 1.0 / n)))
    return row


def hard_cases_against_cells(n, count):
    """max over the cases and entries of |rule − cells| for the legacy and graded rules, and
    the largest bound 8 SE + 4e-6 of (G9) among those entries."""
    from softmax_stats import hard_cases  # benchmarks/softmax_stats.py (imports tests/ helpers)

    row = {"n": n, "cases": count}
    worst = {"legacy": (0.0, 0.0, ""), "graded": (0.0, 0.0, "")}
    for mean, cov, kind in hard_cases(n, count, seed=n):
        mean, cov = jnp.asarray(mean), jnp.asarray(cov)
        value, se = mc.qmc_softmax_stats(mean, cov)
        cells, bound = _flat(value), BOUND_SE * _flat(se) + BOUND_FLOOR
        for rule in worst:
            dist = np.abs(_flat(_stats(mean, cov, rule=rule)) - cells)
            j = int(np.argmax(dist))
            if dist[j] > worst[rule][0]:
                worst[rule] = (float(dist[j]), float(bound[j]), kind)
    for rule, (dist, bound, kind) in worst.items():
        row[f"{rule}_max_distance_to_cells"] = dist
        row[f"{rule}_bound_there"] = bound
        row[f"{rule}_worst_kind"] = kind
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cases", type=int, default=6, help="hard cases per n = 5 … 8")
    parser.add_argument("--out", default="benchmarks/results/softmax_cells.json")
    args = parser.parse_args()
    start = time.perf_counter()
    stored = stored_cases(args.seeds)
    print(json.dumps(stored, indent=1), flush=True)
    rows = []
    for n in (5, 6, 8):
        for a in (1.0, 1e2, 1e4):
            rows.append(exchangeable(n, a))
            print(json.dumps(rows[-1]), flush=True)
    hard = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mc.SoftmaxAccuracyWarning)
        for n in (5, 6, 7, 8):
            hard.append(hard_cases_against_cells(n, args.cases))
            print(json.dumps(hard[-1]), flush=True)
    out = {
        "setting": "qmc_softmax_stats (G9) at 2^14 points x 8 replicates per cell",
        "machine": f"{platform.machine()}, jax {jax.__version__}, backend {jax.default_backend()}",
        "bound": f"{BOUND_SE} SE + {BOUND_FLOOR}",
        "stored_four_logit_cases": stored,
        "exchangeable": rows,
        "hard_cases_against_cells": hard,
        "seconds": time.perf_counter() - start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
