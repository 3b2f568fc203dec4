"""Peer comparison: modecollapse's RealNVP flow VI against flowjax, side by side in one process.

Same target (J = 2 antipodal modes ±4 e_1, weights 0.6/0.4, σ = 1, d = 2 by default), same
architecture (affine coupling, 4 layers, conditioner MLP width 32, depth 2, tanh), same particles
(256 per step), steps (2000), optimizer (Adam, learning rate 0.01) and β ≡ 1 (no annealing).

- flowjax: `coupling_flow(..., transformer=Affine(), invert=False)` (forward pass samples, as ours)
  trained by `fit_to_key_based_loss` with `ElboLoss(target, num_samples)`.
- ours: `mc.train_flows` (one jit-compiled scan; records every 200 steps, Lipschitz tracking off).

Throughput = training steps per second of one flow, compilation excluded, float32 for both:
flowjax's step is compiled for each new flow instance first (it recompiles per instance; those
seconds are reported separately), ours is compiled once for all seeds (same static arguments).
Quality: final KL(q‖p) estimate (exact log q − log p on
20 000 samples) and mode coverage (every mode's mass > 0.1 ρ_j, (C2)) over the same number of
seeds. Also reported: our aggregate throughput when the seeds are vmapped in one run.

Differences that remain: flowjax's Affine uses scale = softplus(·) (unbounded) where ours uses the
bounded log-scale b·tanh(h/b) (NF2), and flowjax inserts a permutation between layers where ours
alternates halves; with d = 2 both alternate the two coordinates.

    .venv/bin/python benchmarks/flow_peer.py [--dim 2] [--steps 2000] [--seeds 8]

Needs `pip install flowjax`. Writes benchmarks/results/flow_peer.json.
"""

import argparse
import json
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import modecollapse as mc
from modecollapse.metrics import sample_mode_masses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS, WIDTH, DEPTH, PARTICLES, LR = 4, 32, 2, 256, 0.01


def _target(dim: int) -> mc.GaussianMixture:
    means = np.zeros((2, dim), np.float32)
    means[0, 0], means[1, 0] = 4.0, -4.0
    return mc.GaussianMixture(jnp.asarray(means, jnp.float32), jnp.asarray([0.6, 0.4], jnp.float32))


@eqx.filter_jit
def _quality(x, log_q, target):
    log_p = jax.vmap(target.log_prob_single)(x)
    masses = sample_mode_masses(x, target)
    return jnp.mean(log_q - log_p), masses


def _summary(kls, masses, rho):
    masses = np.asarray(masses)
    covered = np.all(masses > 0.1 * np.asarray(rho), axis=1)
    return {
        "kl_mean": float(np.mean(kls)),
        "kl_median": float(np.median(kls)),
        "kl_per_seed": [float(k) for k in kls],
        "covered_fraction": float(np.mean(covered)),
        "final_masses": masses.tolist(),
    }


def _flowjax_setup(dim, target):
    import optax
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow
    from flowjax.train import fit_to_key_based_loss
    from flowjax.train.losses import ElboLoss

    def make(key):
        return coupling_flow(
            key,
            base_dist=Normal(jnp.zeros(dim, jnp.float32)),
            transformer=Affine(),
            flow_layers=LAYERS,
            nn_width=WIDTH,
            nn_depth=DEPTH,
            nn_activation=jnp.tanh,
            invert=False,
        )

    loss = ElboLoss(target.log_prob_single, num_samples=PARTICLES)
    # one optimizer object for all fits: flowjax's jitted step takes it as a static argument, so a
    # fresh optax.adam per fit would recompile the step at every run
    optimizer = optax.adam(LR)

    def fit(key, flow, steps):
        return fit_to_key_based_loss(
            key, flow, loss_fn=loss, steps=steps, optimizer=optimizer, show_progress=False
        )[0]

    return make, fit


def _evaluate(flow, s, target):
    x, log_q = eqx.filter_jit(lambda f, k: f.sample_and_log_prob(k, (20_000,)))(
        flow, jr.fold_in(jr.key(3), s)
    )
    kl, m = _quality(x, log_q, target)
    return float(kl), np.asarray(m)


def run_both(dim, steps, seeds, target):
    """Seed by seed, flowjax then ours, so that changes in machine load hit both alike."""
    make, fit = _flowjax_setup(dim, target)
    kw = dict(
        layers=LAYERS, width=WIDTH, depth=DEPTH, steps=steps, learning_rate=LR,
        particles=PARTICLES, records=10, record_particles=256, lipschitz=False,
        final_particles=256,
    )  # fmt: skip
    mc.train_flows(jr.key(98), target, mc.NoAnnealing(), seeds=1, **kw)  # warm-up (compilation)
    out = {name: {"times": [], "kls": [], "masses": []} for name in ("flowjax", "ours")}
    for s in range(seeds):
        flow = make(jr.fold_in(jr.key(1), s))
        # flowjax's jitted step recompiles for every new flow instance (its static parts are new
        # objects); compile it for this instance first, so that only training is timed
        t0 = time.perf_counter()
        fit(jr.key(97), flow, 2)
        out["flowjax"].setdefault("compile", []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        flow = fit(jr.fold_in(jr.key(2), s), flow, steps)
        jax.block_until_ready(eqx.filter(flow, eqx.is_array))
        out["flowjax"]["times"].append(time.perf_counter() - t0)
        kl, m = _evaluate(flow, s, target)
        out["flowjax"]["kls"].append(kl)
        out["flowjax"]["masses"].append(m)

        t0 = time.perf_counter()
        run = mc.train_flows(jr.fold_in(jr.key(1), s), target, mc.NoAnnealing(), seeds=1, **kw)
        jax.block_until_ready(run.kl)
        out["ours"]["times"].append(time.perf_counter() - t0)
        ours = jax.tree.map(lambda a: a[0] if isinstance(a, jax.Array) else a, run.flows)
        kl, m = _evaluate(ours, s, target)
        out["ours"]["kls"].append(kl)
        out["ours"]["masses"].append(m)
        print(
            f"seed {s}: flowjax {out['flowjax']['times'][-1]:.1f}s, "
            f"ours {out['ours']['times'][-1]:.1f}s",
            flush=True,
        )
    # all seeds in one vmapped run (aggregate throughput)
    mc.train_flows(jr.key(97), target, mc.NoAnnealing(), seeds=seeds, **kw)  # warm-up
    t0 = time.perf_counter()
    run = mc.train_flows(jr.key(96), target, mc.NoAnnealing(), seeds=seeds, **kw)
    jax.block_until_ready(run.kl)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    import flowjax

    target = _target(args.dim)
    rho = np.asarray(target.weights)
    out, batched = run_both(args.dim, args.steps, args.seeds, target)
    fj_times, fj_kls, fj_masses = (out["flowjax"][k] for k in ("times", "kls", "masses"))
    our_times, our_kls, our_masses = (out["ours"][k] for k in ("times", "kls", "masses"))
    fj_rate = args.steps / float(np.median(fj_times))
    our_rate = args.steps / float(np.median(our_times))
    report = {
        "target": {"dim": args.dim, "means": "±4 e_1", "weights": [0.6, 0.4], "scale": 1.0},
        "settings": {
            "layers": LAYERS,
            "width": WIDTH,
            "depth": DEPTH,
            "activation": "tanh",
            "particles": PARTICLES,
            "steps": args.steps,
            "optimizer": "adam",
            "learning_rate": LR,
            "beta": 1.0,
            "dtype": "float32",
            "seeds": args.seeds,
        },
        "flowjax_compile_seconds_per_new_flow": out["flowjax"]["compile"],
        "flowjax": {
            "version": flowjax.__version__,
            "steps_per_second": fj_rate,
            "seconds_per_run": fj_times,
            **_summary(fj_kls, fj_masses, rho),
        },
        "modecollapse": {
            "steps_per_second": our_rate,
            "seconds_per_run": our_times,
            "vmapped_seeds_seconds": batched,
            "vmapped_aggregate_steps_per_second": args.steps * args.seeds / batched,
            **_summary(our_kls, our_masses, rho),
        },
        "throughput_ratio": our_rate / fj_rate,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "note": "median over seeds of wall time per run, compilation excluded; runs alternate "
        "flowjax/ours seed by seed in one process; the machine was shared with other jobs, so "
        "absolute rates vary",
    }
    path = os.path.join(ROOT, "benchmarks", "results", "flow_peer.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps({k: report[k] for k in ("throughput_ratio",)}, indent=1))
    for name in ("flowjax", "modecollapse"):
        r = report[name]
        print(
            f"{name:>13}: {r['steps_per_second']:.0f} steps/s, KL mean {r['kl_mean']:.3f} "
            f"(median {r['kl_median']:.3f}), covered {r['covered_fraction']:.2f}"
        )


if __name__ == "__main__":
    main()
