"""Throughput and memory of the chunked particle gradient (docs/theory.md, eqs. (E4)–(E7)).

Measured side by side in one run, K = J = 2, mc-fresh particles:

- gradient evaluations per second of `particle_value_and_grad` for d × n, and the achieved GFLOP/s
  of its two matmuls (2·K·n·d·(K + J) forward + 2·K·n·d·K backward) against this machine's matmul
  peak, measured in the same run with a large square `jnp.dot` in the same dtype;
- the share of the time spent drawing the particles (the same `jr.normal` calls alone);
- a straightforward PyTorch implementation of the same SGD step (autograd of the Monte Carlo
  reverse-KL estimate, dense (K, n, d) particles), steps per second, side by side;
- peak memory (max RSS from `/usr/bin/time -v`, fresh subprocess) of one gradient at d = 10⁶,
  n = 4096, and of three SGD steps of `solve_full` at d = 10⁶;
- cold and warm latency of `modecollapse run --out DIR` (empty, then populated, persistent cache);
- the exact-law estimator `projected_value_and_grad` (eqs. (E8)–(E10), `mc-fresh-projected`)
  against the particle route on the same (d, n), side by side (`--only projected` adds just
  this block to an existing results file).

    python benchmarks/full_flow.py [--budget 1e9] [--out benchmarks/results/full_flow.json]
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

K = J = 2


def _median_seconds(fn, *args, repeats=3):
    from timing import median_seconds  # benchmarks/timing.py; imports jax

    return median_seconds(fn, *args, repeats=repeats)


def _problem(d, dtype):
    import jax.numpy as jnp
    import jax.random as jr

    U = jnp.zeros((J, d), dtype).at[0, 0].set(3.0).at[1, 0].set(-3.0)
    M = (jr.normal(jr.key(0), (K, d)) / np.sqrt(d)).astype(dtype)
    return U, M


def matmul_peak(dtype, size=2048) -> float:
    """GFLOP/s of a jitted size × size × size `jnp.dot` (median of repeats)."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    a = jr.normal(jr.key(0), (size, size), dtype)
    b = jr.normal(jr.key(1), (size, size), dtype)
    seconds = _median_seconds(jax.jit(jnp.dot), a, b, repeats=5)
    return 2 * size**3 / seconds / 1e9


def jax_rows(dims, ns, dtype, budget, chunk_numbers):
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import modecollapse as mc

    rows = []
    for d in dims:
        U, M = _problem(d, dtype)
        p = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
        p = jax.tree.map(lambda x: x.astype(dtype), p)
        params = (M, jnp.zeros(K, dtype), jnp.zeros((), dtype))
        for n in ns:
            if K * n * d > budget:
                rows.append({"dim": d, "n": n, "skipped": f"K·n·d > budget {budget:.0e}"})
                print(f"{d:>8} {n:>5}  skipped (K·n·d > {budget:.0e})", flush=True)
                continue
            chunk = max(1, min(n, chunk_numbers // (K * d)))
            grad = jax.jit(
                lambda pr, key, n=n, chunk=chunk: mc.particle_value_and_grad(
                    pr, p, 0.8, key, n, chunk
                )
            )
            n_chunks = -(-n // chunk)

            def noise_only(key, n_chunks=n_chunks, chunk=chunk, d=d):
                def body(acc, c):
                    return acc + jnp.sum(mc.chunk_noise(key, c * chunk, chunk, K, d, dtype)), None

                return jax.lax.scan(body, jnp.zeros((), dtype), jnp.arange(n_chunks))[0]

            repeats = 3 if K * n * d <= 1e8 else 1
            sec = _median_seconds(grad, params, jr.key(1), repeats=repeats)
            noise_sec = _median_seconds(jax.jit(noise_only), jr.key(1), repeats=repeats)
            flops = 2 * K * n * d * (K + J) + 2 * K * n * d * K
            row = {
                "dim": d,
                "n": n,
                "chunk": chunk,
                "seconds_per_gradient": sec,
                "gradients_per_second": 1 / sec,
                "matmul_gflop": flops / 1e9,
                "gflops_achieved": flops / sec / 1e9,
                "particle_drawing_seconds": noise_sec,
                "particle_drawing_share": noise_sec / sec,
            }
            rows.append(row)
            print(
                f"{d:>8} {n:>5} {1 / sec:>10.3f} grad/s {flops / sec / 1e9:>8.2f} GFLOP/s "
                f"drawing {noise_sec / sec:>5.0%}",
                flush=True,
            )
    return rows


def torch_vs_jax(d, n, dtype_name, steps=3):
    """Seconds per SGD step: straightforward PyTorch against the chunked JAX gradient + update."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import torch

    import modecollapse as mc

    torch.manual_seed(0)
    tdtype = getattr(torch, dtype_name)
    U, M = _problem(d, getattr(jnp, dtype_name))
    Ut = torch.tensor(np.asarray(U), dtype=tdtype)
    log_rho = torch.log(torch.tensor([0.6, 0.4], dtype=tdtype))
    m = torch.tensor(np.asarray(M), dtype=tdtype, requires_grad=True)
    a = torch.zeros(K, dtype=tdtype, requires_grad=True)
    log_s = torch.zeros((), dtype=tdtype, requires_grad=True)
    beta, eta = 0.8, 1e-3
    c = 0.5 * d * np.log(2 * np.pi)

    def mix_log_prob(x, means, log_w, log_scale):
        # Σ_l w_l N(x; means_l, s² I): (K, n, L, d) differences, the textbook way.
        sq = ((x[:, :, None, :] - means[None, None]) ** 2).sum(-1)
        s2 = torch.exp(2 * log_scale)
        return torch.logsumexp(log_w - 0.5 * sq / s2, -1) - d * log_scale - c

    def torch_step():
        z = torch.randn(K, n, d, dtype=tdtype)
        x = m[:, None, :] + torch.exp(log_s) * z
        log_w = torch.log_softmax(a, 0)
        h = mix_log_prob(x, m, log_w, log_s) - beta * mix_log_prob(x, Ut, log_rho, torch.zeros(()))
        F = (torch.exp(log_w) * h.mean(1)).sum()
        for t in (m, a, log_s):
            t.grad = None
        F.backward()
        with torch.no_grad():
            for t in (m, a, log_s):
                t -= eta * t.grad
        return float(F.detach())

    torch_step()
    start = time.perf_counter()
    for _ in range(steps):
        torch_step()
    torch_sec = (time.perf_counter() - start) / steps

    jdtype = getattr(jnp, dtype_name)
    p = jax.tree.map(lambda x: x.astype(jdtype), mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0))

    @jax.jit
    def jax_step(params, key, i):
        _, g = mc.particle_value_and_grad(params, p, beta, jr.fold_in(key, i), n)
        return jax.tree.map(lambda x, gx: x - eta * gx, params, g)

    params = (M, jnp.zeros(K, jdtype), jnp.zeros((), jdtype))
    params = jax.block_until_ready(jax_step(params, jr.key(0), 0))
    start = time.perf_counter()
    for i in range(steps):
        params = jax_step(params, jr.key(0), i + 1)
    jax.block_until_ready(params)
    jax_sec = (time.perf_counter() - start) / steps
    return {
        "dim": d,
        "n": n,
        "dtype": dtype_name,
        "torch_seconds_per_step": torch_sec,
        "jax_seconds_per_step": jax_sec,
        "jax_over_torch_throughput": torch_sec / jax_sec,
        "torch_threads": torch.get_num_threads(),
    }


_MEMORY_SCRIPT = """
import sys, time, jax
jax.config.update("jax_enable_x64", {x64})
import jax.numpy as jnp, jax.random as jr
import modecollapse as mc
d, n, chunk, mode = {d}, {n}, {chunk}, "{mode}"
U = jnp.zeros((2, d)).at[0, 0].set(3.0).at[1, 0].set(-3.0)
p = mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)
q = mc.IsotropicMixture(jr.normal(jr.key(0), (2, d)) / d**0.5, jnp.zeros(2), 0.0)
start = time.perf_counter()
if mode == "gradient":
    fn = jax.jit(lambda pr: mc.particle_value_and_grad(pr, p, 0.8, jr.key(1), n, chunk))
    v, g = jax.block_until_ready(fn((q.means, q.logits, q.log_scale)))
    ok = bool(jnp.isfinite(v)) and all(bool(jnp.all(jnp.isfinite(x))) for x in g)
else:
    est = mc.FreshParticles(jr.key(1), n, 0.01, chunk)
    ts = jnp.linspace(0.0, 0.03, 2)
    traj = mc.solve_full(q, p, mc.NoAnnealing(), ts, rates=mc.LearningRates(1.0, 1.0, 1e-6),
                         estimator=est)
    ok = traj.failure() is None and int(traj.num_steps) == 3
print("OK" if ok else "FAIL", time.perf_counter() - start)
"""


def peak_memory(d, n, chunk, mode, x64):
    script = _MEMORY_SCRIPT.format(d=d, n=n, chunk=chunk, mode=mode, x64=x64)
    proc = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", script], capture_output=True, text=True
    )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out = proc.stdout.split()
    return {
        "dim": d,
        "n": n,
        "chunk": chunk,
        "what": "one value_and_grad" if mode == "gradient" else "solve_full, 3 SGD (Euler) steps",
        "dtype": "float64" if x64 else "float32",
        "max_rss_gib": int(rss.group(1)) / 2**20 if rss else None,
        "finite": bool(out and out[0] == "OK"),
        "wall_seconds": float(out[1]) if len(out) > 1 else None,
        "stderr_tail": proc.stderr[-300:] if proc.returncode else "",
    }


def cli_latency(runs=2):
    """Wall seconds of `modecollapse run --out DIR` in fresh processes: empty cache, then warm."""
    exe = os.path.join(os.path.dirname(sys.executable), "modecollapse")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MODECOLLAPSE_CACHE_DIR=os.path.join(tmp, "cache"))
        times = []
        for i in range(runs + 1):
            start = time.perf_counter()
            subprocess.run(
                [exe, "run", "--out", os.path.join(tmp, f"out{i}"), "--no-progress"],
                env=env,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
    return {"cold_seconds": times[0], "warm_seconds": times[1:]}


def projected_rows(dims, ns, dtype, budget):
    """Seconds per gradient of the exact-law route, and of the particle route if K·n·d <= budget."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import modecollapse as mc

    rows = []
    for d in dims:
        U, M = _problem(d, dtype)
        p = jax.tree.map(lambda x: x.astype(dtype), mc.GaussianMixture(U, jnp.array([0.6, 0.4])))
        params = (M, jnp.zeros(K, dtype), jnp.zeros((), dtype))
        for n in ns:
            law = jax.jit(lambda pr, key, n=n: mc.projected_value_and_grad(pr, p, 0.8, key, n))
            row = {"dim": d, "n": n, "projected_seconds": _median_seconds(law, params, jr.key(1))}
            if K * n * d <= budget:
                dense = jax.jit(lambda pr, key, n=n: mc.particle_value_and_grad(pr, p, 0.8, key, n))
                row["particle_seconds"] = _median_seconds(
                    dense, params, jr.key(1), repeats=3 if K * n * d <= 1e8 else 1
                )
                row["speedup"] = row["particle_seconds"] / row["projected_seconds"]
            rows.append(row)
            print(row, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1000,10000,100000,1000000")
    parser.add_argument("--ns", default="256,4096")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--budget", type=float, default=1e9, help="skip K·n·d above this")
    parser.add_argument("--chunk-numbers", type=int, default=2**23)
    parser.add_argument("--skip", default="", help="comma list of: memory,torch,cli")
    parser.add_argument("--out", default="benchmarks/results/full_flow.json")
    parser.add_argument("--only", choices=("projected",), help="add one block to --out")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    if args.only == "projected":
        with open(args.out) as f:
            report = json.load(f)
        report["projected"] = {
            "what": "mc.projected_value_and_grad (exact law of the n-particle gradient, eqs. "
            "(E8)-(E10)) against mc.particle_value_and_grad, same (d, n), same process, float32",
            "rows": projected_rows(
                [int(x) for x in args.dims.split(",")],
                [int(x) for x in args.ns.split(",")],
                jnp.float32,
                args.budget,
            ),
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}")
        return

    dims = [int(x) for x in args.dims.split(",")]
    ns = [int(x) for x in args.ns.split(",")]
    report = {
        "what": "chunked projection gradient (eqs. (E4)-(E7)) of mc-fresh particles, K = J = 2",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), jax {jax.__version__}, "
        f"backend {jax.default_backend()}",
        "gpu": "no GPU was lent for this work: every number is CPU-only",
        "peak_method": "median wall time of a jitted 2048x2048 @ 2048x2048 jnp.dot in the same "
        "dtype, same process, just before the rows; 2·2048³ flops",
        "flop_count": "matmul flops only: 2·K·n·d·(K+J) forward projections + 2·K·n·d·K pull-back "
        "(eq. (E7)); particle drawing and elementwise work not counted",
        "precisions": {},
    }
    for name in args.dtypes.split(","):
        dtype = getattr(jnp, name)
        peak = matmul_peak(dtype)
        print(f"{name}: matmul peak {peak:.1f} GFLOP/s", flush=True)
        rows = jax_rows(dims, ns, dtype, args.budget, args.chunk_numbers)
        for row in rows:
            if "gflops_achieved" in row:
                row["fraction_of_peak"] = row["gflops_achieved"] / peak
        report["precisions"][name] = {"matmul_peak_gflops": peak, "rows": rows}
    if "torch" not in skip:
        report["torch"] = [
            torch_vs_jax(1000, 4096, "float32"),
            torch_vs_jax(10_000, 4096, "float32"),
        ]
        for row in report["torch"]:
            print(row, flush=True)
    if "memory" not in skip:
        report["memory"] = [
            peak_memory(1_000_000, 4096, 16, "gradient", False),
            peak_memory(1_000_000, 64, 16, "sgd", False),
        ]
        for row in report["memory"]:
            print(row, flush=True)
    if "cli" not in skip:
        report["cli_latency"] = cli_latency()
        print(report["cli_latency"], flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


_PRECISION_SCRIPT = """
import json, sys, dataclasses, jax, numpy as np
jax.config.update("jax_enable_x64", {x64})
import dataclasses as dc, equinox as eqx, jax.numpy as jnp
import modecollapse as mc
out = {{}}
dtypes = set()
for d in {dims}:
    exp = mc.load_experiment(None).with_dim(d)
    sim = dataclasses.replace(exp.simulation, rtol={rtol}, atol={atol})
    problem = mc.build_problem(dataclasses.replace(exp, simulation=sim))
    init = "{init}" + f"_{{d}}.npy"
    if {x64}:
        np.save(init, np.asarray(problem.family.means))
    else:  # the float64 run's initial means (float32 draws would differ), rounded to float32
        family = eqx.tree_at(lambda f: f.means, problem.family, jnp.asarray(np.load(init)))
        problem = dc.replace(problem, family=family)
    full, _ = mc.run_full(problem)
    theory, _ = mc.run_theory(problem)
    dtypes |= {{str(x.dtype) for x in jax.tree.leaves((full.R, full.Q, theory.R, theory.Q))}}
    out[d] = {{r: {{k: np.asarray(getattr(t, k), np.float64).tolist() for k in mc.STATISTICS}}
              for r, t in (("full", full), ("theory", theory))}}
out["dtypes"] = sorted(dtypes)
print(json.dumps(out))
"""


def precision_budget(dims=(16, 256, 4096)):
    """The default experiment (exact full flow and theory) in float32 against float64, per d."""
    runs = {}
    init = os.path.join(tempfile.mkdtemp(), "init")
    for name, rtol, atol in (("float64", 1e-7, 1e-9), ("float32", 1e-5, 1e-6)):
        x64 = name == "float64"
        script = _PRECISION_SCRIPT.format(x64=x64, dims=list(dims), rtol=rtol, atol=atol, init=init)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = []
    for d in dims:
        row = {"dim": d, "dtypes": {k: runs[k]["dtypes"] for k in runs}}
        for a, b, label in (
            ("float32", "float64", "full32_vs_full64"),
            ("float32", "float64", "theory32_vs_theory64"),
            ("float64", "float64", "full64_vs_theory64"),
            ("float32", "float32", "full32_vs_theory32"),
        ):
            ra, rb = ("theory", "theory") if "theory32_vs" in label else ("full", "full")
            if label.startswith("full64_vs") or label.startswith("full32_vs_theory"):
                ra, rb = "full", "theory"
            A, B = runs[a][str(d)][ra], runs[b][str(d)][rb]
            row[label] = {k: float(np.max(np.abs(np.asarray(A[k]) - np.asarray(B[k])))) for k in A}
        rows.append(row)
    return {
        "what": "sup over t ∈ [0, 40] of |Δ| per statistic (raw R, Q; weights, scale, objective) "
        "on the built-in default experiment (K = J = 2, linear annealing, exact estimator)",
        "tolerances": {"float64": [1e-7, 1e-9], "float32": [1e-5, 1e-6]},
        "mode": "float32 with jax_enable_x64 off (as the CLI runs --precision float32), started "
        "from the float64 run's initial means rounded to float32: float32 draws of the random "
        "initial means are different numbers, not a rounding of the float64 ones",
        "rows": rows,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--precision-budget"]:
        out = sys.argv[2] if len(sys.argv) > 2 else "benchmarks/results/precision.json"
        result = precision_budget()
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result, indent=1))
    else:
        main()
