"""Lane refill against plain vmap on the theory route, side by side in one run
(docs/theory.md, §10, "Lane refill").

For each committed example (one cell of its sweep, the first values, `--batch` seeds as one
chunk): the compiled chunk of `modecollapse sweep` (solve and every metric, sharded over one CPU
device per core, as `run_sweep` runs it) with `[simulation] lanes = 0` (one plain vmap) and with
lane refill at each of `--lanes` (trajectories stepped together per device). Reported: the
throughput ratio refill / plain (median of `--repeats` calls, the variants timed in turn,
compilation excluded; absolute times on a shared 2-core machine are not meaningful), mean and
max steps, and the waste lane-steps executed / sum of trajectory steps: per device, plain vmap
executes share × max(steps of the share), refill lanes × its loop's iterations (measured with
`solve_theory_lanes` on each device's share). Writes benchmarks/results/refill.json.

    python benchmarks/refill.py [--batch 1024] [--lanes 64,128] [--repeats 5]
"""

import os

import modecollapse as mc  # noqa: E402  (importing initialises no jax backend)

mc.one_cpu_device_per_core()  # before jax initialises its backends
mc.prefer_wide_cpu_vectors()  # 512-bit vectors where the CPU has them

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

EXAMPLES = (
    "sweep_speed",
    "phase_a",
    "phase_b",
    "annealing_linear_rho0.5",
    "annealing_exponential_rho0.5",
)


def _raw(name, batch, lanes):
    with open(os.path.join("examples", name + ".toml"), "rb") as f:
        raw = tomllib.load(f)
    raw["sweep"] = dict(raw.get("sweep", {}), seeds=batch, chunk=batch)
    raw["sweep"]["parameters"] = {"seed": [raw.get("seed", 0)]}
    raw["simulation"] = dict(raw["simulation"], lanes=lanes)
    return raw


def _interleaved_seconds(calls, repeats):
    """Median seconds of each call, timed in turn (one of each per round) so that the load of
    a shared machine drifts over all of them alike; the first round compiles."""
    outs = [jax.block_until_ready(fn(*a)) for fn, a in calls]
    times = [[] for _ in calls]
    for _ in range(repeats):
        for k, (fn, a) in enumerate(calls):
            start = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[k].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times], outs


def _iterations(plan, lanes, n_devices):
    """The lane loop's iterations on each device's share of the chunk."""
    specs = mc.sweep_inputs(plan, np.arange(plan.total))
    share = plan.total // n_devices
    options = mc.sweep_solver_options(plan)
    out = []
    for d in range(n_devices):
        part = jax.tree.map(lambda x: x[d * share : (d + 1) * share], specs)
        _, iterations = mc.sweep_theory_solves(part, options, lanes)
        out.append(int(iterations))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="trajectories per chunk")
    parser.add_argument("--lanes", default="64,128", help="lanes per device to measure")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", default=",".join(EXAMPLES))
    parser.add_argument("--out", default="benchmarks/results/refill.json")
    args = parser.parse_args()
    n_dev = jax.local_device_count()
    choices = [int(x) for x in args.lanes.split(",") if x]
    share = args.batch // n_dev

    report = {
        "setting": " ".join(__doc__.split("\n\n")[1].split()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {n_dev} device(s), "
        f"backend {jax.default_backend()}, jax {jax.__version__}",
        "batch": args.batch,
        "examples": {},
    }
    for name in filter(None, args.examples.split(",")):
        plain_plan = mc.plan_sweep(_raw(name, args.batch, 0), "theory")
        specs = mc.sweep_inputs(plain_plan, np.arange(args.batch), shard=True)
        options = mc.sweep_solver_options(plain_plan)
        plans = [plain_plan] + [
            mc.plan_sweep(_raw(name, args.batch, lanes), "theory") for lanes in choices
        ]
        seconds, outs = _interleaved_seconds(
            [(mc.sweep_chunk(p), (specs, options)) for p in plans], args.repeats
        )
        t_plain, (out_plain, steps) = seconds[0], outs[0]
        steps = np.asarray(steps, float)
        shares = steps.reshape(n_dev, share)
        entry = {
            "mean_steps": float(steps.mean()),
            "max_steps": int(steps.max()),
            "plain_trajectories_per_second": args.batch / t_plain,
            "plain_waste": float(share * shares.max(1).sum() / steps.sum()),
            "refill": [],
        }
        for lanes, plan, t, (out, steps_lanes) in zip(choices, plans[1:], seconds[1:], outs[1:]):
            iterations = _iterations(plan, lanes, n_dev)
            width = min(lanes, share)
            entry["refill"].append(
                {
                    "lanes": lanes,
                    "trajectories_per_second": args.batch / t,
                    "ratio_to_plain": t_plain / t,
                    "waste": float(width * sum(iterations) / steps.sum()),
                    "iterations_per_device": iterations,
                    "same_num_steps": bool(np.array_equal(np.asarray(steps_lanes), steps)),
                    # rounding can differ by a trajectory's position in batches of other shapes
                    "num_steps_differing": int(np.sum(np.asarray(steps_lanes) != steps)),
                    "max_abs_step_difference": int(np.max(np.abs(np.asarray(steps_lanes) - steps))),
                    "same_labels": bool(
                        np.array_equal(np.asarray(out.label), np.asarray(out_plain.label))
                    ),
                }
            )
        best = max(entry["refill"], key=lambda r: r["ratio_to_plain"])
        entry["best_lanes"] = best["lanes"]
        report["examples"][name] = entry
        print(name, json.dumps(entry), flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
