"""Batched, checkpointed sweeps of P(collapse) over a grid of experiment parameters.

Every trajectory (grid point g, seed s) is independent and keyed by `fold_in(key(seed_g), s)`, so
results never depend on how trajectories are chunked, sharded or resumed. Each chunk is one
jit-compiled, vmapped computation (solve + metrics), its batch axis sharded over all local devices.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._dynamics._full import solve_full
from .._dynamics._initial import initial_state
from .._dynamics._theory import solve_theory
from .._metrics import LABELS, Outcome, Thresholds, trajectory_outcome
from .._mixtures import IsotropicMixture
from .._summary import GramState, TargetStatistics
from ._config import ConfigError, Experiment, parse_experiment
from ._problem import build_problem, make_estimator, solver_options

ROUTES = ("theory", "full")
FIELDS = ("masses", "n_covered", "covered", "emc", "mode_score", "kl", "label", "status")
_CHECKPOINT = "checkpoint.npz"
_METRIC_SAMPLES = 2048


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The grid of a sweep: one validated `Experiment` per grid point (row-major order)."""

    base: Experiment
    names: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    points: tuple[Experiment, ...]
    seeds: int
    chunk: int
    route: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def total(self) -> int:
        return len(self.points) * self.seeds

    def fingerprint(self) -> str:
        blob = json.dumps([self.base.to_dict(), self.route], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise ConfigError(
                f"`sweep.parameters.{dotted}`: `{p}` is not a table of the experiment."
            )
        node = node[p]
    node[last] = value


_STRUCTURAL = ("save_points", "variational.components", "annealing.kind", "simulation")


def plan_sweep(raw: dict[str, Any], route: str) -> SweepPlan:
    """Expand the `[sweep]` table of a decoded experiment file into a validated grid.

    **Arguments:**

    - `raw`: the decoded TOML (with a `[sweep]` table).
    - `route`: "theory" or "full".

    **Returns:** a `SweepPlan`; raises `ConfigError` naming the offending key.

    **Example:**
    ```python
    plan = plan_sweep(tomllib.loads(text), "theory")
    plan.shape, plan.seeds
    ```
    """
    base = parse_experiment(raw)
    if base.sweep is None:
        raise ConfigError("`sweep`: missing table; a sweep needs [sweep] parameters, seeds, chunk.")
    sweep = base.sweep
    names = tuple(sweep.parameters)
    for name in names:
        if name == "sweep" or name.startswith("sweep."):
            raise ConfigError(f"`sweep.parameters.{name}`: the sweep table cannot be swept.")
        if any(name == s or name.startswith(s + ".") for s in _STRUCTURAL) or (
            route == "full" and name == "dim"
        ):
            raise ConfigError(
                f"`sweep.parameters.{name}`: cannot be swept on the {route} route (it changes the "
                "shape of the batched computation); run one sweep per value."
            )
    values = tuple(tuple(v) for v in sweep.parameters.values())
    points = []
    for combo in itertools.product(*values):
        data = json.loads(json.dumps({k: v for k, v in raw.items() if k != "sweep"}))
        for name, value in zip(names, combo):
            _set_dotted(data, name, value)
        try:
            points.append(parse_experiment(data))
        except ConfigError as e:
            shown = ", ".join(f"{n} = {json.dumps(v)}" for n, v in zip(names, combo))
            raise ConfigError(f"{e} (at sweep point {shown})") from None
    return SweepPlan(base, names, values, tuple(points), sweep.seeds, sweep.chunk, route)


def _trajectory_key(exp: Experiment, s: Any) -> jax.Array:
    return jr.fold_in(jr.key(exp.seed), s)


def _groups(plan: SweepPlan, indices: np.ndarray):
    """Split flat trajectory indices into (grid point, its seeds) runs."""
    g_all, s_all = np.divmod(indices, plan.seeds)
    for g in np.unique(g_all):
        yield int(g), s_all[g_all == g]


def _broadcast(tree: Any, n: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), tree)


@eqx.filter_jit
def _random_states(keys, stats, components, dim, norm, logits, log_scale):
    return jax.vmap(
        lambda k: initial_state(
            k, stats, components=components, dim=dim, norm=norm, logits=logits, log_scale=log_scale
        )
    )(keys)


def _theory_specs(plan: SweepPlan, indices: np.ndarray) -> tuple[Any, ...]:
    """Batched inputs of the theory route for the flat trajectory indices (vectorised per cell)."""
    parts = []
    for g, seeds in _groups(plan, indices):
        exp = plan.points[g]
        problem = build_problem(exp)
        stats = TargetStatistics.from_target(problem.target)
        keys = jax.vmap(lambda s: jr.split(_trajectory_key(exp, s)))(jnp.asarray(seeds))
        n = len(seeds)
        if exp.variational.init["kind"] == "random":
            state0 = _random_states(
                keys[:, 0],
                stats,
                exp.variational.components,
                float(exp.dim),
                exp.variational.init["norm"],
                problem.family.logits,
                problem.family.log_scale,
            )
        else:
            state0 = _broadcast(GramState.from_models(problem.family, problem.target), n)
        shared = (
            stats,
            problem.schedule,
            jax.tree.map(jnp.asarray, problem.rates),
            jnp.asarray(float(exp.dim)),
            problem.ts,
        )
        parts.append((state0, *_broadcast(shared, n), keys[:, 1]))
    return _concatenate(parts)


def _full_specs(plan: SweepPlan, indices: np.ndarray) -> tuple[Any, ...]:
    """Batched inputs of the full route: explicit d-dimensional initial means per trajectory."""
    specs = []
    problems: dict[int, Any] = {}
    for i in indices:
        g, s = divmod(int(i), plan.seeds)
        exp = plan.points[g]
        if g not in problems:  # one build per grid point, not per trajectory
            problems[g] = build_problem(exp)
        problem = problems[g]
        key = _trajectory_key(exp, s)
        init_key, metric_key, particle_key = jr.split(key, 3)
        family = problem.family
        if exp.variational.init["kind"] == "random":
            K, d = family.means.shape
            means = exp.variational.init["norm"] * jr.normal(init_key, (K, d)) / math.sqrt(d)
            family = IsotropicMixture(means, family.logits, family.log_scale)
        estimator = make_estimator(exp.simulation, particle_key)
        rates = jax.tree.map(jnp.asarray, problem.rates)
        specs.append(
            (family, problem.target, problem.schedule, rates, estimator, problem.ts, metric_key)
        )
    return _stack(specs)


def _concatenate(parts: list[Any]) -> Any:
    """Join batched input pytrees along the batch axis, checking they share one structure."""
    _check_same_structure([jax.tree.map(lambda x: x[0], p) for p in parts])
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _check_same_structure(specs: list[Any]) -> None:
    leaves0, tree0 = jax.tree.flatten(specs[0])
    for spec in specs[1:]:
        leaves, tree = jax.tree.flatten(spec)
        if tree != tree0 or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(leaves, leaves0)):
            raise ConfigError(
                "`sweep.parameters`: the swept values change the structure of the computation "
                "(shapes or kinds differ between grid points); run one sweep per structure."
            )


def _stack(specs: list[Any]) -> Any:
    _check_same_structure(specs)
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *specs)


@eqx.filter_jit
def _theory_chunk(specs, options, thresholds):
    def one(state0, stats, schedule, rates, dim, ts, key):
        traj = solve_theory(state0, stats, schedule, ts, dim=dim, rates=rates, options=options)
        out = trajectory_outcome(
            traj, stats, dim, key, thresholds, _METRIC_SAMPLES, options.quadrature
        )
        return out, traj.num_steps

    return jax.vmap(one)(*specs)


@eqx.filter_jit
def _full_chunk(specs, options, thresholds):
    def one(family, target, schedule, rates, estimator, ts, key):
        traj = solve_full(
            family, target, schedule, ts, rates=rates, estimator=estimator, options=options
        )
        stats = TargetStatistics.from_target(target)
        out = trajectory_outcome(
            traj, stats, family.dim, key, thresholds, _METRIC_SAMPLES, options.quadrature
        )
        return out, traj.num_steps

    return eqx.filter_vmap(one)(*specs)


def _shard(tree: Any, n_devices: int) -> Any:
    """Place the leading (batch) axis of every array leaf across the local devices."""
    if n_devices == 1:
        return tree
    mesh = Mesh(np.array(jax.local_devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    return jax.tree.map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) and x.ndim >= 1 else x, tree
    )


def _pad(indices: np.ndarray, width: int) -> np.ndarray:
    """Repeat the last index up to `width` (padded lanes are computed and dropped)."""
    extra = width - len(indices)
    return np.concatenate([indices, np.repeat(indices[-1:], extra)]) if extra else indices


def _empty_results(plan: SweepPlan) -> dict[str, np.ndarray]:
    n, J = plan.total, len(plan.base.target.weights)
    return {
        "masses": np.full((n, J), np.nan),
        "n_covered": np.zeros(n, np.int32),
        "covered": np.zeros(n, np.int8),
        "emc": np.full(n, np.nan),
        "mode_score": np.full(n, np.nan),
        "kl": np.full(n, np.nan),
        "label": np.full(n, LABELS.index("failed"), np.int32),
        "status": np.ones(n, np.int32),
        "num_steps": np.zeros(n, np.int32),
        "completed": np.zeros(n, bool),
    }


def _save_checkpoint(path: str, results: dict, plan: SweepPlan, seconds: float):
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".npz", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        np.savez(f, fingerprint=plan.fingerprint(), solve_seconds=seconds, **results)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _load_checkpoint(path: str, plan: SweepPlan):
    with np.load(path) as z:
        if str(z["fingerprint"]) != plan.fingerprint():
            raise ConfigError(
                "`--resume`: the checkpoint in the output folder was written by a different "
                "experiment or route; use another --out."
            )
        results = {k: z[k].copy() for k in _empty_results(plan)}
        return results, float(z["solve_seconds"])


def run_sweep(
    plan: SweepPlan,
    out_dir: str,
    *,
    resume: bool = False,
    progress: bool = False,
    thresholds: Thresholds = Thresholds(),
    stop_after_chunks: int | None = None,
) -> dict[str, np.ndarray]:
    """Run (or resume) a sweep, checkpointing atomically after every chunk.

    **Arguments:**

    - `plan`: from `plan_sweep`.
    - `out_dir`: where `checkpoint.npz` lives (created).
    - `resume`: continue from an existing checkpoint.
    - `progress`: show a progress bar.
    - `thresholds`: the classifier's thresholds.
    - `stop_after_chunks`: stop early (for tests of resumption).

    **Returns:** the per-trajectory results, flat over (grid..., seed), plus `solve_seconds`.

    **Example:**
    ```python
    results = run_sweep(plan_sweep(raw, "theory"), "out/")
    ```
    """
    from tqdm.auto import tqdm

    specs_fn, chunk_fn = (
        (_theory_specs, _theory_chunk) if plan.route == "theory" else (_full_specs, _full_chunk)
    )
    specs_fn(plan, np.arange(0, plan.total, plan.seeds))  # one per grid point: same structure?
    os.makedirs(out_dir, exist_ok=True)
    pid, nproc = jax.process_index(), jax.process_count()
    path = _checkpoint_path(out_dir, pid, nproc)
    if os.path.exists(path) and not resume:
        raise ConfigError(
            f"`--out`: {out_dir!r} holds a sweep checkpoint; pass --resume to continue it, or "
            "choose another folder."
        )
    results, seconds = _empty_results(plan), 0.0
    if resume and os.path.exists(path):
        results, seconds = _load_checkpoint(path, plan)
    n_devices = jax.local_device_count()
    chunk = plan.chunk
    options = solver_options(plan.base, False)
    # Process p of n takes chunks p, p + n, ...: no cross-host communication is needed.
    starts = [s for c, s in enumerate(range(0, plan.total, chunk)) if c % nproc == pid]
    todo = [s for s in starts if not results["completed"][s : s + chunk].all()]
    width = chunk + (-chunk) % n_devices  # every chunk padded to one shape: one compilation
    compiled = None
    mine = sum(min(chunk, plan.total - s) for s in starts)
    bar = tqdm(
        total=mine,
        initial=mine - sum(min(chunk, plan.total - s) for s in todo),
        unit="traj",
        disable=not progress,
        desc=f"sweep ({plan.route})",
    )
    for n_chunk, start in enumerate(todo):
        if stop_after_chunks is not None and n_chunk >= stop_after_chunks:
            break
        indices = np.arange(start, min(start + chunk, plan.total))
        specs = _shard(specs_fn(plan, _pad(indices, width)), n_devices)
        if compiled is None:
            compiled = chunk_fn.lower(specs, options, thresholds).compile()
        t0 = time.perf_counter()
        outcome, steps = jax.block_until_ready(compiled(specs, options, thresholds))
        seconds += time.perf_counter() - t0
        outcome: Outcome
        n = len(indices)
        for field in FIELDS:
            results[field][indices] = np.asarray(getattr(outcome, field))[:n]
        results["num_steps"][indices] = np.asarray(steps)[:n]
        results["completed"][indices] = True
        _save_checkpoint(path, results, plan, seconds)
        bar.update(n)
    bar.close()
    if nproc > 1 and pid == 0 and stop_after_chunks is None:
        results, seconds = _merge_processes(out_dir, plan, nproc, results, seconds)
    results["solve_seconds"] = np.asarray(seconds)
    return results


def _checkpoint_path(out_dir: str, pid: int, nproc: int) -> str:
    name = _CHECKPOINT if nproc == 1 else f"checkpoint-{pid}-of-{nproc}.npz"
    return os.path.join(out_dir, name)


def _merge_processes(out_dir, plan, nproc, results, seconds, timeout=24 * 3600.0):
    """Process 0 waits for every other process's checkpoint to be complete, then merges them."""
    deadline = time.time() + timeout
    for pid in range(1, nproc):
        path = _checkpoint_path(out_dir, pid, nproc)
        starts = [s for c, s in enumerate(range(0, plan.total, plan.chunk)) if c % nproc == pid]
        mask = np.zeros(plan.total, bool)
        for s in starts:
            mask[s : s + plan.chunk] = True
        while True:
            if os.path.exists(path):
                other, other_seconds = _load_checkpoint(path, plan)
                if other["completed"][mask].all():
                    break
            if time.time() > deadline:
                raise RuntimeError(f"process {pid} did not finish its part of the sweep in time")
            time.sleep(1.0)
        for key in results:
            results[key][mask] = other[key][mask]
        seconds = max(seconds, other_seconds)
    return results, seconds


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n (95% by default; eq. (C7))."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    safe = np.maximum(n, 1)
    p = k / safe
    denom = 1 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def summarise(plan: SweepPlan, results: dict[str, np.ndarray]) -> dict[str, Any]:
    """summary.json: P(collapse) with Wilson intervals over the grid, label counts, throughput."""
    shape = plan.shape + (plan.seeds,)
    label = results["label"].reshape(shape)
    ok = label != LABELS.index("failed")
    n_ok = ok.sum(-1)
    collapsed = (ok & (label != LABELS.index("covered"))).sum(-1)
    p = np.where(n_ok > 0, collapsed / np.maximum(n_ok, 1), np.nan)
    lo, hi = wilson(collapsed, n_ok)
    per_label = {
        name: np.where(n_ok > 0, (label == i).sum(-1) / np.maximum(n_ok, 1), np.nan)
        for i, name in enumerate(LABELS[:-1])
    }
    seconds = float(results["solve_seconds"])
    return {
        "route": plan.route,
        "parameters": {n: list(v) for n, v in zip(plan.names, plan.values)},
        "seeds": plan.seeds,
        "p_collapse": _nested(p),
        "p_collapse_ci": _nested(np.stack([lo, hi], -1)),
        "p_label": {k: _nested(v) for k, v in per_label.items()},
        "labels": {name: int((label == i).sum()) for i, name in enumerate(LABELS)},
        "failed": int((~ok).sum()),
        "trajectories": plan.total,
        "solve_seconds": seconds,
        "trajectories_per_second": plan.total / seconds if seconds > 0 else None,
        "devices": jax.local_device_count(),
        "processes": jax.process_count(),
        "config": plan.base.to_dict(),
    }


def _nested(a: np.ndarray) -> Any:
    if a.dtype.kind != "f":
        return a.tolist()
    out = a.astype(object)
    out[np.isnan(a)] = None
    return out.tolist()


def _dim_name(name: str) -> str:
    return name.replace(".", "_")


def write_netcdf(path: str, plan: SweepPlan, results: dict[str, np.ndarray]) -> None:
    """results.nc (netCDF-3, readable by xarray/netCDF4): one variable per outcome field over
    (grid parameters..., seed[, mode]); labels carry CF `flag_values`/`flag_meanings`."""
    from scipy.io import netcdf_file

    dims = tuple(_dim_name(n) for n in plan.names) + ("seed",)
    shape = plan.shape + (plan.seeds,)
    J = len(plan.base.target.weights)
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".nc", dir=os.path.dirname(path))
    os.close(fd)
    with netcdf_file(tmp, "w", version=2) as f:
        f.title = "modecollapse sweep"
        f.route = plan.route
        f.config = json.dumps(plan.base.to_dict())
        for name, dim, values in zip(plan.names, dims, plan.values):
            f.createDimension(dim, len(values))
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            var = f.createVariable(dim, "d" if numeric else "i", (dim,))
            var[:] = np.asarray(values, float) if numeric else np.arange(len(values))
            var.parameter = name
            var.values = json.dumps(list(values))
        f.createDimension("seed", plan.seeds)
        f.createVariable("seed", "i", ("seed",))[:] = np.arange(plan.seeds)
        f.createDimension("mode", J)
        f.createVariable("mode", "i", ("mode",))[:] = np.arange(1, J + 1)
        kinds = {
            "masses": "d",
            "n_covered": "i",
            "covered": "b",
            "emc": "d",
            "mode_score": "d",
            "kl": "d",
            "label": "i",
            "status": "i",
            "num_steps": "i",
        }
        for field, kind in kinds.items():
            extra = ("mode",) if field == "masses" else ()
            var = f.createVariable(field, kind, dims + extra)
            var[:] = results[field].reshape(shape + ((J,) if extra else ()))
        f.variables["label"].flag_values = np.arange(len(LABELS), dtype=np.int32)
        f.variables["label"].flag_meanings = " ".join(LABELS)
        f.variables["status"].flag_meanings = "0: solved, 1: failed (max steps or non-finite)"
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
