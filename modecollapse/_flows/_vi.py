"""Reverse-KL variational inference with RealNVP flows, under annealing (docs/theory.md, §15).

Objective (NF5): F(θ; β) = E_{z~N(0,I)}[log q_θ(g_θ(z)) − β log p(g_θ(z))], estimated with fresh
reparameterised particles every step and minimised by optax (Adam by default, or SGD).

Time convention (NF6): step i is at time t_i = i·η (η the learning rate), and β_i = β(t_i); a
schedule's `duration` is in these units. For SGD this is the gradient-flow time of the theory.

The whole training is one jit-compiled computation: an outer `lax.scan` over record intervals,
each an inner `lax.scan` of `steps // records` optimiser steps, every step `eqx.filter_vmap`-ed over
seeds (each seed has its own initialisation and particles). At the end of each interval the
mode masses (C2), the objective, and the Lipschitz estimates (PF7), (PF8) are recorded, and a
`jax.debug.callback` advances an optional tqdm bar.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from .._annealing._schedules import AbstractSchedule
from .._metrics import (
    LABELS,
    Label,
    Thresholds,
    label_index,
    sample_entropic_mode_coverage,
    sample_mode_masses,
    sample_mode_score as _sample_mode_score,
)
from .._mixtures import GaussianMixture
from .._summary import all_finite
from ._pushforward import lipschitz_lower, lipschitz_upper, tv_estimate
from ._realnvp import RealNVP

# The flow-optimizer registry (name -> optax constructor of the learning rate); the jax-free config
# validates `flow.optimizer` against the same names (tests/test_registries.py keeps them equal).
OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "sgd": optax.sgd,
}
LIPSCHITZ_TAIL = 1e-3
"""Base mass η outside the ball on which the upper bound (PF8) is computed."""

# independent key streams per seed: steps use fold_in(key, i); records and the final metrics these
_RECORD_STREAM = 2**31 - 1
_FINAL_STREAM = 2**31 - 2

_PROGRESS: dict[str, Any] = {"bar": None}


def _tick(_):
    bar = _PROGRESS["bar"]
    if bar is not None:
        bar.update(1)


class FlowTraining(eqx.Module):
    """Records of a batch of flow-VI runs (leading axis: seeds), from `train_flows`.

    **Fields:**

    - `flows`: the trained flows, batched (leading axis seeds).
    - `times`: record times t, shape (r,), r = records + 1 (t = 0 first).
    - `beta`: β(t) at the record times, shape (r,) (or (s, r) for a batched schedule).
    - `loss`: the objective (NF5) at β(t), shape (s, r).
    - `masses`: mode masses (C2) of the flow samples, shape (s, r, J).
    - `lipschitz_lower`, `lipschitz_upper`: (PF7) and (PF8), shape (s, r) (NaN when not tracked).
    - `label`: index into `LABELS` per seed (eq. (NF7)), shape (s,).
    - `kl`: KL(q‖p) estimate at the end, shape (s,). `tv`: TV(q, p) estimate (PF9), shape (s,).
    - `emc`, `mode_score`: (C3), (C4) from the final samples, shape (s,).
    - `stable`: whether the seed kept its final set of missed modes (mass ≤ coverage·ρ_j) at every
      record of the last `stable_window` of training (eq. (NF8)), shape (s,).
    """

    flows: RealNVP
    times: Float[Array, " r"]
    beta: Float[Array, "*s r"]
    loss: Float[Array, "s r"]
    masses: Float[Array, "s r j"]
    lipschitz_lower: Float[Array, "s r"]
    lipschitz_upper: Float[Array, "s r"]
    label: Int[Array, " s"]
    kl: Float[Array, " s"]
    tv: Float[Array, " s"]
    emc: Float[Array, " s"]
    mode_score: Float[Array, " s"]
    stable: Bool[Array, " s"]

    def outcome(self, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
        """The `outcome` block (JSON form): counts per label and per-seed records."""
        labels = [LABELS[int(i)] for i in np.asarray(self.label)]
        counts = {name: labels.count(name) for name in LABELS}
        solved = len(labels) - counts["failed"]
        collapsed = solved - counts["covered"]
        stable = np.asarray(self.stable)
        return {
            "labels": counts,
            "p_collapse": collapsed / solved if solved else None,
            "stable_fraction": float(stable.mean()),
            "per_seed": [
                {
                    "label": lab,
                    "masses": [float(m) for m in np.asarray(self.masses[s, -1])],
                    "kl": float(self.kl[s]),
                    "tv": float(self.tv[s]),
                    "emc": float(self.emc[s]),
                    "mode_score": float(self.mode_score[s]),
                    "stable": bool(stable[s]),
                }
                for s, lab in enumerate(labels)
            ],
            "thresholds": {"coverage": thresholds.coverage},
        }


@functools.lru_cache(maxsize=32)
def _optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    # cached: the same transformation object lets `_train`'s compilation be reused
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")
    return OPTIMIZERS[name](learning_rate)


def flow_objective(
    flow: RealNVP, target: GaussianMixture, beta: Float[ArrayLike, ""], z: Float[Array, "n d"]
) -> Float[Array, ""]:
    """Eq. (NF5): mean over particles of log q(x) − β log p(x), x = g(z).

    **Arguments:**

    - `flow`: an unbatched RealNVP.
    - `target`: the mixture p.
    - `beta`: inverse temperature β.
    - `z`: base particles, shape (n, d).

    **Returns:** the estimate; at β = 1 it estimates KL(q‖p) exactly (p is normalised).

    **Example:**
    ```python
    flow_objective(flow, p, 1.0, jr.normal(jr.key(0), (256, 2)))
    ```
    """
    x, log_q = jax.vmap(flow.transform_and_log_prob_single)(z)
    return jnp.mean(log_q - beta * jax.vmap(target.log_prob_single)(x))


def classify_flow(
    masses: Float[Array, "r j"],
    times: Float[Array, " r"],
    rho: Float[Array, " j"],
    finite: Array,
    thresholds: Thresholds = Thresholds(),
    early: float = 0.1,
) -> Int[Array, ""]:
    """Flow analogue of the classifier (C6), eq. (NF7), on a recorded mass trajectory.

    Mode j is missed if its final mass ≤ `coverage`·ρ_j. `covered`: none missed.
    `mean_alignment`: every missed mode stayed ≤ threshold at all records with t ≥ early·t_end
    (the flow never put mass there after the early phase). `vanishing_weight`: every missed mode
    was above threshold at some record with t ≥ early·t_end, then lost its mass. `other`: a mix
    (J ≥ 3). `failed`: a non-finite loss or mass.

    **Arguments:**

    - `masses`: mode masses at the record times, shape (r, J).
    - `times`: record times, shape (r,).
    - `rho`: target weights, shape (J,).
    - `finite`: whether the run stayed finite.
    - `thresholds`: the coverage threshold.
    - `early`: the early-phase fraction of the training time (default 0.1).

    **Returns:** an index into `LABELS`.

    **Example:**
    ```python
    LABELS[int(classify_flow(masses, times, p.weights, jnp.array(True)))]
    ```
    """
    thr = thresholds.coverage * rho
    above = masses > thr
    missed = ~above[-1]
    late = (times >= early * times[-1])[:, None]
    was_covered = jnp.any(above & late, axis=0)
    n_missed = jnp.sum(missed)
    n_never = jnp.sum(missed & ~was_covered)
    missed_label = Label.where(
        n_never == n_missed,
        Label.mean_alignment,
        Label.where(n_never == 0, Label.vanishing_weight, Label.other),
    )
    label = Label.where(n_missed == 0, Label.covered, missed_label)
    return jnp.asarray(label_index(Label.where(finite, label, Label.failed)))


def label_stable(
    masses: Float[Array, "r j"],
    times: Float[Array, " r"],
    rho: Float[Array, " j"],
    thresholds: Thresholds = Thresholds(),
    window: float = 0.2,
) -> Bool[Array, ""]:
    """Eq. (NF8): the run kept its final label over the last `window` of training.

    The label (NF7) is fixed by the set of missed modes (final mass ≤ `coverage`·ρ_j) and, for a
    missed mode, its history; a label is stable when the missed set at every record with
    t ≥ (1 − window)·t_end equals the final one.

    **Arguments:**

    - `masses`: mode masses at the record times, shape (r, J).
    - `times`: record times, shape (r,).
    - `rho`: target weights, shape (J,).
    - `thresholds`: the coverage threshold.
    - `window`: the final fraction of the training time (default 0.2).

    **Returns:** a boolean scalar.

    **Example:**
    ```python
    bool(label_stable(run.masses[0], run.times, p.weights))
    ```
    """
    missed = masses <= thresholds.coverage * rho
    late = times >= (1.0 - window) * times[-1]
    same = jnp.all(missed == missed[-1], axis=-1)
    return jnp.all(same | ~late)


def _chi_quantile(dim: int, tail: float) -> float:
    """R with P(|z| > R) ≈ `tail` for z ~ N(0, I_d) (Wilson–Hilferty)."""
    from statistics import NormalDist

    zq = NormalDist().inv_cdf(1 - tail)
    k = float(dim)
    return math.sqrt(k * (1 - 2 / (9 * k) + zq * math.sqrt(2 / (9 * k))) ** 3)


class _Static(eqx.Module):
    target: GaussianMixture
    schedule: AbstractSchedule
    learning_rate: float = eqx.field(static=True)
    particles: int = eqx.field(static=True)
    record_particles: int = eqx.field(static=True)
    lipschitz_points: int = eqx.field(static=True)
    radius: float = eqx.field(static=True)
    batched_schedule: bool = eqx.field(static=True)


def _record(flow: RealNVP, key, static: _Static, beta, track_lipschitz: bool):
    dim = flow.dim
    z = jr.normal(key, (static.record_particles, dim), static.target.means.dtype)
    x, log_q = jax.vmap(flow.transform_and_log_prob_single)(z)
    log_p = jax.vmap(static.target.log_prob_single)(x)
    loss = jnp.mean(log_q - beta * log_p)
    masses = sample_mode_masses(x, static.target)
    if track_lipschitz:
        lo = lipschitz_lower(flow, z, static.target, points=static.lipschitz_points)
        hi = lipschitz_upper(flow, static.radius)
    else:
        lo = hi = jnp.full((), jnp.nan, z.dtype)
    return loss, masses, lo, hi, x, log_q, log_p


@eqx.filter_jit
def _train(
    params,
    opt_state,
    keys,
    static_flow,
    static: _Static,
    optim,
    n_records,
    per_record,
    track_lipschitz,
):
    def one_step(p, o, key, beta):
        def loss_fn(p):
            flow = eqx.combine(p, static_flow)
            z = jr.normal(key, (static.particles, flow.dim), static.target.means.dtype)
            return flow_objective(flow, static.target, beta, z)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        # optax's update mixes its int32 step count with Python floats (Adam's bias correction),
        # which strict dtype promotion refuses; only this third-party call runs under "standard".
        with jax.numpy_dtype_promotion("standard"):
            updates, o = optim.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    def beta_at(i):
        t = jnp.asarray(i, static.target.means.dtype) * static.learning_rate  # t_i = i·η  (NF6)
        if static.batched_schedule:
            return jax.vmap(lambda sch: sch(t))(static.schedule)
        return jnp.broadcast_to(static.schedule(t), keys.shape[:1])

    def step(carry, i):
        p, o = carry
        step_keys = jax.vmap(lambda k: jr.fold_in(k, i))(keys)
        p, o, loss = eqx.filter_vmap(one_step)(p, o, step_keys, beta_at(i))
        return (p, o), loss

    def record(p, r):
        beta = beta_at(r * per_record)
        rkeys = jax.vmap(lambda k: jr.fold_in(jr.fold_in(k, _RECORD_STREAM), r))(keys)
        out = eqx.filter_vmap(
            lambda pp, k, b: _record(eqx.combine(pp, static_flow), k, static, b, track_lipschitz)
        )(p, rkeys, beta)
        return out[:4]

    def chunk(carry, r):
        carry, _ = jax.lax.scan(step, carry, r * per_record + jnp.arange(per_record))
        jax.debug.callback(_tick, r)
        return carry, record(carry[0], r + 1)

    first = record(params, 0)
    (params, opt_state), recs = jax.lax.scan(chunk, (params, opt_state), jnp.arange(n_records))
    recs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    return params, recs


@eqx.filter_jit
def _final(params, static_flow, keys, static: _Static, n: int):
    def one(p, key):
        flow = eqx.combine(p, static_flow)
        z = jr.normal(key, (n, flow.dim), static.target.means.dtype)
        x, log_q = jax.vmap(flow.transform_and_log_prob_single)(z)
        log_p = jax.vmap(static.target.log_prob_single)(x)
        return (
            jnp.mean(log_q - log_p),
            tv_estimate(log_q, log_p),
            sample_entropic_mode_coverage(x, static.target),
            _sample_mode_score(x, static.target),
        )

    fkeys = jax.vmap(lambda k: jr.fold_in(k, _FINAL_STREAM))(keys)
    return eqx.filter_vmap(one)(params, fkeys)


def init_flows(
    key: PRNGKeyArray,
    seeds: int | Array,
    dim: int,
    layers: int = 8,
    width: int = 32,
    depth: int = 2,
    dtype=None,
) -> RealNVP:
    """Independently initialised flows, batched along a leading axis (seed s uses
    `fold_in(key, s)`).

    **Arguments:**

    - `key`: PRNG key; `seeds`: how many flows (seeds 0..n−1), or an array of seed ids.
    - `dim`, `layers`, `width`, `depth`: see `RealNVP`.
    - `dtype`: parameter dtype (default: JAX's default float).

    **Returns:** a batched `RealNVP`.

    **Example:**
    ```python
    flows = init_flows(jr.key(0), 16, dim=2, layers=4, width=16)
    ```
    """

    ids = jnp.arange(seeds) if isinstance(seeds, int) else jnp.asarray(seeds)
    dtype = None if dtype is None else jnp.dtype(dtype)
    return _init_batch(key, ids, dim, layers, width, depth, dtype)


@eqx.filter_jit
def _init_batch(key, ids, dim, layers, width, depth, dtype):
    def make(s):
        flow = RealNVP(jr.fold_in(key, s), dim, layers, width, depth)
        if dtype is not None:
            flow = jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, flow)
        return flow

    return eqx.filter_vmap(make)(ids)


@eqx.filter_jit
def _opt_init(optim, params):
    return eqx.filter_vmap(optim.init)(params)


@eqx.filter_jit
def _labels(masses, loss, kl, times, weights, thresholds, early, window):
    finite = all_finite(loss, masses, kl, batch_ndim=1)
    label = jax.vmap(lambda m, f: classify_flow(m, times, weights, f, thresholds, early))(
        masses, finite
    )
    stable = jax.vmap(lambda m: label_stable(m, times, weights, thresholds, window))(masses)
    return label, stable & finite


def train_flows(
    key: PRNGKeyArray,
    target: GaussianMixture,
    schedule: AbstractSchedule,
    *,
    seeds: int = 1,
    layers: int = 8,
    width: int = 32,
    depth: int = 2,
    steps: int = 2000,
    learning_rate: float = 1e-2,
    particles: int = 256,
    optimizer: str = "adam",
    records: int = 20,
    record_particles: int = 1024,
    lipschitz: bool = True,
    lipschitz_points: int = 32,
    final_particles: int = 4096,
    thresholds: Thresholds = Thresholds(),
    early: float = 0.1,
    stable_window: float = 0.2,
    dtype=None,
    batched_schedule: bool = False,
    seed_ids: Array | None = None,
    progress: bool = False,
) -> FlowTraining:
    """Train `seeds` RealNVP flows by annealed reverse-KL VI, all seeds in one compiled scan.

    Step i (time t_i = i·η, eq. (NF6)) minimises (NF5) at β(t_i) on `particles` fresh base draws.

    **Arguments:**

    - `key`: PRNG key; seed s initialises from `fold_in(key_init, s)` and draws its own particles.
    - `target`: the mixture p; `schedule`: β(t), e.g. `LinearSchedule(0.2, 10.0)`.
    - `seeds`, `layers`, `width`, `depth`: batch size and architecture.
    - `steps`, `learning_rate`, `particles`, `optimizer`: training ("adam" or "sgd").
    - `records`: record intervals (must divide `steps`); `record_particles`: samples per record.
    - `lipschitz`: track (PF7), (PF8) at the records; `lipschitz_points`: base points for (PF7)
      (the record particles whose images lie closest to a mid-plane between modes).
    - `final_particles`: samples for the final KL, TV, EMC and mode score.
    - `thresholds`, `early`: the classifier (NF7); `stable_window`: the final fraction of
      training over which a label must hold to count as stable (NF8).
    - `dtype`: computation dtype (default: the target's); float32 is about twice as fast on CPU.
    - `batched_schedule`: `schedule` carries a leading seeds axis (one schedule per seed, e.g. a
      whole phase diagram in one compiled run).
    - `seed_ids`: the seed id of each run, shape (seeds,) (default 0..seeds−1); runs with equal
      ids share initialisation and particles (common random numbers across cells).
    - `progress`: a tqdm bar over the records.

    **Returns:** a `FlowTraining`.

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[3.0, 0.0], [-3.0, 0.0]]), jnp.array([0.6, 0.4]))
    run = train_flows(jr.key(0), p, LinearSchedule(0.2, 5.0), seeds=8, steps=1000)
    run.outcome()["p_collapse"]
    ```
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}.")
    for name, value in (
        ("seeds", seeds),
        ("steps", steps),
        ("records", records),
        ("particles", particles),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if steps % records:
        raise ValueError(f"`records` ({records}) must divide `steps` ({steps}); change either.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}.")
    dtype = jnp.dtype(dtype or target.means.dtype)
    target = jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, target)
    # Python-float schedule parameters become arrays: one compilation serves every β0, duration
    schedule = jax.tree.map(
        lambda v: jnp.asarray(v, dtype) if isinstance(v, float | int) else v, schedule
    )
    k_init, k_train = jr.split(key)
    ids = jnp.arange(seeds) if seed_ids is None else jnp.asarray(seed_ids)
    if ids.shape != (seeds,):
        raise ValueError(f"`seed_ids` must have shape ({seeds},), got {ids.shape}.")
    flows = init_flows(k_init, ids, target.dim, layers, width, depth, dtype)
    params, static_flow = eqx.partition(flows, eqx.is_inexact_array)
    optim = _optimizer(optimizer, learning_rate)
    opt_state = _opt_init(optim, params)
    keys = jax.vmap(lambda s: jr.fold_in(k_train, s))(ids)
    static = _Static(
        target,
        schedule,
        float(learning_rate),
        particles,
        record_particles,
        min(lipschitz_points, record_particles),
        _chi_quantile(target.dim, LIPSCHITZ_TAIL),
        batched_schedule,
    )
    per = steps // records
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=records, desc=f"flow VI ({seeds} seeds, {steps} steps)", leave=False)
    _PROGRESS["bar"] = bar
    try:
        params, (loss, masses, lo, hi) = _train(
            params, opt_state, keys, static_flow, static, optim, records, per, lipschitz
        )
        jax.block_until_ready(params)
    finally:
        _PROGRESS["bar"] = None
        if bar is not None:
            bar.close()
    kl, tv, emc, score = _final(params, static_flow, keys, static, final_particles)
    times = jnp.arange(records + 1, dtype=dtype) * per * learning_rate
    if batched_schedule:
        beta = jax.vmap(lambda sch: jax.vmap(sch)(times))(schedule)
    else:
        beta = jax.vmap(schedule)(times)
    masses = jnp.moveaxis(masses, 0, 1)
    loss = jnp.moveaxis(loss, 0, 1)
    label, stable = _labels(
        masses, loss, kl, times, target.weights, thresholds, early, stable_window
    )
    return FlowTraining(
        flows=eqx.combine(params, static_flow),
        times=times,
        beta=beta,
        loss=loss,
        masses=masses,
        lipschitz_lower=jnp.moveaxis(lo, 0, 1),
        lipschitz_upper=jnp.moveaxis(hi, 0, 1),
        label=label,
        kl=kl,
        tv=tv,
        emc=emc,
        mode_score=score,
        stable=stable,
    )


def example_seeds(label: Int[Array, " s"]) -> dict[str, int]:
    """The first seed of each label that occurs (for per-mode mass trajectory figures).

    **Arguments:**

    - `label`: labels per seed.

    **Returns:** {label name: seed index}.

    **Example:**
    ```python
    example_seeds(run.label)  # e.g. {"covered": 0, "mean_alignment": 3}
    ```
    """
    out: dict[str, int] = {}
    for s, i in enumerate(np.asarray(label)):
        out.setdefault(LABELS[int(i)], s)
    return out
