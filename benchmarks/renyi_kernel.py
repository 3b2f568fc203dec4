"""The Rényi integral (docs/theory.md §16, eqs. (RY5)–(RY8)): accuracy, cost and the VR bias.

1. Accuracy of `log_expected_exp_lse` (rules "accurate" and "fast") against an independent scipy
   computation that conditions on the logit differences instead of tilting: 27 realistic cases
   (the joint logit law (RY3) of random K = J = 2 states, α ∈ [0.05, 1.5], β ∈ [0.1, 1],
   s ∈ [0.3, 3], separations 2–8) and 12 generic ones.
2. Cost, side by side in one run: the theory right-hand side of reverse KL (hand-derived) against
   the pull-back right-hand side (PB1) of Rényi-α with each rule, per trajectory of a batch.
3. The bias of the VR-bound particle estimate (VR1) and of its gradient against n, at d = 3.

Writes benchmarks/results/renyi_kernel.json.

    .venv/bin/python benchmarks/renyi_kernel.py
"""

import json
import os
from multiprocessing import Pool

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate as si  # noqa: E402
from timing import median_seconds  # noqa: E402

import modecollapse as mc  # noqa: E402
from modecollapse import Renyi, log_expected_exp_lse, pullback_vector_field  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference(mean, cov, kappa, gam):
    """log E[exp(κ LSE(ℓ_p) − γ LSE(ℓ_q))], ℓ = (ℓp0, ℓp1, ℓq0, ℓq1) ~ N(mean, cov), by
    conditioning on the differences (u, t) and nested adaptive quadrature in whitened (u, t)."""
    D = np.array([[-1, 1, 0, 0], [0, 0, -1, 1]], float)
    E0 = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], float)
    mu_d, S = D @ mean, D @ cov @ D.T
    C = E0 @ cov @ D.T
    Si = np.linalg.inv(S)
    Vc = E0 @ cov @ E0.T - C @ Si @ C.T
    lam = np.array([kappa, -gam])
    L = np.linalg.cholesky(S)

    def log_f(w1, w2):
        d = mu_d + L @ np.array([w1, w2])
        cm = E0 @ mean + C @ Si @ (d - mu_d)  # E[(ℓp0, ℓq0) | δ]
        return (
            -0.5 * (w1 * w1 + w2 * w2)
            - np.log(2 * np.pi)
            + kappa * np.logaddexp(0, d[0])
            - gam * np.logaddexp(0, d[1])
            + lam @ cm
            + 0.5 * lam @ Vc @ lam
        )

    g = np.linspace(-12, 12, 241)
    vals = np.array([[log_f(a, b) for b in g] for a in g])
    peak = vals.max()
    i, j = np.unravel_index(vals.argmax(), vals.shape)

    def inner(w1):
        pts = []
        for row in range(2):
            a, b = mu_d[row] + L[row, 0] * w1, L[row, 1]
            if abs(b) > 1e-12:
                pts.append(-a / b)
        lo, hi = g[j] - 14, g[j] + 14
        pts = [p for p in pts if lo < p < hi] or None
        return si.quad(
            lambda w2: np.exp(log_f(w1, w2) - peak), lo, hi, points=pts, limit=400, epsrel=1e-13
        )[0]

    val = si.quad(inner, g[i] - 14, g[i] + 14, limit=400, epsabs=0, epsrel=1e-12)[0]
    return peak + np.log(val)


def cases():
    rng = np.random.default_rng(7)
    out = []

    def realistic():
        d, sig = 10, 1.0
        sep = rng.choice([2.0, 3.0, 5.0, 8.0])
        U = np.zeros((2, d))
        U[0, 0], U[1, 0] = sep, -sep
        M = rng.normal(size=(2, d)) * rng.uniform(0.3, 6) / np.sqrt(d)
        M = M + rng.uniform(0, 1) * U * rng.choice([1, -1])
        s = np.exp(rng.uniform(np.log(0.3), np.log(3)))
        beta, alpha = rng.uniform(0.1, 1), rng.uniform(0.05, 1.5)
        gam = 1 - alpha
        a = alpha + gam * beta * s * s / sig**2
        if a <= 0:
            return None
        k, w, rho = rng.integers(2), rng.dirichlet([1, 1]), np.array([0.6, 0.4])
        G = np.concatenate([U / sig**2, M / s**2])
        base = np.concatenate(
            [
                np.log(rho) - 0.5 * np.sum(U * U, 1) / sig**2,
                np.log(w) - 0.5 * np.sum(M * M, 1) / s**2,
            ]
        )
        return base + G @ (M[k] / a), (s * s / a) * G @ G.T, gam * beta, gam

    def generic():
        A = rng.normal(size=(4, 4)) * rng.choice([0.3, 1, 3, 8])
        return rng.normal(size=4) * rng.choice([1, 5, 20]), A @ A.T, *rng.uniform(-0.5, 1, 2)

    while len(out) < 40:
        c = realistic() if len(out) < 28 else generic()
        if c is not None:
            out.append(c)
    return out


def _ref(c):
    return reference(*c)


def accuracy() -> dict:
    cs = cases()
    with Pool(2) as pool:
        refs = np.array(pool.map(_ref, cs))
    mean, cov = np.array([c[0] for c in cs]), np.array([c[1] for c in cs])
    kappa, gam = np.array([c[2] for c in cs]), np.array([c[3] for c in cs])
    out = {}
    for rule in ("accurate", "fast"):
        f = jax.jit(
            jax.vmap(
                lambda m, S, k, g, rule=rule: log_expected_exp_lse(
                    m, S, jnp.stack([k, -g]), (2, 2), rule=rule
                )
            )
        )
        err = np.abs(np.asarray(f(mean, cov, kappa, gam)) - refs)
        out[rule] = {
            "max_error_realistic": float(err[:28].max()),
            "median_error_realistic": float(np.median(err[:28])),
            "max_error_generic": float(err[28:].max()),
            "errors": err.tolist(),
        }
    return out


def cost(batch: int = 256) -> dict:
    d = 1000
    U = jnp.zeros((2, d)).at[0, 0].set(3.0).at[1, 0].set(-3.0)
    p = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
    stats = mc.TargetStatistics.from_target(p)

    def state(key):
        M = jr.normal(key, (2, d)) / np.sqrt(d)
        return mc.GramState.from_models(mc.IsotropicMixture(M, jnp.zeros(2), 0.0), p)

    states = jax.vmap(state)(jr.split(jr.key(0), batch))
    rates = mc.LearningRates(1.0, 1.0, 0.01)
    sched = mc.NoAnnealing()
    fns = {
        "reverse_kl_hand": jax.jit(
            jax.vmap(lambda s: mc.theory_vector_field(0.0, s, stats, sched, rates, d))
        ),
        "reverse_kl_pullback": jax.jit(
            jax.vmap(
                lambda s: pullback_vector_field(0.0, s, stats, sched, rates, d, mc.ReverseKL())
            )
        ),
    }
    for rule in ("accurate", "fast"):
        fns[f"renyi_{rule}"] = jax.jit(
            jax.vmap(
                lambda s, rule=rule: pullback_vector_field(
                    0.0, s, stats, sched, rates, d, Renyi(0.5, rule)
                )
            )
        )
    us = {k: 1e6 * median_seconds(f, states, repeats=5) / batch for k, f in fns.items()}
    base = us["reverse_kl_hand"]
    return {
        "batch": batch,
        "microseconds_per_trajectory": us,
        "ratio_to_reverse_kl_hand": {k: v / base for k, v in us.items()},
    }


def vr_bias() -> dict:
    """E[VR estimate] − F_α and |E[∇ estimate] − ∇F_α| against n, at d = 3 (α = 0.5)."""
    d = 3
    U = jnp.zeros((2, d)).at[0, 0].set(2.5).at[1, 0].set(-2.5)
    p = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
    q = mc.IsotropicMixture(0.4 * U + 0.3, jnp.array([0.2, -0.2]), jnp.log(0.8))
    div = Renyi(0.5)
    params = (q.means, q.logits, q.log_scale)
    exact_v, exact_g = jax.value_and_grad(lambda th: div(mc.IsotropicMixture(*th), p))(params)
    exact_g = np.concatenate([np.ravel(x) for x in exact_g])
    rows = []
    for n in (4, 16, 64, 256, 1024, 4096):
        reps = 400

        def est(key, n=n):
            z = jr.normal(key, (2, n, d))
            return jax.value_and_grad(lambda th: div.mc(mc.IsotropicMixture(*th), p, 1.0, z, None))(
                params
            )

        v, g = jax.jit(jax.vmap(est))(jr.split(jr.key(n), reps))
        g = np.concatenate([np.reshape(x, (reps, -1)) for x in g], axis=1)
        rows.append(
            {
                "n": n,
                "value_bias": float(np.mean(v) - exact_v),
                "value_se": float(np.std(v) / np.sqrt(reps)),
                "grad_bias_norm": float(np.linalg.norm(g.mean(0) - exact_g)),
                "grad_se_norm": float(np.linalg.norm(g.std(0) / np.sqrt(reps))),
            }
        )
    return {"alpha": 0.5, "dim": d, "exact": float(exact_v), "rows": rows}


def main():
    out = {"accuracy": accuracy(), "cost": cost(), "vr_bias": vr_bias()}
    path = os.path.join(ROOT, "benchmarks/results/renyi_kernel.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    acc = out["accuracy"]
    for rule in ("accurate", "fast"):
        print(
            f"{rule}: max error {acc[rule]['max_error_realistic']:.1e} (realistic), "
            f"{acc[rule]['max_error_generic']:.1e} (generic)"
        )
    print("cost, µs per trajectory:", out["cost"]["microseconds_per_trajectory"])
    print("VR bias:", [(r["n"], round(r["value_bias"], 5)) for r in out["vr_bias"]["rows"]])


if __name__ == "__main__":
    main()
