"""Agreement benchmark: the full flow against the theory as d grows (docs/theory.md, §11).

Extensive scaling (eq. (L1)): antipodal target μ_{1,2} = ±√d e₁ (t = 1), ρ = (0.6, 0.4), σ = 1;
informative random start m_k = ξ_k μ_1 + c g_k with ξ_k ~ N(0, 0.5²), c = 0.5, g_k ~ N(0, I_d)
(normalised overlaps O(1)); trainable means, weights and scale with O(1) rates (1, 1, 1), i.e.
(1, 1/d, 1/d) at dimension d; linear annealing β0 = 0.5 over 5; t_end = 10. Routes:

- `full`: the d-dimensional flow with `exact` gradients;
- `sgd`: the d-dimensional flow with `mc-fresh` particles (SGD);
- `theory`: the exact finite-d theory from each run's measured initial statistics;
- `limit`: the d → ∞ route (eqs. (L2)–(L5)) from the same normalised initial statistics;
- `limit0`: the d → ∞ route from the law-level start (r = ξ t, q = diag(ξ² + c²)), which drops
  the O(d^{-1/2}) fluctuations of the initial overlaps.

The error of a pair is, per seed, the sup over time and entries of |ΔR/d|, |ΔQ/d|, |Δw|, |Δs|.

`--objective renyi --alpha A` or `--objective forward-kl` (docs/theory.md, §16) runs the same
benchmark for that objective on the full, sgd (VR-bound particles) and theory routes; the d → ∞
routes are derived for reverse KL only and are left out. Forward KL runs without annealing.
"""

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._annealing._schedules import LinearSchedule, NoAnnealing
from .._dynamics._full import solve_full
from .._dynamics._limit import extensive_rates, normalise, solve_limit
from .._dynamics._rates import LearningRates
from .._dynamics._solve import SolverOptions
from .._dynamics._theory import solve_theory
from .._estimators._estimators import ExactEstimator, FreshParticles
from .._experiments._config import ConfigError
from .._experiments._io import timed, to_json
from .._mixtures import GaussianMixture, IsotropicMixture
from .._objective import DIVERGENCES, AbstractDivergence, ReverseKL
from .._summary import GramState, TargetStatistics
from ._command import Command, Output, Prepared, check_out

ROUTES = ("full", "sgd", "theory", "limit", "limit0")
DIMS = (16, 64, 256, 1024, 4096, 16384)
QUICK: dict[str, Any] = dict(dims=(16, 64, 256), seeds=20, particles=16)
RATES = LearningRates(1.0, 1.0, 1.0)
SCHEDULE = LinearSchedule(0.5, 5.0)
XI, C = 0.5, 0.5
OPTIONS = SolverOptions(rtol=1e-9, atol=1e-11)


def _setup(d: int, seeds: int, key):
    U = jnp.zeros((2, d)).at[0, 0].set(math.sqrt(d)).at[1, 0].set(-math.sqrt(d))
    target = GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
    keys = jr.split(key, seeds)

    def family(k):
        k1, k2 = jr.split(k)
        xi = XI * jr.normal(k1, (2,))
        means = xi[:, None] * U[0] + C * jr.normal(k2, (2, d))
        return IsotropicMixture(means, jnp.zeros(2), jnp.zeros(())), xi

    families, xis = jax.vmap(family)(keys)
    return target, families, xis, keys


def _normalised(traj, d):
    return dict(R=traj.R / d, Q=traj.Q / d, weights=traj.weights, scale=traj.scale)


def _gap(a: dict, b: dict) -> np.ndarray:
    per = [jnp.max(jnp.abs(a[k] - b[k]).reshape(a[k].shape[0], -1), axis=1) for k in a]
    return np.asarray(jnp.max(jnp.stack(per), axis=0))


def routes_of(divergence: AbstractDivergence) -> tuple[str, ...]:
    """The routes the benchmark runs for an objective: the d → ∞ ones for reverse KL only."""
    return ROUTES if isinstance(divergence, ReverseKL) else ("full", "sgd", "theory")


def run_dimension(
    d: int,
    seeds: int,
    ts,
    particles: int,
    step: float,
    key,
    divergence: AbstractDivergence = ReverseKL(),
) -> dict[str, Any]:
    """Every route at one d, vmapped over seeds; normalised trajectories and wall times."""
    target, families, xis, keys = _setup(d, seeds, key)
    rates = extensive_rates(RATES, d)
    stats = TargetStatistics.from_target(target)
    schedule = NoAnnealing() if divergence.kind == "forward-kl" else SCHEDULE
    routes = routes_of(divergence)
    exact = ExactEstimator(divergence=divergence)
    out: dict[str, Any] = {"seconds": {}}

    def full(fams):
        return eqx.filter_vmap(
            lambda f: solve_full(
                f, target, schedule, ts, rates=rates, options=OPTIONS, estimator=exact
            )
        )(fams)

    def sgd(fams, ks):
        def one(f, k):
            est = FreshParticles(k, particles, step, divergence=divergence)
            return solve_full(f, target, schedule, ts, rates=rates, estimator=est)

        return eqx.filter_vmap(one)(fams, ks)

    trajs = {}
    trajs["full"], seconds = timed(full, families)
    out["seconds"]["full"] = seconds["solve"]
    sgd_keys = jax.vmap(lambda k: jr.fold_in(k, 1))(keys)
    trajs["sgd"], seconds = timed(sgd, families, sgd_keys)
    out["seconds"]["sgd"] = seconds["solve"]
    states = jax.vmap(lambda f: GramState.from_models(f, target))(families)

    def theory(st):
        return jax.vmap(
            lambda s: solve_theory(
                s, stats, schedule, ts, dim=d, rates=rates, options=OPTIONS, divergence=divergence
            )
        )(st)

    trajs["theory"], seconds = timed(theory, states)
    out["seconds"]["theory"] = seconds["solve"]
    if "limit" not in routes:
        return _finish(out, trajs, d, routes)
    norm_states, norm_target = jax.vmap(lambda s: normalise(s, stats, d))(states)
    norm_target = jax.tree.map(lambda x: x[0], norm_target)

    def limit(st):
        return jax.vmap(
            lambda s: solve_limit(s, norm_target, SCHEDULE, ts, rates=RATES, options=OPTIONS)
        )(st)

    trajs["limit"], seconds = timed(limit, norm_states)
    out["seconds"]["limit"] = seconds["solve"]
    t11 = norm_target.T[0, 0]
    law = jax.vmap(
        lambda xi: GramState(
            R=xi[:, None] * norm_target.T[0][None, :],
            Q=jnp.diag(xi**2 * t11 + C**2),
            logits=jnp.zeros(2),
            log_scale=jnp.zeros(()),
        )
    )(xis)
    trajs["limit0"], seconds = timed(limit, law)
    out["seconds"]["limit0"] = seconds["solve"]
    return _finish(out, trajs, d, routes)


def _finish(out: dict, trajs: dict, d: int, routes: tuple[str, ...]) -> dict[str, Any]:
    for name in ("full", "sgd", "theory"):
        failed = int(np.sum(~np.asarray(trajs[name].result == dfx.RESULTS.successful)))
        if failed:
            raise RuntimeError(f"{failed} {name} solves failed at d = {d}")
    norm = {
        k: (_normalised(v, d) if k in ("full", "sgd", "theory") else _normalised(v, 1.0))
        for k, v in trajs.items()
    }
    out["gaps"] = {f"{a}-{b}": _gap(norm[a], norm[b]) for a, b in itertools.combinations(routes, 2)}
    out["example"] = {
        k: {s: np.asarray(v[s][0]).tolist() for s in ("R", "Q")} for k, v in norm.items()
    }
    return out


def _slope(dims: Sequence[int], gaps: list[np.ndarray]) -> dict[str, Any]:
    """OLS slope of log(gap) on log(d) over all seeds, with a 95% t-interval."""
    from scipy.stats import t as student

    x = np.concatenate([np.full(len(g), math.log(d)) for d, g in zip(dims, gaps)])
    y = np.log(np.maximum(np.concatenate(gaps), 1e-300))
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    resid = y - y.mean() - slope * xc
    stderr = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(xc @ xc))
    half = float(student.ppf(0.975, len(x) - 2)) * stderr
    return {"value": slope, "ci": [slope - half, slope + half]}


def agreement(
    dims: tuple[int, ...] = DIMS,
    seeds: int = 20,
    *,
    particles: int = 16,
    step: float = 0.02,
    progress: bool = False,
    seed: int = 0,
    divergence: AbstractDivergence = ReverseKL(),
) -> tuple[dict[str, Any], bytes]:
    """Run the agreement benchmark; returns (agreement.json record, agreement.png bytes).

    **Arguments:**

    - `dims`: the dimensions d.
    - `seeds`: random starts per d (≥ 20 for the committed run).
    - `particles`, `step`: n and η of the `sgd` route.
    - `progress`: print one line per dimension to stderr.
    - `seed`: base PRNG seed.
    - `divergence`: the objective (default reverse KL; others drop the d → ∞ routes).

    **Returns:** `(report, png)`.

    **Example:**
    ```python
    report, png = agreement([16, 64, 256], seeds=20)
    report["slopes"]["full-limit0"]
    ```
    """
    from .._figures._runs import agreement_figure

    ts = jnp.linspace(0.0, 10.0, 21)
    rows = []
    for i, d in enumerate(dims):
        start = time.perf_counter()
        key = jr.fold_in(jr.key(seed), i)
        rows.append(run_dimension(d, seeds, ts, particles, step, key, divergence))
        if progress:
            g = rows[-1]["gaps"]
            shown = [p for p in ("full-theory", "full-limit", "full-limit0", "full-sgd") if p in g]
            print(
                f"d = {d:>6}: "
                + ", ".join(f"{p} {np.mean(g[p]):.1e}" for p in shown)
                + f" ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    pairs = list(rows[0]["gaps"])
    report = {
        "setting": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "dims": list(dims),
        "seeds": seeds,
        "objective": _objective_record(divergence),
        "sgd": {"particles": particles, "step": step},
        "errors": {
            p: {
                "mean": [float(np.mean(r["gaps"][p])) for r in rows],
                "std": [float(np.std(r["gaps"][p])) for r in rows],
            }
            for p in pairs
        },
        "slopes": {p: _slope(dims, [r["gaps"][p] for r in rows]) for p in pairs},
        "wall_seconds": {
            route: [r["seconds"][route] / seeds for r in rows] for route in routes_of(divergence)
        },
        "times": np.asarray(ts).tolist(),
        "examples": {str(d): r["example"] for d, r in zip(dims, rows)},
    }
    return report, agreement_figure(report)


def _objective_record(divergence: AbstractDivergence) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": divergence.kind}
    if hasattr(divergence, "alpha"):
        out["alpha"] = float(divergence.alpha)  # type: ignore[attr-defined]
    return out


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder (created)")
    parser.add_argument(
        "--objective",
        choices=tuple(DIVERGENCES),
        default="reverse-kl",
        help="the objective (docs/theory.md, §16); default reverse-kl",
    )
    parser.add_argument(
        "--alpha", type=float, default=None, help="the Rényi order α > 0 (--objective renyi)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="d in {16, 64, 256}, 20 seeds, 16 SGD particles (about 1-2 minutes)",
    )


def _divergence(args: argparse.Namespace) -> AbstractDivergence:
    if args.objective == "renyi":
        if args.alpha is None or not args.alpha > 0:
            raise ConfigError("`--alpha`: --objective renyi needs an order α > 0.")
        return DIVERGENCES["renyi"](args.alpha)
    if args.alpha is not None:
        raise ConfigError("`--alpha`: only --objective renyi takes an order.")
    return DIVERGENCES[args.objective]()


def _prepare(args: argparse.Namespace) -> Prepared:
    _divergence(args)  # bad arguments fail before anything runs
    check_out(args.out)
    return Prepared(None)


def _execute(args: argparse.Namespace, prepared: Prepared) -> Output:
    kwargs = QUICK if args.quick else {}
    report, png = agreement(progress=True, divergence=_divergence(args), **kwargs)
    lines = [f"wrote {os.path.join(args.out, 'agreement.json')} and agreement.png"]
    for pair in (
        p for p in ("full-theory", "full-limit", "full-limit0", "full-sgd") if p in report["slopes"]
    ):
        s = report["slopes"][pair]
        lines.append(
            f"  slope of {pair:<12} error against d: {s['value']:+.2f} "
            f"[{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]"
        )
    return Output({"agreement.json": to_json(report), "agreement.png": png}, tuple(lines))


COMMAND = Command(
    help="full flow, SGD, finite-d theory and the d → ∞ limit as d grows (extensive scaling)",
    description="Run the agreement benchmark (docs/theory.md, §11): sup-time errors between "
    "every pair of routes at each d, log-log slopes with 95%% intervals, wall times. Writes "
    "DIR/agreement.json and DIR/agreement.png.",
    add_arguments=_add_arguments,
    prepare=_prepare,
    execute=_execute,
)
"""`modecollapse agreement`."""
