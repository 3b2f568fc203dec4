"""Sweep throughput of the theory route against a plain vmapped baseline, side by side in one run.

Experiment: `examples/sweep_speed.toml` (K = J = 2 annealing on the antipodal target ±5 e₁,
d = 100, trainable means, weights and scale, linear β0 = 0.1 over 50, t_end = 100, 51 saves).

- ours: the compiled chunk of `modecollapse sweep` (`run_sweep`: the solve of eqs. (T1)–(T5)
  with the experiment's solver, tolerances and 1-D kernel rule (`[simulation] kernel`: "fast",
  eq. (I6)), lane refill (docs/theory.md, §10) and every metric of eqs. (C1)–(C6)), sharded over
  one CPU device per core and with 512-bit vectors where the CPU has them (the XLA flags that
  `modecollapse sweep` sets); also with the accurate kernel (I7), with plain vmap
  (`lanes = 0`), on one device, and the solve alone (for the metrics' share of a chunk);
- baseline: the same equations written plainly with 80-node Gauss–Hermite for E[σ], E[σ'] and
  E[softplus], vmapped Tsit5 at rtol 1e-6 (`BASELINE_RTOL`; ours runs at the experiment's
  tolerance, 1e-7, which keeps R within 1e-5), run as a user's script runs: in a fresh Python
  process with jax's defaults (one device, no XLA flags). It is also timed in this process,
  under ours' flags (`ratio_to_baseline_same_flags`), for comparison;
- accuracy: R at every save time against a tight reference (Dopri8, rtol 1e-11, float64, the
  accurate kernel) on the first `--reference` trajectories (512: a few trajectories near the
  saddle are the most sensitive, and 64 missed them at looser tolerances);
- steps: mean and max adaptive steps, and the lock-step waste max/mean per chunk, here and on
  the committed phase-diagram experiments;
- the solver/tolerance choices measured side by side (`--solvers`).

Throughput is trajectories per second of the compiled call (median of repeats; compilation
excluded). Writes benchmarks/results/sweep_speed.json.

    python benchmarks/sweep_speed.py [--batch 2048] [--repeats 3]
"""

import os
import sys

import modecollapse as mc  # noqa: E402  (importing initialises no jax backend)

if "--devices" not in sys.argv and "--baseline-worker" not in sys.argv:
    # as `modecollapse sweep` does, before jax initialises its backends
    mc.one_cpu_device_per_core()
    mc.prefer_wide_cpu_vectors()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from modecollapse import (  # noqa: E402
    plan_sweep,
    run_sweep,
    sweep_chunk,
    sweep_inputs,
    sweep_solver_options,
)

CONFIG = "examples/sweep_speed.toml"
WASTE_EXAMPLES = ("phase_a", "phase_b", "annealing_linear_rho0.5", "annealing_exponential_rho0.5")
BASELINE_RTOL = 1e-6
AIMS = {"ratio_to_baseline": 15.0, "trajectories_per_minute": 1e5, "max_abs_error_R": 1e-5}

_X, _W = np.polynomial.hermite.hermgauss(80)
_X, _W = jnp.asarray(np.sqrt(2) * _X), jnp.asarray(_W / np.sqrt(np.pi))


def _gh(f, m, v):
    return jnp.sum(_W * f(m[..., None] + jnp.sqrt(jnp.maximum(v, 0.0))[..., None] * _X), -1)


def _baseline_rhs(t, y, args):
    """Eqs. (T1)–(T5) for K = J = 2, written directly with 80-node Gauss–Hermite."""
    stats, schedule, rates, D = args
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
def _baseline(specs, rtol, atol):
    def one(state, stats, schedule, rates, dim, ts, divergence, key):
        del key, divergence  # reverse KL, written out in `_baseline_rhs`
        y0 = (state.R, state.Q, state.logits, state.log_scale)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(_baseline_rhs),
            dfx.Tsit5(),
            ts[0],
            ts[-1],
            None,
            y0,
            args=(stats, schedule, rates, dim),
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
        )
        return sol.ys[0], sol.stats["num_steps"]

    return jax.vmap(one)(*specs)


@eqx.filter_jit
def _solve_only(specs, options):
    traj, _ = mc.sweep_theory_solves(specs, options)
    return traj.R, traj.num_steps


def _seconds(fn, args):
    """One timed call (compiled already), and its output."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def _median_seconds(fn, args, repeats):
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t, out = _seconds(fn, args)
        times.append(t)
    return float(np.median(times)), out


def _raw(path, batch, **simulation):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    raw["sweep"] = dict(raw.get("sweep", {}), seeds=batch, chunk=batch)
    raw["sweep"]["parameters"] = {"seed": [raw.get("seed", 0)]}
    raw["simulation"] = dict(raw["simulation"], **simulation)
    return raw


def _baseline_worker(args):
    """`--baseline-worker`: the baseline as a user's script runs it (this process has jax's
    default XLA flags), timed once per line "time" on stdin; "save PATH" writes R and steps."""
    plan = plan_sweep(_raw(args.config, args.batch), "theory")
    inputs = (sweep_inputs(plan, np.arange(args.batch)), BASELINE_RTOL, plan.base.simulation.atol)
    R, steps = jax.block_until_ready(_baseline(*inputs))  # compile
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "time":
            t, (R, steps) = _seconds(_baseline, inputs)
            print(t, flush=True)
        elif command[0] == "save":
            np.savez(command[1], R=np.asarray(R), steps=np.asarray(steps))
            print("saved", flush=True)


class _BaselineProcess:
    """The baseline in a fresh Python process with jax's defaults (no XLA_FLAGS), the plain
    script a user would write and run, timed on request so that its timings interleave with
    ours (this machine's speed drifts by ±30% over minutes)."""

    def __init__(self, args):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        # on an accelerator this process already holds jax's default share of its memory
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        cmd = [sys.executable, __file__, "--baseline-worker", "--batch", str(args.batch)]
        cmd += ["--config", args.config]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        if self._read() != "ready":
            raise RuntimeError("the baseline process did not start")

    def _read(self):
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, line):
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def seconds(self):
        return float(self._ask("time"))

    def outputs(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "baseline.npz")
            self._ask(f"save {path}")
            with np.load(path) as f:
                return f["R"], f["steps"]

    def close(self):
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def _waste(steps, chunk):
    steps = np.asarray(steps, float)
    chunks = [steps[i : i + chunk] for i in range(0, len(steps), chunk)]
    return float(np.mean([c.max() / c.mean() for c in chunks]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048, help="trajectories per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--devices", action="store_true", help="keep jax's default devices")
    parser.add_argument(
        "--solvers", default="tsit5:1e-6,tsit5:1e-7,dopri8:1e-6", help="solver:rtol choices"
    )
    parser.add_argument("--waste-seeds", type=int, default=512)
    parser.add_argument(
        "--reference", type=int, default=512, help="trajectories checked against the reference"
    )
    parser.add_argument(
        "--lanes", type=int, default=None, help="override [simulation] lanes (per device)"
    )
    parser.add_argument("--out", default="benchmarks/results/sweep_speed.json")
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        return _baseline_worker(args)
    n_dev = jax.local_device_count()

    lanes = {} if args.lanes is None else {"lanes": args.lanes}
    raw = _raw(args.config, args.batch, **lanes)
    plan = plan_sweep(raw, "theory")
    sim = plan.base.simulation
    specs = sweep_inputs(plan, np.arange(args.batch))
    sharded = sweep_inputs(plan, np.arange(args.batch), shard=True)
    options = sweep_solver_options(plan)

    # ours, through `modecollapse sweep`'s own loop (checkpointing included, compile excluded),
    # with the default lane refill, with plain vmap (`lanes = 0`) and with the accurate kernel,
    # and the baseline, in a fresh process with jax's defaults (as a user runs it) and here under
    # this process's XLA flags (one device per core, 512-bit vectors): timed in turn, round by
    # round, so that the ratios compare timings taken minutes apart at most
    plain = plan_sweep(_raw(args.config, args.batch, lanes=0), "theory")
    accurate = plan_sweep(_raw(args.config, args.batch, kernel="accurate", **lanes), "theory")
    baseline = _BaselineProcess(args)
    base_inputs = (specs, BASELINE_RTOL, sim.atol)
    jax.block_until_ready(_baseline(*base_inputs))  # compile
    sweep_rates, plain_rates, accurate_rates, base_rates, here_rates = [], [], [], [], []
    for _ in range(max(1, args.repeats)):
        for p, rates in ((plan, sweep_rates), (plain, plain_rates), (accurate, accurate_rates)):
            with tempfile.TemporaryDirectory() as tmp:
                results = run_sweep(p, tmp)
            rates.append(args.batch / float(results["solve_seconds"]))
            if p is plan:
                steps = results["num_steps"]
        base_rates.append(args.batch / baseline.seconds())
        here_rates.append(args.batch / _seconds(_baseline, base_inputs)[0])
    R_base, steps_base = baseline.outputs()
    baseline.close()
    ours_all = float(np.median(sweep_rates))
    ratios = np.asarray(sweep_rates) / np.asarray(base_rates)
    ratios_here = np.asarray(sweep_rates) / np.asarray(here_rates)
    # the metrics' share: the chunk against the solve alone, both plain vmap, interleaved
    chunk_fn, solve_fn = sweep_chunk(plain), _solve_only
    jax.block_until_ready((chunk_fn(sharded, options), solve_fn(sharded, options)))
    t_chunks, t_solves = [], []
    for _ in range(max(1, args.repeats)):
        t_chunks.append(_seconds(chunk_fn, (sharded, options))[0])
        t, (R_ours, _) = _seconds(solve_fn, (sharded, options))
        t_solves.append(t)
    t_chunk, t_solve = float(np.median(t_chunks)), float(np.median(t_solves))
    # one device: plain vmap on unsharded inputs (refill would spread over the devices)
    t_one, _ = _median_seconds(sweep_chunk(plain), (specs, options), args.repeats)

    # tight reference on the first `--reference` trajectories
    ref_plan = plan_sweep(
        _raw(args.config, args.batch, solver="dopri8", rtol=1e-11, atol=1e-13, kernel="accurate"),
        "theory",
    )
    n_ref = min(args.reference, args.batch)
    sub = sweep_inputs(ref_plan, np.arange(n_ref), shard=n_ref % n_dev == 0)
    R_ref, _ = _solve_only(sub, sweep_solver_options(ref_plan))
    err = lambda R: float(jnp.max(jnp.abs(jnp.asarray(R)[:n_ref] - R_ref)))  # noqa: E731
    R_accurate, _ = _solve_only(sub, sweep_solver_options(accurate))

    # solver / tolerance choices, solve only, side by side
    choices = []
    for item in filter(None, args.solvers.split(",")):
        name, rtol = item.split(":")
        p = plan_sweep(_raw(args.config, args.batch, solver=name, rtol=float(rtol)), "theory")
        t, (R, st) = _median_seconds(
            _solve_only,
            (sweep_inputs(p, np.arange(args.batch), shard=True), sweep_solver_options(p)),
            args.repeats,
        )
        choices.append(
            {
                "solver": name,
                "rtol": float(rtol),
                "solve_trajectories_per_second": args.batch / t,
                "mean_steps": float(np.mean(st)),
                "max_abs_error_R": err(R),
            }
        )

    # lock-step waste on the committed phase-diagram experiments (theory route)
    waste = {}
    for name in WASTE_EXAMPLES if args.waste_seeds > 0 else ():
        path = os.path.join("examples", name + ".toml")
        p = plan_sweep(_raw(path, args.waste_seeds), "theory")
        _, st = _solve_only(
            sweep_inputs(p, np.arange(args.waste_seeds), shard=True), sweep_solver_options(p)
        )
        waste[name] = {
            "mean_steps": float(np.mean(st)),
            "max_steps": int(np.max(st)),
            "waste_max_over_mean": _waste(st, args.waste_seeds),
        }

    base = float(np.median(base_rates))
    report = {
        "setting": " ".join(__doc__.split("\n\n")[1].split()),
        "config": args.config,
        "solver": {"name": sim.solver, "rtol": sim.rtol, "atol": sim.atol},
        "kernel": sim.kernel,
        "baseline_solver": {"name": "tsit5", "rtol": BASELINE_RTOL, "atol": sim.atol},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {n_dev} device(s), "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}",
        "batch": args.batch,
        "reference_trajectories": n_ref,
        "ours_trajectories_per_second": ours_all,
        "ours_trajectories_per_minute": 60 * ours_all,
        "lanes_per_device": plan.base.simulation.lanes,
        "ours_accurate_kernel_trajectories_per_second": float(np.median(accurate_rates)),
        "kernel_over_accurate_kernel": ours_all / float(np.median(accurate_rates)),
        "ours_plain_vmap_trajectories_per_second": float(np.median(plain_rates)),
        "refill_over_plain_vmap": ours_all / float(np.median(plain_rates)),
        "ours_one_device_trajectories_per_second": args.batch / t_one,
        "baseline_trajectories_per_second": base,
        "baseline_trajectories_per_minute": 60 * base,
        "baseline_process": "a fresh Python process with jax's defaults (no XLA_FLAGS)",
        "ratio_to_baseline": float(np.median(ratios)),
        "ratio_to_baseline_per_round": ratios.tolist(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "baseline_same_flags_trajectories_per_second": float(np.median(here_rates)),
        "ratio_to_baseline_same_flags": float(np.median(ratios_here)),
        "ratio_to_baseline_same_flags_per_round": ratios_here.tolist(),
        "ratio_to_baseline_one_device": (args.batch / t_one) / base,
        "metric_share_of_chunk": max(0.0, 1.0 - t_solve / t_chunk),
        "mean_steps": {"ours": float(np.mean(steps)), "baseline": float(np.mean(steps_base))},
        "max_steps": {"ours": int(np.max(steps)), "baseline": int(np.max(steps_base))},
        "waste_max_over_mean": _waste(steps, args.batch),
        "max_abs_error_R_vs_tight_reference": {
            "ours": err(R_ours),
            "ours_accurate_kernel": err(R_accurate),
            "baseline": err(R_base),
        },
        "solver_choices": choices,
        "waste_on_examples": waste,
    }
    report["aims"] = {
        "ratio_to_baseline": {
            "aim": AIMS["ratio_to_baseline"],
            "measured": report["ratio_to_baseline"],
        },
        "trajectories_per_minute": {
            "aim": AIMS["trajectories_per_minute"],
            "measured": 60 * ours_all,
        },
        "max_abs_error_R": {
            "aim": AIMS["max_abs_error_R"],
            "measured": report["max_abs_error_R_vs_tight_reference"]["ours"],
        },
    }
    for k, v in report["aims"].items():
        v["met"] = (
            v["measured"] <= v["aim"] if k == "max_abs_error_R" else v["measured"] >= v["aim"]
        )
    print(json.dumps(report, indent=1))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
