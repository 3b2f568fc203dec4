"""From a validated `Experiment` to models, solves and the result record."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._annealing._schedules import AbstractSchedule, schedule_from_kind, schedule_parameters
from .._dynamics._full import solve_full
from .._dynamics._rates import LearningRates
from .._dynamics._solve import SolverOptions
from .._dynamics._theory import solve_theory
from .._estimators._estimators import ESTIMATORS, AbstractEstimator
from .._mixtures import GaussianMixture, IsotropicMixture
from .._numerics._linalg import nonzero_eigenvalues, rank_rtol
from .._objective import DIVERGENCES, AbstractDivergence, ReverseKL
from .._summary import GramState, TargetStatistics, Trajectory
from ._config import ConfigError, Experiment, SimulationConfig
from ._io import timed


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything both routes need, built from an experiment at its `dim`."""

    experiment: Experiment
    target: GaussianMixture
    family: IsotropicMixture
    schedule: AbstractSchedule
    rates: LearningRates
    estimator: AbstractEstimator
    ts: jax.Array
    divergence: AbstractDivergence = ReverseKL()


def _psd_factor(G: np.ndarray, key: str, scale: float = 0.0) -> np.ndarray:
    """X with X Xᵀ = G and as many columns as rank(G); ConfigError if G is not PSD.

    Symmetry, PSD-ness and rank use the package's one rank rule (`_numerics._linalg`): entries
    and eigenvalues within RANK_RTOL · n · eps · max(|G|, `scale`) of zero count as zero; `scale`
    is the magnitude G was computed from (for Q − α αᵀ, that of Q).
    """
    G = np.asarray(G, dtype=np.float64)
    top = max(float(np.abs(G).max(initial=0.0)), scale)
    tol = rank_rtol(G.shape[0], G.dtype) * top
    if not np.allclose(G, G.T, rtol=0, atol=tol):
        raise ConfigError(
            f"`{key}`: the Gram matrix must be symmetric; make it equal its transpose."
        )
    lam, V = np.linalg.eigh(0.5 * (G + G.T))
    keep = nonzero_eigenvalues(lam, top)
    if lam.min(initial=0.0) < -rank_rtol(lam.shape[0], lam.dtype) * top:
        raise ConfigError(
            f"`{key}`: the Gram matrix is not positive semi-definite "
            f"(smallest eigenvalue {lam.min():.3g})."
        )
    return V[:, keep] * np.sqrt(lam[keep])


def _orthonormal_complement(P: np.ndarray, count: int, dim: int) -> np.ndarray:
    """`count` orthonormal vectors of R^dim orthogonal to the rows of P (orthonormal)."""
    basis = [row for row in P]
    out = []
    i = 0
    while len(out) < count:
        e = np.zeros(dim)
        e[i] = 1.0
        for b in basis:
            e -= (b @ e) * b
        norm = np.linalg.norm(e)
        # e_i is kept when its residual is not numerically zero (the one rank rule, on |e|² ≤ 1)
        if norm**2 > rank_rtol(dim, e.dtype):
            e /= norm
            basis.append(e)
            out.append(e)
        i += 1
    return np.array(out).reshape(count, dim)


def _target_means(exp: Experiment, key: jax.Array) -> np.ndarray:
    d, spec = exp.dim, exp.target.means
    J = len(exp.target.weights)
    if spec["kind"] == "antipodal":
        U = np.zeros((2, d))
        U[0, 0], U[1, 0] = spec["norm"], -spec["norm"]
        return U
    if spec["kind"] == "orthogonal":
        if d < J:
            raise ConfigError(f"`dim`: orthogonal target means need dim >= {J}, got {d}.")
        U = np.zeros((J, d))
        U[np.arange(J), np.arange(J)] = spec["norms"]
        return U
    if spec["kind"] == "gram":
        X = _psd_factor(np.array(spec["T"]), "target.means.T")
        r = X.shape[1]
        if d < r:
            raise ConfigError(f"`dim`: the target Gram matrix has rank {r}, more than dim = {d}.")
        # Rotate the factor to lower-triangular form: μ_1 ∝ e_1, μ_2 in span(e_1, e_2), ...
        U = np.zeros((J, d))
        if r:
            _, upper = np.linalg.qr(X.T)
            U[:, :r] = upper.T
        return U
    g = np.asarray(jr.normal(key, (J, d)))
    return spec["norm"] * g / np.linalg.norm(g, axis=1, keepdims=True)


def _initial_means(exp: Experiment, U: np.ndarray, key: jax.Array) -> np.ndarray:
    d, init = exp.dim, exp.variational.init
    K = exp.variational.components
    if init["kind"] == "random":
        return init["norm"] * np.asarray(jr.normal(key, (K, d))) / np.sqrt(d)
    R, Q = np.array(init["R"], dtype=float), np.array(init["Q"], dtype=float)
    T = U @ U.T
    _psd_factor(np.block([[T, R.T], [R, Q]]), "variational.init")
    # m_k = α_k P + β_k E: P spans the target means, E is orthogonal to them (docs, §5).
    # The rank of U is the rank of T = U Uᵀ under the one rank rule (S² are T's eigenvalues).
    _, S, Vt = np.linalg.svd(U, full_matrices=False)
    P = Vt[nonzero_eigenvalues(S**2)]
    C = U @ P.T
    # C has full column rank by construction; the pseudo-inverse cuts at the same relative rule.
    rcond = rank_rtol(max(P.shape[0], 1), C.dtype)
    alpha = R @ C @ np.linalg.pinv(C.T @ C, rcond) if P.shape[0] else np.zeros((K, 0))
    beta = _psd_factor(Q - alpha @ alpha.T, "variational.init.Q", float(np.abs(Q).max(initial=0.0)))
    need = P.shape[0] + beta.shape[1]
    if d < need:
        raise ConfigError(f"`dim`: the initial overlaps need dim >= {need}, got {d}.")
    E = _orthonormal_complement(P, beta.shape[1], d)
    return alpha @ P + beta @ E


def build_schedule(exp: Experiment) -> AbstractSchedule:
    """The schedule of `[annealing]`, through the one constructor `schedule_from_kind`."""
    a = exp.annealing
    params = {n: float(getattr(a, n)) for n in schedule_parameters(a.kind)}
    return schedule_from_kind(a.kind, params)


def build_divergence(exp: Experiment) -> AbstractDivergence:
    """The objective of `[objective]` (docs/theory.md, §16), from the one registry.

    α is stored as an array, so that sweeps over `objective.alpha` batch it.

    **Example:** `build_divergence(load_experiment(None))  # ReverseKL()`
    """
    o = exp.objective
    if o.kind == "renyi":
        alpha = jnp.asarray(o.alpha, dtype=jnp.result_type(float))
        return DIVERGENCES["renyi"](alpha, o.quadrature)
    return DIVERGENCES[o.kind]()


def make_estimator(
    sim: SimulationConfig, key: jax.Array, divergence: AbstractDivergence = ReverseKL()
) -> AbstractEstimator:
    """The estimator that `[simulation] estimator` names, its particles drawn from `key`.

    **Arguments:**

    - `sim`: the `[simulation]` table (estimator, particles, step, chunk, quadrature nodes).
    - `key`: the particle key (unused by `exact`).
    - `divergence`: the objective it estimates (default reverse KL).

    **Returns:** an `AbstractEstimator` for `solve_full`.

    **Example:**
    ```python
    est = make_estimator(load_experiment(None).simulation, jr.key(0))  # ExactEstimator()
    ```
    """
    # the one registry (`_estimators.ESTIMATORS`)
    return ESTIMATORS[sim.estimator](key, sim, divergence)


def build_problem(exp: Experiment) -> Problem:
    """Build the target, the initial family, the schedule and the estimator of an experiment.

    Raises `ConfigError` for what only shows once the vectors are built (a non-PSD Gram, a
    dimension below the rank the initial state needs).

    **Arguments:**

    - `exp`: a validated experiment.

    **Returns:** a `Problem`.

    **Example:**
    ```python
    problem = build_problem(load_experiment(None))
    problem.family.means.shape  # (2, 64)
    ```
    """
    k_target, k_init, k_particles = jr.split(jr.key(exp.seed), 3)
    U = _target_means(exp, k_target)
    M = _initial_means(exp, U, k_init)
    sim = exp.simulation
    # `[simulation] precision`: float32 computes in float32 even under x64; the constructors keep
    # the dtype of the means (`as_float`), so the models are built in it directly.
    dtype = jnp.float32 if sim.precision == "float32" else jnp.result_type(float)
    target = GaussianMixture(
        jnp.asarray(U, dtype), np.asarray(exp.target.weights), exp.target.scale
    )
    v = exp.variational
    schedule = build_schedule(exp)
    adiabatic = exp.annealing.scale == "adiabatic"
    # adiabatic coupling starts on the tempered variance s(0)² = σ²/β(0) (eq. (S5))
    log_s0 = (
        np.log(exp.target.scale) - 0.5 * float(jnp.log(schedule(0.0)))
        if adiabatic
        else np.log(v.scale)
    )
    family = IsotropicMixture(jnp.asarray(M, dtype), np.log(np.asarray(v.weights)), log_s0)
    divergence = build_divergence(exp)
    estimator = make_estimator(sim, k_particles, divergence)
    rates = LearningRates(**v.learning_rates, adiabatic_scale=adiabatic)
    ts = jnp.linspace(0.0, exp.t_end, exp.save_points).astype(dtype)  # as before: rounded once
    return Problem(exp, target, family, schedule, rates, estimator, ts, divergence)


def solver_options(exp: Experiment, progress: bool = False) -> SolverOptions:
    s = exp.simulation
    return SolverOptions(
        s.solver, s.rtol, s.atol, s.max_steps, progress, s.quadrature_nodes, kernel=s.kernel
    )


class NumericalFailure(RuntimeError):
    """A solve failed (max steps, NaN); the message is one line and names the route."""


def _checked(traj: Trajectory, route: str, exp: Experiment) -> Trajectory:
    failure = traj.failure()
    if failure is not None:
        raise NumericalFailure(f"the {route} solve failed at dim = {exp.dim}: {failure}")
    return traj


def run_theory(problem: Problem, progress: bool = False) -> tuple[Trajectory, dict[str, float]]:
    """Solve the theory ODE (eqs. (T1)–(T5)) of a built problem.

    **Arguments:**

    - `problem`: from `build_problem`.
    - `progress`: a diffrax progress bar.

    **Returns:** `(trajectory, {"compile": s, "solve": s})`; raises `NumericalFailure` if the
    solve failed.

    **Example:**
    ```python
    traj, seconds = run_theory(build_problem(load_experiment(None)))
    ```
    """
    exp = problem.experiment
    traj, seconds = timed(
        solve_theory,
        GramState.from_models(problem.family, problem.target),
        TargetStatistics.from_target(problem.target),
        problem.schedule,
        problem.ts,
        dim=exp.dim,
        rates=problem.rates,
        options=solver_options(exp, progress),
        divergence=problem.divergence,
    )
    return _checked(traj, "theory", exp), seconds


def run_full(problem: Problem, progress: bool = False) -> tuple[Trajectory, dict[str, float]]:
    """Solve the full d-dimensional flow (eq. (D1)) of a built problem, with its estimator.

    **Arguments:**

    - `problem`: from `build_problem`.
    - `progress`: a diffrax progress bar.

    **Returns:** `(trajectory, {"compile": s, "solve": s})`; raises `NumericalFailure` if the
    solve failed.

    **Example:**
    ```python
    traj, seconds = run_full(build_problem(load_experiment(None)))
    ```
    """
    exp = problem.experiment
    traj, seconds = timed(
        solve_full,
        problem.family,
        problem.target,
        problem.schedule,
        problem.ts,
        rates=problem.rates,
        estimator=problem.estimator,
        options=solver_options(exp, progress),
    )
    return _checked(traj, "full-flow", exp), seconds


# The trajectory statistics that records and comparisons report, in order.
STATISTICS = ("R", "Q", "weights", "scale", "objective")


def max_abs_diff(a: Trajectory, b: Trajectory) -> dict[str, float]:
    """Sup over time and entries of |a − b| for each saved statistic."""
    return {k: float(jnp.max(jnp.abs(getattr(a, k) - getattr(b, k)))) for k in STATISTICS}


def trajectory_record(traj: Trajectory | None) -> dict[str, Any] | None:
    """The JSON form of a trajectory (raw dot products, not normalised)."""
    if traj is None:
        return None
    return {k: np.asarray(getattr(traj, k)).tolist() for k in STATISTICS}
