"""Write tests/data/softmax_reference.npz: independent references for 4-logit softmax statistics.

Hard cases (ranks 1, 2, 3 and full, antipodal c M Mᵀ, equal means; variances 1e-3 … 1e4, means
up to ±50, as `softmax_stats.hard_cases`), and as many again rescaled to a largest variance of
1e2 … 1e4 (the regime where tensor rules fail), with E[LSE], E[π], E[ππᵀ] from
`tests/softmax_reference.four_logit_reference`: (G5) on a different logit than the package's
rule, then nested adaptive Gauss–Kronrod quadrature over the remaining plane (tolerance 1e-11).
About 10–60 s per case on one core.

    python benchmarks/softmax_reference.py [--cases 18] [--out tests/data/softmax_reference.npz]
"""

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from softmax_stats import hard_cases  # noqa: E402  (benchmarks/softmax_stats.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from softmax_reference import four_logit_reference  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=18)
    parser.add_argument("--large", type=int, default=18)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="tests/data/softmax_reference.npz")
    args = parser.parse_args()
    cases = hard_cases(4, args.cases, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    for mean, cov, kind in hard_cases(4, args.large, seed=args.seed + 2):
        top = max(np.max(np.diag(cov)), 1e-300)
        cases.append((mean, cov * 10 ** rng.uniform(2, 4) / top, kind + ", large"))
    means, covs, kinds, refs, seconds = [], [], [], [], []
    for mean, cov, kind in cases:
        start = time.perf_counter()
        refs.append(four_logit_reference(mean, cov))
        seconds.append(time.perf_counter() - start)
        means.append(mean)
        covs.append(cov)
        kinds.append(kind)
        print(f"{kind:12s} max var {np.max(np.diag(cov)):9.3g}  {seconds[-1]:.1f} s", flush=True)
    np.savez(
        args.out,
        mean=np.stack(means),
        cov=np.stack(covs),
        kind=np.array(kinds),
        reference=np.stack(refs),
        seconds=np.array(seconds),
    )


if __name__ == "__main__":
    main()
