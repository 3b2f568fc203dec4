"""Batched, checkpointed sweeps of P(collapse) over a grid of experiment parameters.

Every trajectory (grid point g, seed s) is independent and keyed by `fold_in(key(seed_g), s)`, so
results never depend on how trajectories are chunked, sharded or resumed. Each chunk is one
jit-compiled, vmapped computation (solve + metrics), its batch axis sharded over all local devices.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import re
import tempfile
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PRNGKeyArray

from .._dynamics._full import solve_full
from .._dynamics._initial import initial_state
from .._dynamics._solve import SolverOptions
from .._dynamics._theory import solve_theory, solve_theory_lanes
from .._metrics import (
    LABELS,
    Label,
    Outcome,
    Thresholds,
    label_index,
    outcome_fields,
    trajectory_outcome,
    wilson_interval,
)
from .._mixtures import IsotropicMixture
from .._summary import GramState, TargetStatistics
from ._config import ConfigError, Experiment, parse_experiment
from ._problem import build_problem, make_estimator, solver_options

ROUTES = ("theory", "full")
_CHECKPOINT = "checkpoint.npz"
_CHECKPOINT_NAME = re.compile(r"checkpoint(?:-(\d+)-of-(\d+))?\.npz")
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


_STRUCTURAL = (
    "save_points",
    "variational.components",
    "annealing.kind",
    "simulation",
    "objective.kind",
)


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


def one_cpu_device_per_core(cores: int | None = None) -> None:
    """Let XLA show one CPU device per core, so that a chunk is sharded over every core.

    XLA runs a small vmapped solve on one thread per device; with the default single CPU device
    a sweep uses one core. This sets `--xla_force_host_platform_device_count` in `XLA_FLAGS`. It
    takes effect only if called before jax first initialises its backends, and never overrides a
    device count the user set; accelerators are unaffected (their devices are not CPU devices).
    Results do not depend on it: trajectories are keyed by (grid point, seed), not by chunk.

    **Arguments:**

    - `cores`: the device count (default: the cores this process may run on).

    **Returns:** None.

    **Example:**
    ```python
    one_cpu_device_per_core()  # before the first jax computation of the process
    ```
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = cores if cores is not None else len(os.sched_getaffinity(0))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:  # not Linux: leave XLA's default
        return False


def prefer_wide_cpu_vectors() -> None:
    """On CPUs with AVX-512, let XLA's CPU compiler use 512-bit vectors.

    LLVM prefers 256-bit vectors by default, also where the CPU has 512-bit ones. The theory's
    right-hand side is elementwise float64 arithmetic (the 1-D kernel's exponentials and
    polynomials), so wider vectors make it cheaper: on the 2-core AVX-512 machine of
    `benchmarks/results/sweep_speed.json` the sweep ran about 1.45× faster (README, "Sweep
    speed"). This sets `--xla_cpu_prefer_vector_width=512` in `XLA_FLAGS`, like
    `one_cpu_device_per_core` only before jax first initialises its backends, and never
    overrides a width the user set. Results agree to rounding (the same operations, vectorised
    differently).

    **Returns:** None.

    **Example:**
    ```python
    prefer_wide_cpu_vectors()  # before the first jax computation of the process
    ```
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in flags or not _has_avx512():
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_prefer_vector_width=512".strip()


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
            problem.divergence,
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
            family = redraw_means(family, init_key, exp.variational.init["norm"])
        estimator = make_estimator(exp.simulation, particle_key, problem.divergence)
        rates = jax.tree.map(jnp.asarray, problem.rates)
        specs.append(
            (family, problem.target, problem.schedule, rates, estimator, problem.ts, metric_key)
        )
    return _stack(specs)


def redraw_means(family: IsotropicMixture, key: PRNGKeyArray, norm: float) -> IsotropicMixture:
    """The family with i.i.d. random means m_k ~ N(0, (norm²/d) I_d), so |m_k| ≈ norm: the
    full route's random initialisation (docs/theory.md, §10). Keeps the family's dtype (float32
    stays float32 under x64); weights and scale are unchanged.

    **Arguments:**

    - `family`: the variational family (its means are replaced).
    - `key`: PRNG key of the means.
    - `norm`: the expected norm of each mean.

    **Returns:** an `IsotropicMixture` of the same shapes and dtypes.

    **Example:**
    ```python
    q = redraw_means(problem.family, jr.key(0), 4.0)
    ```
    """
    K, d = family.means.shape
    means = norm * jr.normal(key, (K, d), family.means.dtype) / math.sqrt(d)
    return eqx.tree_at(lambda f: f.means, family, means)


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


def sweep_theory_solves(specs: Any, options: SolverOptions, lanes: int = 0):
    """The theory route's solves of a chunk, without metrics: plain vmap or lane refill.

    **Arguments:**

    - `specs`: the chunk's inputs, from `sweep_inputs` on a theory plan (batched over N).
    - `options`: the solver options (`sweep_solver_options`).
    - `lanes`: 0 for one `vmap` of `solve_theory`; L > 0 for lane refill with L lanes
      (`solve_theory_lanes`; docs/theory.md, §10, "Lane refill").

    **Returns:** `(trajectories, iterations)`: a `Trajectory` batched over N, and the lock-step
    iterations executed (for plain vmap, the largest step count).

    **Example:**
    ```python
    specs = sweep_inputs(plan, np.arange(256))
    trajs, iterations = sweep_theory_solves(specs, sweep_solver_options(plan), lanes=64)
    ```
    """
    state0, stats, schedule, rates, dim, ts, divergence, _ = specs
    batched = dict(dim=dim, rates=rates, divergence=divergence)  # leaves batched over N
    if lanes > 0:
        return solve_theory_lanes(
            state0, stats, schedule, ts, options=options, lanes=lanes, **batched
        )

    def one(state0, stats, schedule, ts, batched):
        return solve_theory(state0, stats, schedule, ts, options=options, **batched)

    traj = jax.vmap(one)(state0, stats, schedule, ts, batched)
    return traj, jnp.max(traj.num_steps)


@eqx.filter_jit
def _theory_chunk(specs, options, thresholds, lanes=0):
    if lanes > 0:
        return _on_each_device(
            functools.partial(_theory_outcomes, options, thresholds, lanes), specs
        )
    return _theory_outcomes(options, thresholds, 0, specs)


def _theory_outcomes(options, thresholds, lanes, specs):
    """The theory chunk: the solves (plain vmap or lane refill), then every metric on the
    (N, T, ...) records, vmapped."""
    traj, _ = sweep_theory_solves(specs, options, lanes)
    _, stats, _, _, dim, _, _, key = specs
    outcome = jax.vmap(
        lambda traj, stats, dim, key: trajectory_outcome(
            traj, stats, dim, key, thresholds, _METRIC_SAMPLES, options.quadrature
        )
    )(traj, stats, dim, key)
    return outcome, traj.num_steps


def _on_each_device(fn, specs):
    """`fn(specs)` on each local device's share of the batch (`shard_map`), so that every
    device runs its own lane loop; on one device, or a batch that does not divide, `fn(specs)`."""
    n_devices = jax.local_device_count()
    n = jax.tree.leaves(specs)[0].shape[0]
    if n_devices == 1 or n % n_devices:
        return fn(specs)
    dynamic, static = eqx.partition(specs, eqx.is_array)
    spec = PartitionSpec("batch")
    return jax.shard_map(
        lambda d: fn(eqx.combine(d, static)),
        mesh=_mesh(),
        in_specs=(jax.tree.map(lambda _: spec, dynamic),),
        out_specs=spec,
        check_vma=False,  # no collectives: each device's loop is independent
    )(dynamic)


@eqx.filter_jit
def _full_chunk(specs, options, thresholds, lanes=0):
    del lanes  # the full route keeps plain vmap (docs/theory.md, §10, "Lane refill")

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


def _route_functions(plan: SweepPlan):
    """(batched inputs, compiled chunk) of the plan's route: the one place the route is chosen."""
    if plan.route == "theory":
        return _theory_specs, _theory_chunk
    return _full_specs, _full_chunk


def sweep_inputs(plan: SweepPlan, indices: np.ndarray, *, shard: bool = False) -> Any:
    """The batched inputs of the chunk that computes the flat trajectory `indices` of a sweep.

    **Arguments:**

    - `plan`: from `plan_sweep`.
    - `indices`: flat trajectory indices, grid point × seeds + seed.
    - `shard`: place the batch axis across the local devices, as `run_sweep` does (the batch
      must then divide evenly by their number).

    **Returns:** the pytree of batched inputs that `sweep_chunk(plan)` takes.

    **Example:**
    ```python
    specs = sweep_inputs(plan, np.arange(256))
    outcome, steps = sweep_chunk(plan)(specs, sweep_solver_options(plan))
    ```
    """
    specs = _route_functions(plan)[0](plan, np.asarray(indices))
    return _shard(specs, jax.local_device_count()) if shard else specs


def sweep_chunk(plan: SweepPlan, thresholds: Thresholds = Thresholds()):
    """The jit-compiled chunk of a sweep's route: solve and every metric of a batch.

    **Arguments:**

    - `plan`: from `plan_sweep` (its route picks the computation).
    - `thresholds`: the classifier's thresholds.

    **Returns:** a function `(inputs, options) -> (Outcome, num_steps)`, batched over the inputs
    of `sweep_inputs`.

    **Example:**
    ```python
    specs = sweep_inputs(plan, np.arange(64))
    outcome, steps = sweep_chunk(plan)(specs, sweep_solver_options(plan))
    ```
    """
    chunk_fn = _route_functions(plan)[1]
    lanes = plan.base.simulation.lanes
    return lambda specs, options: chunk_fn(specs, options, thresholds, lanes)


def sweep_solver_options(plan: SweepPlan) -> SolverOptions:
    """The solver options every chunk of a sweep uses (the base experiment's `[simulation]`).

    **Example:** `options = sweep_solver_options(plan)`
    """
    return solver_options(plan.base, False)


def _shard(tree: Any, n_devices: int) -> Any:
    """Place the leading (batch) axis of every array leaf across the local devices."""
    if n_devices == 1:
        return tree
    sharding = NamedSharding(_mesh(), PartitionSpec("batch"))
    return jax.tree.map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) and x.ndim >= 1 else x, tree
    )


def _mesh() -> Mesh:
    return Mesh(np.array(jax.local_devices()), ("batch",))


def _pad(indices: np.ndarray, width: int) -> np.ndarray:
    """Repeat the last index up to `width` (padded lanes are computed and dropped)."""
    extra = width - len(indices)
    return np.concatenate([indices, np.repeat(indices[-1:], extra)]) if extra else indices


def _empty_results(plan: SweepPlan) -> dict[str, np.ndarray]:
    """Every `Outcome` field (as `outcome_fields` stores it), then the sweep's own bookkeeping."""
    n, J = plan.total, len(plan.base.target.weights)
    results = {
        f.name: np.full((n, J) if f.per_mode else (n,), f.missing, f.dtype)
        for f in outcome_fields()
    }
    results["num_steps"] = np.zeros(n, np.int32)
    results["completed"] = np.zeros(n, bool)
    return results


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
    merge_timeout: float = 24 * 3600.0,
) -> dict[str, np.ndarray]:
    """Run (or resume) a sweep, checkpointing atomically after every chunk.

    **Arguments:**

    - `plan`: from `plan_sweep`.
    - `out_dir`: where `checkpoint.npz` lives (created).
    - `resume`: continue from an existing checkpoint.
    - `progress`: show a progress bar.
    - `thresholds`: the classifier's thresholds.
    - `stop_after_chunks`: stop early (for tests of resumption).
    - `merge_timeout`: on process 0 of a multi-process sweep, how many seconds to wait for the
      other processes' checkpoints to be complete (default 24 h); then a `SweepTimeout`.

    Resuming needs the checkpoint of this run's process layout: a folder whose checkpoints were
    written by another number of processes is refused with a `ConfigError` that says so.

    **Returns:** the per-trajectory results, flat over (grid..., seed), plus `solve_seconds`.

    **Example:**
    ```python
    results = run_sweep(plan_sweep(raw, "theory"), "out/")
    ```
    """
    from tqdm.auto import tqdm

    specs_fn, chunk_fn = _route_functions(plan)
    specs_fn(plan, np.arange(0, plan.total, plan.seeds))  # one per grid point: same structure?
    os.makedirs(out_dir, exist_ok=True)
    pid, nproc = jax.process_index(), jax.process_count()
    path = _checkpoint_path(out_dir, pid, nproc)
    found = _checkpoint_layouts(out_dir)
    if not resume and (os.path.exists(path) or set(found) - {nproc}):
        raise ConfigError(
            f"`--out`: {out_dir!r} holds a sweep checkpoint; pass --resume to continue it, or "
            "choose another folder."
        )
    if resume and found and nproc not in found:
        names = ", ".join(sorted(n for names in found.values() for n in names))
        layouts = " or ".join(str(n) for n in sorted(found))
        raise ConfigError(
            f"`--resume`: {out_dir!r} holds the checkpoint of a sweep run by {layouts} "
            f"process(es) ({names}), but this run has {nproc}; resume with --num-processes "
            f"{min(found)}, or choose another --out."
        )
    results, seconds = _empty_results(plan), 0.0
    if resume and os.path.exists(path):
        results, seconds = _load_checkpoint(path, plan)
    n_devices = jax.local_device_count()
    chunk = plan.chunk
    options = sweep_solver_options(plan)
    lanes = plan.base.simulation.lanes
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
            compiled = chunk_fn.lower(specs, options, thresholds, lanes).compile()
        t0 = time.perf_counter()
        outcome, steps = jax.block_until_ready(compiled(specs, options, thresholds, lanes))
        seconds += time.perf_counter() - t0
        outcome: Outcome
        n = len(indices)
        for field in outcome_fields():
            results[field.name][indices] = np.asarray(getattr(outcome, field.name))[:n]
        results["num_steps"][indices] = np.asarray(steps)[:n]
        results["completed"][indices] = True
        _save_checkpoint(path, results, plan, seconds)
        bar.update(n)
    bar.close()
    if nproc > 1 and pid == 0 and stop_after_chunks is None:
        results, seconds = _merge_processes(out_dir, plan, nproc, results, seconds, merge_timeout)
    results["solve_seconds"] = np.asarray(seconds)
    return results


def _checkpoint_path(out_dir: str, pid: int, nproc: int) -> str:
    name = _CHECKPOINT if nproc == 1 else f"checkpoint-{pid}-of-{nproc}.npz"
    return os.path.join(out_dir, name)


def _checkpoint_layouts(out_dir: str) -> dict[int, list[str]]:
    """The checkpoints in `out_dir` by the number of processes that wrote them."""
    found: dict[int, list[str]] = {}
    for name in os.listdir(out_dir):
        match = _CHECKPOINT_NAME.fullmatch(name)
        if match:
            found.setdefault(int(match.group(2) or 1), []).append(name)
    return found


class SweepTimeout(RuntimeError):
    """Process 0 of a multi-process sweep gave up waiting for another process's checkpoint."""


def _merge_processes(out_dir, plan, nproc, results, seconds, timeout):
    """Process 0 waits for every other process's checkpoint to be complete, then merges them."""
    deadline = time.time() + timeout
    for pid in range(1, nproc):
        path = _checkpoint_path(out_dir, pid, nproc)
        starts = [s for c, s in enumerate(range(0, plan.total, plan.chunk)) if c % nproc == pid]
        mask = np.zeros(plan.total, bool)
        for s in starts:
            mask[s : s + plan.chunk] = True
        while True:
            done = 0
            if os.path.exists(path):
                other, other_seconds = _load_checkpoint(path, plan)
                done = int(other["completed"][mask].sum())
                if done == mask.sum():
                    break
            if time.time() > deadline:
                raise SweepTimeout(
                    f"`merge_timeout`: process {pid} of {nproc} did not finish its part of the "
                    f"sweep within {timeout:g} s ({done} of {int(mask.sum())} trajectories in "
                    f"{os.path.basename(path)}); rerun its process with --resume, then process 0 "
                    "with --resume, or raise the timeout."
                )
            time.sleep(min(1.0, max(timeout / 10, 0.01)))
        for key in results:
            results[key][mask] = other[key][mask]
        seconds = max(seconds, other_seconds)
    return results, seconds


def summarise(plan: SweepPlan, results: dict[str, np.ndarray]) -> dict[str, Any]:
    """summary.json: P(collapse) with Wilson intervals over the grid, label counts, throughput."""
    shape = plan.shape + (plan.seeds,)
    label = results["label"].reshape(shape)
    ok = label != label_index(Label.failed)
    n_ok = ok.sum(-1)
    collapsed = (ok & (label != label_index(Label.covered))).sum(-1)
    p = np.where(n_ok > 0, collapsed / np.maximum(n_ok, 1), np.nan)
    lo, hi = wilson_interval(collapsed, n_ok)
    per_label = {
        name: np.where(n_ok > 0, (label == i).sum(-1) / np.maximum(n_ok, 1), np.nan)
        for i, name in enumerate(LABELS)
        if i != label_index(Label.failed)
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


def _value_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _numeric_rows(values: tuple[Any, ...]) -> np.ndarray | None:
    """The swept values as a (n, L) float array if each is a list of L numbers, else None."""
    rows = [v for v in values if isinstance(v, list | tuple)]
    if len(rows) != len(values) or len({len(r) for r in rows}) != 1:
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for r in rows for x in r):
        return None
    return np.asarray(rows, float)


def _write_coordinate(f, name: str, dim: str, values: tuple[Any, ...]) -> list[str]:
    """The coordinate of one swept parameter; returns the names of its auxiliary coordinates.

    Numbers give a float coordinate. Other values (lists, strings, booleans) give a string
    coordinate of their TOML/JSON spellings ("[0.5, 0.5]"), which xarray decodes and shows; lists
    of L numbers also give the 2-D float coordinate `<dim>_values` over (dim, `<dim>_item`).
    """
    f.createDimension(dim, len(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        var = f.createVariable(dim, "d", (dim,))
        var[:] = np.asarray(values, float)
    else:
        labels = [_value_label(v).encode() for v in values]
        width = max(1, *(len(b) for b in labels))
        f.createDimension(f"{dim}_strlen", width)
        var = f.createVariable(dim, "c", (dim, f"{dim}_strlen"))
        var[:] = np.array([list(b.ljust(width, b"\0")) for b in labels], "u1").view("S1")
        var._Encoding = "utf-8"
    var.parameter = name
    var.values = json.dumps(list(values))
    rows = _numeric_rows(values)
    if rows is None:
        return []
    f.createDimension(f"{dim}_item", rows.shape[1])
    aux = f.createVariable(f"{dim}_values", "d", (dim, f"{dim}_item"))
    aux[:] = rows
    aux.parameter = name
    aux.long_name = f"{name} (the swept values)"
    return [f"{dim}_values"]


def write_netcdf(path: str, plan: SweepPlan, results: dict[str, np.ndarray]) -> None:
    """Write results.nc (netCDF-3 via scipy; xarray reads it): one variable per `Outcome` field.

    Each variable spans (grid parameters..., seed[, mode]). Every swept parameter is a labelled
    coordinate: numbers as floats, other values as strings such as "[0.5, 0.5]", with lists of
    numbers also as a 2-D `<name>_values` coordinate. `label` carries CF `flag_values` and
    `flag_meanings` (`LABELS`).

    **Arguments:**

    - `path`: the file to write (atomically).
    - `plan`: from `plan_sweep`.
    - `results`: from `run_sweep`.

    **Returns:** None.

    **Example:**
    ```python
    write_netcdf("out/results.nc", plan, run_sweep(plan, "out/"))
    xarray.open_dataset("out/results.nc").label
    ```
    """
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
        aux = []
        for name, dim, values in zip(plan.names, dims, plan.values):
            aux += _write_coordinate(f, name, dim, values)
        f.createDimension("seed", plan.seeds)
        f.createVariable("seed", "i", ("seed",))[:] = np.arange(plan.seeds)
        f.createDimension("mode", J)
        f.createVariable("mode", "i", ("mode",))[:] = np.arange(1, J + 1)
        per_mode = {o.name: o.per_mode for o in outcome_fields()} | {"num_steps": False}
        for field, mode in per_mode.items():
            extra = ("mode",) if mode else ()
            var = f.createVariable(field, results[field].dtype, dims + extra)
            var[:] = results[field].reshape(shape + ((J,) if extra else ()))
            if aux:
                var.coordinates = " ".join(aux)
        f.variables["label"].flag_values = np.arange(len(LABELS), dtype=np.int32)
        f.variables["label"].flag_meanings = " ".join(LABELS)
        f.variables["status"].flag_meanings = "0: solved, 1: failed (max steps or non-finite)"
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
