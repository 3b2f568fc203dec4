"""Mode-collapse metrics and the outcome classifier (docs/theory.md, §9, eqs. (C1)–(C6)).

Every metric of a mixture q is computed from the summary statistics alone: the target logits of a
sample x ~ N(m_k, s² I) are Gaussian with a law fixed by (R, Q, log s) (eq. (G1)), so samples are
drawn directly in the J-dimensional logit space, with no d-dimensional work. Sample-based versions
(`sample_*`) take points x from any q (e.g. a normalizing flow).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ._mixtures import GaussianMixture
from ._numerics._expectations import expected_softmax_stats
from ._numerics._linalg import sqrt_psd
from ._objective import gram_objective
from ._summary import GramState, TargetStatistics, Trajectory


class Label(eqx.Enumeration):
    """The outcome labels of a run (eq. (C6) for mixtures, (NF7) for flows): the one source.

    `Outcome.label`, `FlowRun.label` and the `label` variable of results.nc store the integer
    `label_index(item)`; `LABELS` lists the names in that order.

    **Example:**
    ```python
    LABELS[int(out.label)], out.label == label_index(Label.failed)
    ```
    """

    covered = "every mode has mass above coverage·ρ_j at the final time"
    mean_alignment = "a mode is uncovered and two live components sit on one mode"
    vanishing_weight = "a mode is uncovered and a component vanished before reaching a mode"
    other = "a mode is uncovered for another reason"
    failed = "the solve failed (max steps) or a saved number is non-finite"


def label_index(item: Label) -> Int[Array | np.ndarray, ""]:
    """The integer stored for a label (an index into `LABELS`); traceable.

    **Arguments:**

    - `item`: a `Label` item, e.g. `Label.failed` or the result of `Label.where`.

    **Returns:** an int32 scalar (a NumPy scalar array for a fixed item, traced under `jit`).

    **Example:**
    ```python
    LABELS[int(label_index(Label.other))]  # "other"
    ```
    """
    return item._value  # equinox keeps the index here (as diffrax's RESULTS)


LABELS: tuple[str, ...] = tuple(Label._name_to_item)
"""The label names in index order (derived from `Label`); `Outcome.label` indexes it."""


def wilson_interval(
    successes: ArrayLike, trials: ArrayLike, z: float = 1.96
) -> tuple[Float[Array | np.ndarray, "..."], Float[Array | np.ndarray, "..."]]:
    """Wilson score interval of a binomial proportion, k successes in n trials (eq. (C7)).

    NaN where n = 0. NumPy inputs give NumPy float64 results; JAX inputs give JAX arrays (and can
    be traced), in their own precision.

    **Arguments:**

    - `successes`: k, any shape.
    - `trials`: n, broadcastable against k.
    - `z`: the normal quantile (1.96: a 95% interval).

    **Returns:** `(lower, upper)`, each clipped to [0, 1].

    **Example:**
    ```python
    lo, hi = wilson_interval(np.array([0, 5]), np.array([10, 10]))
    ```
    """
    xp: Any
    k: Any
    n: Any
    if isinstance(successes, jax.Array) or isinstance(trials, jax.Array):
        xp, k, n = jnp, successes, trials
    else:
        xp, k, n = np, np.asarray(successes, float), np.asarray(trials, float)
    p = k / xp.maximum(n, 1)
    safe = xp.asarray(xp.maximum(n, 1)).astype(p.dtype)  # n in p's precision (strict promotion)
    denom = 1 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * xp.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo, hi = xp.clip(centre - half, 0, 1), xp.clip(centre + half, 0, 1)
    return xp.where(n > 0, lo, xp.nan), xp.where(n > 0, hi, xp.nan)


def collapse_crossing(
    taus: Sequence[float] | np.ndarray,
    p_collapse: Sequence[float | None] | np.ndarray,
    level: float,
) -> tuple[float, str | None]:
    """Eq. (NF9): the smallest annealing time τ at which P(collapse) has fallen to `level`.

    Between grid points P is taken linear in log τ. The answer is censored when the level is
    already met at the first τ, or never met.

    **Arguments:**

    - `taus`: increasing annealing times τ > 0.
    - `p_collapse`: P(collapse) at each τ (NaN or None: no estimate, skipped).
    - `level`: the level, e.g. 0.1 (τ₁₀), or half the unannealed P (τ½).

    **Returns:** `(tau, censored)`: censored is None (interpolated), "at_or_below" (τ is the first
    grid point; the true crossing is there or earlier) or "above" (not reached; τ is the last).

    **Example:**
    ```python
    collapse_crossing([4, 16, 64], [0.6, 0.3, 0.05], 0.1)  # (≈ 48.5, None)
    ```
    """
    t = np.asarray(taus, float)
    p = np.array([np.nan if v is None else v for v in list(p_collapse)], float)
    if t.ndim != 1 or t.shape != p.shape or not np.all(t > 0) or np.any(np.diff(t) <= 0):
        raise ValueError(
            "`taus` must be increasing positive times with one `p_collapse` value each, got "
            f"{t.tolist()} and {p.tolist()}."
        )
    prev = None
    for i in range(len(t)):
        if np.isnan(p[i]):
            continue
        if p[i] <= level:
            if prev is None:
                return float(t[i]), "at_or_below"
            f = (p[prev] - level) / (p[prev] - p[i])
            return float(np.exp(np.log(t[prev]) + f * (np.log(t[i]) - np.log(t[prev])))), None
        prev = i
    return float(t[-1]), "above"


class Thresholds(eqx.Module):
    """The documented thresholds of the classifier (eq. (C6)).

    **Arguments:**

    - `coverage`: a mode j is covered if its mass exceeds `coverage`·ρ_j (default 0.1).
    - `weight`: a component is negligible (vanished) if its weight is below this (default 0.01).
    - `reach`: a component has reached mode j once |m_k − μ_j| ≤ `reach`·σ (default 1).

    **Example:**
    ```python
    th = Thresholds(coverage=0.2)
    ```
    """

    coverage: float = 0.1
    weight: float = 0.01
    reach: float = 1.0


def component_mode_masses(
    state: GramState, target: TargetStatistics, nodes: int | None = None
) -> Float[Array, "k j"]:
    """E_k[π_j]: the target responsibility of mode j averaged over component k (eq. (C1)).

    **Arguments:**

    - `state`: summary statistics of q.
    - `target`: the target's statistics.

    **Returns:** a (K, J) array whose rows sum to 1.

    **Example:**
    ```python
    e = component_mode_masses(GramState.from_models(q, p), TargetStatistics.from_target(p))
    ```
    """
    mean_p, cov_p = target.logit_law(state)  # eq. (G1)
    return jax.vmap(lambda m: expected_softmax_stats(m, cov_p, nodes)[1])(mean_p)


def mode_masses(
    state: GramState, target: TargetStatistics, nodes: int | None = None
) -> Float[Array, " j"]:
    """Mass of q captured by each target mode, mass_j = Σ_k w_k E_k[π_j], exact (eq. (C1)).

    **Arguments:**

    - `state`: summary statistics of q.
    - `target`: the target's statistics.

    **Returns:** a (J,) array summing to 1.

    **Example:**
    ```python
    mode_masses(GramState.from_models(q, p), TargetStatistics.from_target(p))  # ≈ ρ if covered
    ```
    """
    return jax.nn.softmax(state.logits) @ component_mode_masses(state, target, nodes)


def _logit_samples(state: GramState, target: TargetStatistics, key: PRNGKeyArray, n: int):
    """Target logits of n reparameterised samples per component: (K, n, J), eq. (G1)."""
    mean_p, cov_p = target.logit_law(state)  # eq. (G1)
    L = sqrt_psd(cov_p)
    z = jr.normal(key, mean_p.shape[:1] + (n, mean_p.shape[1]), dtype=mean_p.dtype)
    return mean_p[:, None, :] + z @ L.T


def _emc(logits, weights, log_rho):
    """Eq. (C3) from target logits (N, J) of samples with probability weights (N,)."""
    J = logits.shape[-1]
    assign = jax.nn.one_hot(jnp.argmax(logits - log_rho, axis=-1), J, dtype=logits.dtype)
    p = weights @ assign
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return ent / jnp.log(J) if J > 1 else jnp.ones_like(ent)


def _mode_score(logits, weights):
    """Eq. (C4): exp(E_x KL(p(y|x) ‖ p(y))) with p(y|x) the target responsibilities."""
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    marginal = weights @ jnp.exp(log_pi)
    kl = jnp.sum(jnp.exp(log_pi) * (log_pi - jnp.log(marginal)), axis=-1)
    return jnp.exp(weights @ kl)


def _exact_two_mode_metrics(final: GramState, target: TargetStatistics):
    """EMC (C3) and the mode score (C4) of a mixture q on a J = 2 target, exactly (eq. (C8)).

    Under q_k the logit difference δ = ℓ_1 − ℓ_0 is N(m_k, v) (eq. (G1)). The assignment of (C3)
    is mode 1 iff δ > log ρ_1 − log ρ_0, with probability Φ((m_k − log ρ_1 + log ρ_0)/√v). The
    entropy of π(δ) = (σ(−δ), σ(δ)) is softplus(δ) − δ σ(δ), and by Stein's lemma
    E[δ σ(δ)] = m E[σ(δ)] + v E[σ'(δ)], so every term is a 1-D kernel value (I6).
    """
    mean_p, cov_p = target.logit_law(final)  # eq. (G1)
    w = jax.nn.softmax(final.logits)
    lse, resp, outer = jax.vmap(expected_softmax_stats, (0, None))(mean_p, cov_p)
    m = mean_p[:, 1] - mean_p[:, 0]
    v = jnp.maximum(cov_p[0, 0] + cov_p[1, 1] - 2.0 * cov_p[0, 1], 0.0)
    # (C3): P_k(assigned to mode 1), a step at v = 0
    shift = m - (target.log_weights[1] - target.log_weights[0])
    sd = jnp.sqrt(jnp.where(v > 0, v, 1.0))
    to_one = jnp.where(v > 0, jax.scipy.special.ndtr(shift / sd), (shift > 0).astype(m.dtype))
    p1 = jnp.dot(w, to_one)
    p = jnp.stack([1.0 - p1, p1])
    emc = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)) / jnp.log(2.0)
    # (C4): E_x KL(π(x) ‖ π̄) = −E_x H(π(x)) − Σ_j π̄_j log π̄_j, with π̄ the mode masses (C1)
    entropy = (lse - mean_p[:, 0]) - m * resp[:, 1] - v * outer[:, 0, 1]
    bar = w @ resp
    cross = jnp.sum(jnp.where(bar > 0, bar * jnp.log(jnp.where(bar > 0, bar, 1.0)), 0.0))
    return emc, jnp.exp(-jnp.dot(w, entropy) - cross)


def _flat_samples(state, target, key, n):
    logits = _logit_samples(state, target, key, n)
    K = logits.shape[0]
    w = jnp.repeat(jax.nn.softmax(state.logits) / n, n)
    return logits.reshape(K * n, -1), w


def entropic_mode_coverage(
    state: GramState, target: TargetStatistics, key: PRNGKeyArray, n: int = 4096
) -> Float[Array, ""]:
    """Entropic mode coverage: samples assigned to argmax_j log N(x; μ_j, σ² I) (eq. (C3)).

    −Σ_j p_j log p_j / log J, with p_j the fraction assigned to mode j: 1 when q spreads its mass
    evenly over the modes, 0 when it sits on one.

    **Arguments:**

    - `state`, `target`: as in `mode_masses`.
    - `key`: PRNG key of the samples.
    - `n`: samples per component (stratified over components, weighted by w_k).

    **Returns:** a scalar in [0, 1].

    **Example:**
    ```python
    entropic_mode_coverage(state, target, jr.key(0))
    ```
    """
    logits, w = _flat_samples(state, target, key, n)
    return _emc(logits, w, target.log_weights)


def mode_score(
    state: GramState, target: TargetStatistics, key: PRNGKeyArray, n: int = 4096
) -> Float[Array, ""]:
    """Cluster-based mode score exp(E_x KL(p(y|x) ‖ p(y))), in [1, J] (eq. (C4)).

    **Arguments:**

    - `state`, `target`: as in `mode_masses`.
    - `key`: PRNG key of the samples.
    - `n`: samples per component.

    **Returns:** a scalar in [1, J]; exp(H(ρ)) for q = p with well-separated modes, 1 when q sits
    on one mode.

    **Example:**
    ```python
    mode_score(state, target, jr.key(0))
    ```
    """
    logits, w = _flat_samples(state, target, key, n)
    return _mode_score(logits, w)


def _sample_logits(x: Float[Array, "n d"], target: GaussianMixture):
    return jax.vmap(target.component_logits_single)(x)


def sample_mode_masses(x: Float[Array, "n d"], target: GaussianMixture) -> Float[Array, " j"]:
    """Sample estimate of mass_j = E_q[π_j(x)] for samples x of any q (eq. (C2)).

    **Arguments:**

    - `x`: samples from q, shape (n, d).
    - `target`: the target p.

    **Returns:** a (J,) array summing to 1.

    **Example:**
    ```python
    sample_mode_masses(flow_samples, p)
    ```
    """
    return jnp.mean(jax.nn.softmax(_sample_logits(x, target), axis=-1), axis=0)


def sample_entropic_mode_coverage(x: Float[Array, "n d"], target: GaussianMixture):
    """Eq. (C3) from samples x of any q, shape (n, d); a scalar in [0, 1]."""
    n = x.shape[0]
    return _emc(_sample_logits(x, target), jnp.full(n, 1.0 / n, x.dtype), target.log_weights)


def sample_mode_score(x: Float[Array, "n d"], target: GaussianMixture):
    """Eq. (C4) from samples x of any q, shape (n, d); a scalar in [1, J]."""
    n = x.shape[0]
    return _mode_score(_sample_logits(x, target), jnp.full(n, 1.0 / n, x.dtype))


class Outcome(eqx.Module):
    """The metrics of one trajectory at its final time, and its label (eqs. (C1)–(C6)).

    `label` is `label_index` of a `Label` (an index into `LABELS`); `status` is 0 for a
    successful solve, 1 for a failed one (then `label` is `failed`).

    The fields are the one list of metrics: sweeps store, checkpoint and write to results.nc
    exactly these (see `outcome_fields`). Adding a metric is one field here plus its line in
    `trajectory_outcome`.
    """

    masses: Float[Array, " j"]
    n_covered: Int[Array, ""]
    covered: Bool[Array, ""]
    emc: Float[Array, ""]
    mode_score: Float[Array, ""]
    kl: Float[Array, ""]
    label: Int[Array, ""] = eqx.field(metadata=dict(missing=int(label_index(Label.failed))))
    status: Int[Array, ""] = eqx.field(metadata=dict(missing=1, json=False))

    def to_dict(self) -> dict:
        """JSON form (unbatched outcomes only); `label` by name, `status` left out."""
        out: dict[str, Any] = {}
        for f in outcome_fields():
            value = np.asarray(getattr(self, f.name))
            if f.name == "label":
                out[f.name] = LABELS[int(value)]
            elif f.json:
                out[f.name] = bool(value) if value.dtype == bool else value.tolist()
        return out


class OutcomeField(NamedTuple):
    """How a sweep stores one `Outcome` field (derived from its annotation and metadata).

    - `name`: the field name.
    - `dtype`: the storage dtype: float64, int32, or int8 for booleans (netCDF-3 has no bool).
    - `per_mode`: whether the field has a trailing mode axis (length J).
    - `missing`: its value for a trajectory not (yet) run: NaN, 0, or the field's `missing`.
    - `json`: whether `Outcome.to_dict` includes it.
    """

    name: str
    dtype: np.dtype
    per_mode: bool
    missing: Any
    json: bool


def outcome_fields() -> tuple[OutcomeField, ...]:
    """The storage layout of every `Outcome` field, in field order: the one field list.

    **Returns:** a tuple of `OutcomeField`.

    **Example:**
    ```python
    [f.name for f in outcome_fields()]  # ["masses", "n_covered", ..., "status"]
    ```
    """
    out = []
    for f in dataclasses.fields(Outcome):
        annotation: Any = f.type  # a jaxtyping annotation: Float[Array, ...] and so on
        dtypes = annotation.dtypes
        if "float64" in dtypes:
            dtype, missing = np.dtype(np.float64), np.nan
        elif "bool" in dtypes:
            dtype, missing = np.dtype(np.int8), 0
        elif "int32" in dtypes:
            dtype, missing = np.dtype(np.int32), 0
        else:  # pragma: no cover - a new field needs a Float, Int or Bool annotation
            raise TypeError(f"`Outcome.{f.name}`: annotate it as Float, Int or Bool.")
        if annotation.dim_str not in ("", "j"):  # pragma: no cover
            raise TypeError(f"`Outcome.{f.name}`: shape must be scalar or (j,) modes.")
        out.append(
            OutcomeField(
                f.name,
                dtype,
                annotation.dim_str == "j",
                f.metadata.get("missing", missing),
                f.metadata.get("json", True),
            )
        )
    return tuple(out)


def _final_state(traj: Trajectory) -> GramState:
    w = jnp.clip(traj.weights[-1], jnp.finfo(traj.weights.dtype).tiny, None)
    return GramState(traj.R[-1], traj.Q[-1], jnp.log(w), jnp.log(traj.scale[-1]))


def classify(
    traj: Trajectory,
    target: TargetStatistics,
    thresholds: Thresholds = Thresholds(),
    nodes: int | None = None,
    component_masses: Float[Array, "k j"] | None = None,
) -> Int[Array, ""]:
    """Label a trajectory: covered, mean alignment, vanishing weight or other (eq. (C6)).

    - `covered`: every mode has mass > coverage·ρ_j at the final time.
    - `mean_alignment`: a mode is uncovered, and two or more non-negligible components
      (weight ≥ `weight`) sit on the same mode (their largest E_k[π_j]).
    - `vanishing_weight`: a mode is uncovered, and a component that ends negligible fell below
      `weight` before (or without) its mean reaching a mode (|m_k − μ_j| ≤ reach·σ).
    - `other`: a mode is uncovered for another reason. `mean_alignment` takes precedence.

    **Arguments:**

    - `traj`: an unbatched trajectory (vmap for batches).
    - `target`: the target's statistics.
    - `thresholds`: see `Thresholds`.
    - `nodes`: quadrature nodes for J ≥ 3 (see `gaussian_expectation`).
    - `component_masses`: E_k[π_j] at the final state (eq. (C1)), if already computed.

    **Returns:** `label_index` of a `Label` (an index into `LABELS`).

    **Example:**
    ```python
    LABELS[int(classify(traj, TargetStatistics.from_target(p)))]
    ```
    """
    if component_masses is None:
        component_masses = component_mode_masses(_final_state(traj), target, nodes)
    e = component_masses
    w = traj.weights[-1]
    rho = jnp.exp(target.log_weights)
    all_covered = jnp.all(w @ e > thresholds.coverage * rho)
    J = e.shape[1]
    alive = w >= thresholds.weight
    on_mode = jax.nn.one_hot(jnp.argmax(e, axis=1), J, dtype=w.dtype) * alive[:, None].astype(
        w.dtype
    )
    aligned = jnp.any(jnp.sum(on_mode, axis=0) >= 2)
    # first save index at which each component is negligible / has reached a mode
    dist2 = (
        jnp.diagonal(traj.Q, axis1=1, axis2=2)[:, :, None]
        - 2 * traj.R
        + jnp.diag(target.T)[None, None, :]
    )
    reached = jnp.min(dist2, axis=2) <= (thresholds.reach * target.scale) ** 2
    n_t = traj.weights.shape[0]
    first = lambda flags: jnp.where(jnp.any(flags, 0), jnp.argmax(flags, 0), n_t)  # noqa: E731
    t_vanish = first(traj.weights < thresholds.weight)
    t_reach = first(reached)
    vanished = (w < thresholds.weight) & (t_vanish <= t_reach)
    uncovered = Label.where(
        aligned,
        Label.mean_alignment,
        Label.where(jnp.any(vanished), Label.vanishing_weight, Label.other),
    )
    return jnp.asarray(label_index(Label.where(all_covered, Label.covered, uncovered)))


def trajectory_outcome(
    traj: Trajectory,
    target: TargetStatistics,
    dim,
    key: PRNGKeyArray,
    thresholds: Thresholds = Thresholds(),
    n_samples: int = 4096,
    nodes: int | None = None,
) -> Outcome:
    """All metrics of a trajectory at its final time (vmap-able; failures labelled `failed`).

    **Arguments:**

    - `traj`: a trajectory of either route.
    - `target`: the target's statistics.
    - `dim`: d (for the final KL, eq. (F3) at β = 1).
    - `key`: PRNG key of the sample-based metrics (EMC and mode score for J ≥ 3; for J = 2 they
      are exact, eq. (C8), and the key is unused).
    - `thresholds`, `n_samples`: see `Thresholds`; samples per component (J ≥ 3).
    - `nodes`: quadrature nodes for J ≥ 3 (see `gaussian_expectation`).

    **Returns:** an `Outcome`.

    **Example:**
    ```python
    out = trajectory_outcome(traj, TargetStatistics.from_target(p), p.dim, jr.key(0))
    out.to_dict()
    ```
    """
    final = _final_state(traj)
    e = component_mode_masses(final, target, nodes)  # once, for the masses and the classifier
    masses = jax.nn.softmax(final.logits) @ e
    if target.log_weights.shape[0] == 2:  # exact (eq. (C8)); the key is not used
        emc, score = _exact_two_mode_metrics(final, target)
    else:  # one draw of logit samples serves both sample-based metrics (eqs. (C3), (C4))
        logits, sample_weights = _flat_samples(final, target, key, n_samples)
        emc = _emc(logits, sample_weights, target.log_weights)
        score = _mode_score(logits, sample_weights)
    rho = jnp.exp(target.log_weights)
    covered_modes = masses > thresholds.coverage * rho
    ok = traj.solved()
    label = jnp.where(ok, classify(traj, target, thresholds, nodes, e), label_index(Label.failed))
    return Outcome(
        masses=masses,
        n_covered=jnp.sum(covered_modes).astype(jnp.int32),
        covered=jnp.all(covered_modes),
        emc=emc,
        mode_score=score,
        kl=gram_objective(final, target, 1.0, dim, nodes),
        label=label.astype(jnp.int32),
        status=jnp.where(ok, 0, 1).astype(jnp.int32),
    )
