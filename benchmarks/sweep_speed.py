"""Sweep throughput of the theory route against a straightforward baseline, side by side.

Setting: K = J = 2 antipodal target (ρ = 0.6/0.4, ±3 e₁, σ = 1), d = 1000, random initial state
(exact sampler), trainable means, weights and scale (η_s = 1/d), linear annealing β0 = 0.2 over
20, t_end = 100, Tsit5 with rtol 1e-6, atol 1e-8.

- ours: `solve_theory` vmapped over the batch (exact 1-D integrals, eqs. (I1)–(I4)), and the full
  sweep chunk (solve + every metric of eqs. (C1)–(C6));
- baseline: the same equations (T1)–(T5) written plainly with 80-node Gauss–Hermite for
  E[σ], E[σ'] and E[softplus], vmapped Tsit5.

Both are compiled first; throughput is trajectories per second of the compiled call (median of
repeats). Writes benchmarks/results/sweep_speed.json.

    python benchmarks/sweep_speed.py [--batch 2048] [--repeats 3]
"""

import argparse
import json
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import modecollapse as mc  # noqa: E402

D = 1000
T_END = 100.0
RTOL, ATOL = 1e-6, 1e-8


def _problem():
    U = jnp.zeros((2, D)).at[0, 0].set(3.0).at[1, 0].set(-3.0)
    target = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
    stats = mc.TargetStatistics.from_target(target)
    schedule = mc.LinearSchedule(0.2, 20.0)
    rates = mc.LearningRates(1.0, 1.0, 1.0 / D)
    return stats, schedule, rates


_X, _W = np.polynomial.hermite.hermgauss(80)
_X, _W = jnp.asarray(np.sqrt(2) * _X), jnp.asarray(_W / np.sqrt(np.pi))


def _gh(f, m, v):
    return jnp.sum(_W * f(m[..., None] + jnp.sqrt(jnp.maximum(v, 0.0))[..., None] * _X), -1)


def _baseline_rhs(t, y, args):
    """Eqs. (T1)–(T5) for K = J = 2, written directly with 80-node Gauss–Hermite."""
    stats, schedule, rates = args
    R, Q, a, log_s = y
    beta = schedule(t)
    T, sig2 = stats.T, stats.scale**2
    s2 = jnp.exp(2 * log_s)
    s = jnp.sqrt(s2)
    w = jax.nn.softmax(a)
    logw = jax.nn.log_softmax(a)
    # q side: δ = ℓ_1 − ℓ_0 for each component k
    mq = (logw[1] - logw[0]) + (Q[:, 1] - Q[:, 0] - 0.5 * (Q[1, 1] - Q[0, 0])) / s2
    vq = (Q[0, 0] + Q[1, 1] - 2 * Q[0, 1]) / s2
    mp = (stats.log_weights[1] - stats.log_weights[0]) + (
        R[:, 1] - R[:, 0] - 0.5 * (T[1, 1] - T[0, 0])
    ) / sig2
    vp = s2 * (T[0, 0] + T[1, 1] - 2 * T[0, 1]) / sig2**2
    sig = jax.nn.sigmoid
    dsig = lambda x: sig(x) * sig(-x)  # noqa: E731
    e1q, ppq, spq = _gh(sig, mq, vq), _gh(dsig, mq, vq), _gh(jax.nn.softplus, mq, vq)
    e1p, ppp, spp = _gh(sig, mp, vp), _gh(dsig, mp, vp), _gh(jax.nn.softplus, mp, vp)
    Eq = jnp.stack([1 - e1q, e1q], 1)
    Ep = jnp.stack([1 - e1p, e1p], 1)
    lse_q = logw[0] + (Q[:, 0] - 0.5 * Q[0, 0]) / s2 + spq
    lse_p = stats.log_weights[0] + (R[:, 0] - 0.5 * T[0, 0]) / sig2 + spp
    A = rates.means * w[:, None] * (-Eq / s2 + (1 / s2 - beta / sig2) * jnp.eye(2))
    B = rates.means * w[:, None] * (beta / sig2) * Ep
    dR = A @ R + B @ T
    dQ = A @ Q + Q @ A.T + B @ R.T + R @ B.T
    g = -jnp.diag(Q) * (0.5 / s2 - 0.5 * beta / sig2) + lse_q - beta * lse_p
    da = -rates.weights * w * (g - w @ g)
    vq_k = ppq * (Q[0, 0] + Q[1, 1] - 2 * Q[0, 1])
    vp_k = ppp * (T[0, 0] + T[1, 1] - 2 * T[0, 1])
    dF = w @ ((vq_k / s - s * D) / s2 - beta * ((s / sig2) * vp_k - s * D) / sig2)
    return dR, dQ, da, -rates.scale * s * dF


@jax.jit
def _baseline(states, stats, schedule, rates, ts):
    def one(state):
        y0 = (state.R, state.Q, state.logits, state.log_scale)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(_baseline_rhs),
            dfx.Tsit5(),
            0.0,
            T_END,
            None,
            y0,
            args=(stats, schedule, rates),
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=100_000,
        )
        return sol.ys[0], sol.stats["num_steps"]

    return jax.vmap(one)(states)


@jax.jit
def _ours(states, stats, schedule, rates, ts):
    options = mc.SolverOptions(rtol=RTOL, atol=ATOL)

    def one(state):
        traj = mc.solve_theory(state, stats, schedule, ts, dim=D, rates=rates, options=options)
        return traj.R, traj.num_steps

    return jax.vmap(one)(states)


def _throughput(fn, args, batch, repeats):
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times)), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/sweep_speed.json")
    args = parser.parse_args()
    stats, schedule, rates = _problem()
    states = mc.sample_initial_states(jr.key(0), args.batch, stats, components=2, dim=D, norm=1.0)
    ts = jnp.linspace(0.0, T_END, 51)
    common = (states, stats, schedule, rates, ts)
    ours, (R_ours, steps_ours) = _throughput(_ours, common, args.batch, args.repeats)
    base, (R_base, steps_base) = _throughput(_baseline, common, args.batch, args.repeats)
    # accuracy of each against a tight-tolerance reference of ours, on 64 trajectories
    sub = jax.tree.map(lambda x: x[:64], states)
    ref_opts = mc.SolverOptions(rtol=1e-10, atol=1e-12)
    ref = jax.jit(
        jax.vmap(
            lambda s: (
                mc.solve_theory(s, stats, schedule, ts, dim=D, rates=rates, options=ref_opts).R
            )
        )
    )(sub)
    err = lambda R: float(jnp.max(jnp.abs(R[:64] - ref)))  # noqa: E731
    report = {
        "setting": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": f"{platform.machine()}, {jax.local_device_count()} device(s), "
        f"backend {jax.default_backend()}, jax {jax.__version__}",
        "batch": args.batch,
        "ours_trajectories_per_second": ours,
        "baseline_trajectories_per_second": base,
        "speedup": ours / base,
        "ours_trajectories_per_minute": 60 * ours,
        "mean_steps": {"ours": float(np.mean(steps_ours)), "baseline": float(np.mean(steps_base))},
        "max_abs_error_R_vs_tight_reference": {"ours": err(R_ours), "baseline": err(R_base)},
    }
    print(json.dumps(report, indent=1))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
