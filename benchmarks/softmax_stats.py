"""Softmax statistics of a Gaussian logit vector: the rule (G5)–(G6) against the legacy rules.

For n = 3 … 8 logits this measures, in one run:

- cost: compile time and time per evaluation of `expected_softmax_stats` under `jax.jit` +
  `jax.vmap` over a batch of 64, for the graded rule (G5)–(G6) and for the legacy rule (48²
  Gauss–Hermite at n = 3, 20³ at n = 4, 4096 Halton points at n ≥ 5), side by side, and their
  ratio; and which of the two is the default for that n;
- accuracy: the maximum absolute error over every entry of (E[LSE], E[π], E[ππᵀ]) on randomized
  hard cases (variances up to 1e4, singular covariances of every rank, means up to ±50), against
  a high-precision reference, for both rules; and the smallest ratio estimate / error of
  `softmax_stats_error(..., rule="graded")` (≥ 1 means the estimate bounded the error).

References: rank-one difference covariances (any n) by adaptive quadrature along the line
(`scipy.integrate.quad_vec`, broken at every tie); n = 3 full rank by nested adaptive
quadrature; n = 4 by (G5) on another logit and nested adaptive Gauss–Kronrod quadrature over the
plane (`tests/softmax_reference.py`), all independent of the rule; other n ≥ 5 cases by the same
rule refined (more Gauss–Legendre nodes per panel, more panels, a finer rule across the lines),
a self-convergence check only. `--ns` selects the n; results for other n already in `--out` are
kept.

    python benchmarks/softmax_stats.py [--cases 24] [--ns 3,4,5] [--out FILE.json]
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/timing.py)

import modecollapse as mc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from softmax_reference import four_logit_reference  # noqa: E402
from test_expectations import _line_reference, _plane_reference  # noqa: E402

_LEGACY_NODES = {3: 48, 4: 20}


def _compiled(fn, *args):
    start = time.perf_counter()
    out = jax.jit(fn).lower(*args).compile()
    return out, time.perf_counter() - start


def _median_seconds(fn, *args, repeats=7):
    return median_seconds(fn, *args, repeats=repeats)


def hard_cases(n, count, seed):
    """(mean, cov, kind): ranks 1, 2, n − 1, full, antipodal c M Mᵀ, equal means."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = ["rank1", "rank2", "rank n-1", "full", "antipodal", "equal means"][i % 6]
        mean = rng.uniform(-1, 1, n) * rng.choice([0.0, 1.0, 5.0, 50.0])
        if kind == "equal means":
            mean = np.full(n, rng.uniform(-50, 50))
        var = 10 ** rng.uniform(-3, 4)
        if kind == "antipodal":
            M = rng.normal(size=((n + 1) // 2, 4))
            M = np.concatenate([M, -M])[:n]
            cov = var * M @ M.T / 4
        else:
            r = {"rank1": 1, "rank2": 2, "rank n-1": n - 1}.get(kind, n)
            A = rng.normal(size=(n, r))
            cov = var * A @ A.T / r
        out.append((np.clip(mean, -50, 50), cov, kind))
    return out


def _flat(stats):
    lse, resp, outer = stats
    return np.concatenate([[float(lse)], np.asarray(resp), np.asarray(outer).ravel()])


def _difference_eigen(cov):
    n = cov.shape[0]
    D = np.concatenate([-np.ones((n - 1, 1)), np.eye(n - 1)], 1)
    return np.linalg.eigh(D @ cov @ D.T)


def reference(mean, cov):
    """A high-precision value of the flattened statistics, and how it was computed."""
    n = len(mean)
    lam, V = _difference_eigen(cov)
    if lam[-1] <= 0 or lam[-2] <= 1e-12 * lam[-1]:
        # rank ≤ 1: δ = D mean + v Z, i.e. ℓ = mean + (0, v) Z up to a common shift, which
        # leaves π unchanged and E[LSE] too (LSE(ℓ + c 1) = LSE(ℓ) + c, E[c] = 0)
        v = np.zeros(n - 1) if lam[-1] <= 0 else V[:, -1] * np.sqrt(lam[-1])
        return _line_reference(mean, np.concatenate([[0.0], v])), "adaptive line quadrature"
    if n == 3:
        return _plane_reference(mean, cov), "nested adaptive quadrature"
    if n == 4:
        return four_logit_reference(mean, cov), "(G5) + nested adaptive Gauss-Kronrod"
    ref = mc.refined_softmax_stats(jnp.asarray(mean), jnp.asarray(cov))
    return _flat(ref), "refined rule (self-convergence)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--ns", default="3,4,5")
    parser.add_argument("--out", default="benchmarks/results/softmax_stats.json")
    args = parser.parse_args()
    results = {"platform": platform.platform(), "jax": jax.__version__, "per_n": {}}
    if Path(args.out).exists():
        results["per_n"] = json.loads(Path(args.out).read_text()).get("per_n", {})
    for n in [int(x) for x in args.ns.split(",")]:
        batch = 64 if n <= 4 else 8  # the two-line rule at n = 5 costs seconds per case
        cases = hard_cases(n, max(batch, args.cases), seed=n)
        means = jnp.asarray(np.stack([c[0] for c in cases[:batch]]))
        covs = jnp.asarray(np.stack([c[1] for c in cases[:batch]]))
        legacy_nodes = _LEGACY_NODES.get(n)
        graded = lambda m, c: mc.expected_softmax_stats(m, c, rule="graded")  # noqa: E731
        legacy = lambda m, c: mc.expected_softmax_stats(m, c, legacy_nodes, rule="legacy")  # noqa: E731
        new, c_new = _compiled(jax.vmap(graded), means, covs)
        old, c_old = _compiled(jax.vmap(legacy), means, covs)
        t_new = _median_seconds(new, means, covs, repeats=5) / batch
        t_old = _median_seconds(old, means, covs, repeats=5) / batch
        one_new, one_old = jax.jit(graded), jax.jit(legacy)
        estimate = jax.jit(lambda m, c: mc.softmax_stats_error(m, c, rule="graded"))
        err_new, err_old, est_ratio, worst, by_kind, references = 0.0, 0.0, np.inf, None, {}, set()
        for mean, cov, kind in cases[: args.cases]:
            ref, how = reference(mean, cov)
            references.add(how)
            m, c = jnp.asarray(mean), jnp.asarray(cov)
            err = np.abs(_flat(one_new(m, c)) - ref)
            e_old = np.abs(_flat(one_old(m, c)) - ref)
            est = _flat(estimate(m, c))
            est_ratio = min(est_ratio, float(np.min(est / np.maximum(err, 1e-300))))
            by_kind[kind] = max(by_kind.get(kind, 0.0), float(np.max(err)))
            if np.max(err) > err_new:
                err_new, worst = float(np.max(err)), kind
            err_old = max(err_old, float(np.max(e_old)))
        results["per_n"][str(n)] = {
            "seconds_per_eval_new": t_new,
            "seconds_per_eval_legacy": t_old,
            "cost_ratio_new_over_legacy": t_new / t_old,
            "compile_seconds_new": c_new,
            "compile_seconds_legacy": c_old,
            "default_rule": mc.default_softmax_rule(n),
            "legacy_rule": f"{legacy_nodes}^{n - 1} Gauss-Hermite" if n <= 4 else "4096 Halton",
            "new_rule": "graded (G5), (G6), (G8)" if n in (4, 5) else "graded (G5)-(G6)",
            "batch": batch,
            "cases": args.cases,
            "max_abs_error_new": err_new,
            "max_abs_error_new_by_kind": by_kind,
            "worst_kind": worst,
            "max_abs_error_legacy": err_old,
            "min_estimate_over_error": est_ratio,
            "references": sorted(references),
        }
        print(n, json.dumps(results["per_n"][str(n)]), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
