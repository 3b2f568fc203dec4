"""Flow-VI throughput and the cheapest correct settings for scripts/flow_theory.py (flows against
the theory at d up to 128; docs/theory.md §15).

Measured side by side in one run, RealNVP with 4 coupling layers of width 32, float32, 128 seeds
vmapped in one compiled training (as the flow sweeps run them), the ±4e₁ target with weights
0.6/0.4:

- flow-steps per second (one seed's optimiser step = one flow-step) at d ∈ {2, 8, 32, 128} for
  SGD with 16, 32 and 64 particles per step, and for Adam with 32 (compilation excluded: the
  training is compiled once by a first call of the same shape);
- stability of SGD on the gradient-flow clock (NF6): the fraction of failed (non-finite) flows
  after t = 24 at β = 1 for learning rates 0.02, 0.05 and 0.1, at d = 2 and d = 128 (32 particles).

    .venv/bin/python benchmarks/flow_speed.py [--out benchmarks/results/flow_speed.json]

About 3 minutes on the 2-core CPU.
"""

import argparse
import json
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import modecollapse as mc  # noqa: E402
from modecollapse.metrics import LABELS  # noqa: E402

SEEDS = 128
LAYERS, WIDTH = 4, 32


def _target(dim: int) -> mc.GaussianMixture:
    means = np.zeros((2, dim))
    means[0, 0], means[1, 0] = 4.0, -4.0
    return mc.GaussianMixture(jnp.asarray(means), jnp.asarray([0.6, 0.4]))


def _train(dim, steps, particles, optimizer, learning_rate, key=0):
    return mc.train_flows(
        jr.key(key),
        _target(dim),
        mc.NoAnnealing(),
        seeds=SEEDS,
        steps=steps,
        learning_rate=learning_rate,
        particles=particles,
        optimizer=optimizer,
        records=10,
        lipschitz=False,
        record_particles=512,
        final_particles=1024,
        dtype=jnp.float32,
        layers=LAYERS,
        width=WIDTH,
    )


def throughput(dim, particles, optimizer, steps=400) -> float:
    jax.block_until_ready(_train(dim, steps, particles, optimizer, 0.02, key=1).kl)  # compiles
    t0 = time.perf_counter()
    jax.block_until_ready(_train(dim, steps, particles, optimizer, 0.02, key=2).kl)
    return SEEDS * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "flow_speed.json"))
    args = ap.parse_args()
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": str(jax.devices()[0]),
        "settings": {"layers": LAYERS, "width": WIDTH, "seeds_vmapped": SEEDS, "dtype": "float32"},
        "throughput": [],
        "sgd_stability": [],
    }
    for dim in (2, 8, 32, 128):
        for particles, optimizer in ((16, "sgd"), (32, "sgd"), (64, "sgd"), (32, "adam")):
            rate = throughput(dim, particles, optimizer)
            report["throughput"].append(
                {
                    "d": dim,
                    "particles": particles,
                    "optimizer": optimizer,
                    "flow_steps_per_second": rate,
                }
            )
            print(
                f"d = {dim:3d}, {optimizer}, n = {particles}: {rate:8.0f} flow-steps/s", flush=True
            )
    for dim in (2, 128):
        for lr in (0.02, 0.05, 0.1):
            run = _train(dim, int(round(24 / lr / 10)) * 10, 32, "sgd", lr)
            labels = [LABELS[int(i)] for i in np.asarray(run.label)]
            failed = labels.count("failed") / len(labels)
            report["sgd_stability"].append(
                {"d": dim, "learning_rate": lr, "t": 24.0, "failed_fraction": failed}
            )
            print(f"d = {dim:3d}, SGD lr {lr}: failed {failed:.3f}", flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
