import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import modecollapse as mc
from modecollapse import metrics
from modecollapse.metrics import collapse_crossing


def _target(rho=(0.5, 0.5), d=4):
    U = jnp.zeros((2, d)).at[0, 0].set(5.0).at[1, 0].set(-5.0)
    return mc.GaussianMixture(U, jnp.array(rho), 1.0)


def _trajectory(Ms, ws, p, s=1.0):
    """A hand-made trajectory through the given means (T, K, d) and weights (T, K)."""
    Ms, ws = jnp.asarray(Ms), jnp.asarray(ws)
    T = Ms.shape[0]
    return mc.Trajectory(
        ts=jnp.arange(T, dtype=float),
        R=Ms @ p.means.T,
        Q=jnp.einsum("tkd,tld->tkl", Ms, Ms),
        weights=ws,
        scale=jnp.full(T, s),
        objective=jnp.zeros(T),
        result=dfx.RESULTS.successful,
        num_steps=jnp.array(T),
        final=mc.GramState(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros(1), jnp.zeros(())),
    )


def _outcome(traj, p, key):
    return metrics.trajectory_outcome(traj, mc.TargetStatistics.from_target(p), p.dim, key)


def test_q_equal_p_is_covered(getkey):
    p = _target((0.7, 0.3))
    traj = _trajectory(jnp.stack([p.means] * 2), [[0.7, 0.3]] * 2, p)
    out = _outcome(traj, p, getkey())
    np.testing.assert_allclose(out.masses, [0.7, 0.3], atol=1e-6)
    assert metrics.LABELS[int(out.label)] == "covered" and bool(out.covered)
    assert int(out.n_covered) == 2 and abs(float(out.kl)) < 1e-8
    h = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
    np.testing.assert_allclose(out.emc, h / np.log(2), atol=0.02)  # ±5σ of 2 × 4096 samples
    np.testing.assert_allclose(out.mode_score, np.exp(h), atol=0.02)


def test_mean_alignment(getkey):
    p = _target()
    both_on_mode_1 = jnp.stack([p.means[0], p.means[0]])  # singular Q
    traj = _trajectory(jnp.stack([both_on_mode_1] * 3), [[0.5, 0.5]] * 3, p)
    out = _outcome(traj, p, getkey())
    assert metrics.LABELS[int(out.label)] == "mean_alignment"
    np.testing.assert_allclose(out.masses, [1.0, 0.0], atol=1e-6)
    assert int(out.n_covered) == 1 and not bool(out.covered)
    # exact (C8): a sample lands on mode 2 with probability Φ(−|μ|) = Φ(−5) here
    p2 = scipy.stats.norm.cdf(-5.0)
    emc = -(p2 * np.log(p2) + (1 - p2) * np.log1p(-p2)) / np.log(2)
    np.testing.assert_allclose(out.emc, emc, rtol=1e-6)
    assert abs(float(out.mode_score) - 1.0) < 1e-5
    np.testing.assert_allclose(out.kl, np.log(2), atol=1e-6)  # KL(δ-mode ‖ ½,½) = log 2


def test_vanishing_weight(getkey):
    p = _target()
    # component 2 stays midway (never reaches a mode) while its weight decays to 1e-4
    M = jnp.stack([p.means[0], jnp.zeros(4)])
    ws = [[0.5, 0.5], [0.9, 0.1], [0.999, 0.001], [0.9999, 0.0001]]
    out = _outcome(_trajectory(jnp.stack([M] * 4), ws, p), p, getkey())
    assert metrics.LABELS[int(out.label)] == "vanishing_weight"
    # the same weights, but the component reached mode 2 first: then not a vanishing weight
    M2 = jnp.stack([p.means[0], p.means[1]])
    out2 = _outcome(_trajectory(jnp.stack([M2] * 4), ws, p), p, getkey())
    assert metrics.LABELS[int(out2.label)] != "vanishing_weight"


def test_other_and_failed(getkey):
    p = _target()
    one = _trajectory(jnp.stack([p.means[:1]] * 2), [[1.0]] * 2, p)
    assert metrics.LABELS[int(_outcome(one, p, getkey()).label)] == "other"
    bad = _trajectory(jnp.stack([p.means] * 2), [[0.5, 0.5]] * 2, p)
    bad = mc.Trajectory(**{**bad.__dict__, "R": bad.R.at[-1, 0, 0].set(jnp.nan)})
    out = _outcome(bad, p, getkey())
    assert metrics.LABELS[int(out.label)] == "failed" and int(out.status) == 1


def test_sample_estimators_agree_with_exact(getkey):
    p = _target((0.6, 0.4), d=3)
    q = mc.IsotropicMixture(
        jnp.array([[1.0, 0.5, 0.0], [-2.0, 0.0, 1.0]]), jnp.array([0.3, 0.0]), jnp.log(1.5)
    )
    stats = mc.TargetStatistics.from_target(p)
    state = mc.GramState.from_models(q, p)
    x = q.sample(getkey(), (400_000,))
    exact = metrics.mode_masses(state, stats)
    np.testing.assert_allclose(metrics.sample_mode_masses(x, p), exact, atol=4 * 0.5 / 632)
    np.testing.assert_allclose(
        metrics.sample_entropic_mode_coverage(x, p),
        metrics.entropic_mode_coverage(state, stats, getkey(), 100_000),
        atol=0.01,
    )
    np.testing.assert_allclose(
        metrics.sample_mode_score(x, p),
        metrics.mode_score(state, stats, getkey(), 100_000),
        atol=0.01,
    )


def test_metrics_vmap_over_trajectories(getkey):
    p = _target()
    stats = mc.TargetStatistics.from_target(p)
    trajs = [
        _trajectory(jnp.stack([p.means] * 2), [[0.5, 0.5]] * 2, p),
        _trajectory(jnp.stack([jnp.stack([p.means[0]] * 2)] * 2), [[0.5, 0.5]] * 2, p),
    ]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *trajs)
    labels = jax.vmap(lambda t: metrics.classify(t, stats))(batch)
    assert [metrics.LABELS[int(i)] for i in labels] == ["covered", "mean_alignment"]


def test_run_flow_ends_covered_with_default_experiment():
    """The default experiment (annealed, trainable scale) at d = 64 ends covered (theory route)."""
    exp = mc.load_experiment(None).with_dim(64)
    problem = mc.build_problem(exp)
    traj = mc.solve_theory(
        mc.GramState.from_models(problem.family, problem.target),
        mc.TargetStatistics.from_target(problem.target),
        problem.schedule,
        problem.ts,
        dim=64,
        rates=problem.rates,
    )
    out = metrics.trajectory_outcome(
        traj, mc.TargetStatistics.from_target(problem.target), 64, jr.key(0)
    )
    assert metrics.LABELS[int(out.label)] == "covered"


def test_labels_come_from_one_enumeration():
    """`LABELS` is derived from `Label`: each name's index is the label its item stores."""
    assert len(metrics.LABELS) == len(metrics.Label) and "failed" in metrics.LABELS
    for i, name in enumerate(metrics.LABELS):
        item = getattr(metrics.Label, name)
        assert int(metrics.label_index(item)) == i
        assert metrics.Label[item]  # every label has a description
    # traced: Label.where picks the item, label_index gives its stored integer
    pick = jax.jit(
        lambda c: metrics.label_index(
            metrics.Label.where(c, metrics.Label.covered, metrics.Label.failed)
        )
    )
    assert [metrics.LABELS[int(pick(c))] for c in (True, False)] == ["covered", "failed"]


def test_outcome_fields_match_a_computed_outcome(getkey):
    """The sweep's storage layout (`outcome_fields`) is the `Outcome` computed, field by field."""
    p = _target((0.7, 0.3))
    out = _outcome(_trajectory(jnp.stack([p.means] * 2), [[0.7, 0.3]] * 2, p), p, getkey())
    fields = metrics.outcome_fields()
    assert [f.name for f in fields] == list(vars(out))
    for f in fields:
        value = np.asarray(getattr(out, f.name))
        assert value.shape == ((2,) if f.per_mode else ()), f.name
        assert np.can_cast(value.dtype, f.dtype, "same_kind"), (f.name, value.dtype, f.dtype)
    missing = {f.name: f.missing for f in fields}
    assert missing["label"] == metrics.LABELS.index("failed") and missing["status"] == 1
    assert set(out.to_dict()) == {f.name for f in fields if f.json}


def test_failure_test_is_one_for_every_saved_field(getkey):
    """`Trajectory.solved`, `Trajectory.failure` and the `failed` label agree on every saved field
    (before, a non-finite saved objective was failed for `failure` but labelled by the metrics)."""
    p = _target()
    good = _trajectory(jnp.stack([p.means] * 2), [[0.5, 0.5]] * 2, p)
    assert bool(good.solved()) and good.failure() is None
    assert metrics.LABELS[int(_outcome(good, p, getkey()).label)] == "covered"
    for name in ("R", "Q", "weights", "scale", "objective"):
        value = getattr(good, name)
        bad = mc.Trajectory(**{**good.__dict__, name: value.at[(-1,) * value.ndim].set(jnp.inf)})
        out = _outcome(bad, p, getkey())
        assert not bool(bad.solved()) and f"`{name}`" in bad.failure(), name
        assert metrics.LABELS[int(out.label)] == "failed" and int(out.status) == 1, name
    stopped = mc.Trajectory(**{**good.__dict__, "result": dfx.RESULTS.max_steps_reached})
    assert not bool(stopped.solved()) and stopped.failure() is not None
    assert int(_outcome(stopped, p, getkey()).status) == 1


def test_wilson_interval_known_values():
    lo, hi = metrics.wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(lo, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(hi, [0.2775, 0.7634, 1.0], atol=1e-4)


def test_wilson_interval_solves_the_score_equation_on_both_array_kinds():
    """Each end p solves (k/n − p)² = z² p(1 − p)/n (the Wilson score equation, eq. (C7)) unless
    clipped; NumPy and JAX inputs (also traced) give the same interval; n = 0 gives NaN."""
    k, n, z = np.array([1, 3, 7, 20, 0]), np.array([4, 10, 50, 20, 0]), 1.96
    lo, hi = metrics.wilson_interval(k, n, z)
    assert isinstance(lo, np.ndarray) and lo.dtype == np.float64
    p_hat = k[:4] / n[:4]
    for end in (lo[:4], hi[:4]):
        interior = (end > 0) & (end < 1)
        lhs = (p_hat - end) ** 2
        rhs = z**2 * end * (1 - end) / n[:4]
        np.testing.assert_allclose(lhs[interior], rhs[interior], rtol=1e-10)
    assert lo[0] < p_hat[0] < hi[0] and np.isnan(lo[4]) and np.isnan(hi[4])
    jlo, jhi = jax.jit(metrics.wilson_interval)(jnp.asarray(k), jnp.asarray(n))
    np.testing.assert_allclose(jlo, lo, rtol=1e-12)
    np.testing.assert_allclose(jhi, hi, rtol=1e-12)


def test_two_mode_emc_and_mode_score_are_exact(getkey):
    """Eq. (C8) against the sample estimates of (C3), (C4) with 2·10⁵ samples per component."""
    from modecollapse._metrics import _emc, _exact_two_mode_metrics, _flat_samples, _mode_score

    for _ in range(3):
        U = 2.0 * jr.normal(getkey(), (2, 5))
        p = mc.GaussianMixture(U, jnp.array([0.7, 0.3]), 1.0)
        stats = mc.TargetStatistics.from_target(p)
        scale = jnp.exp(0.5 * jr.normal(getkey(), ()))
        q = mc.IsotropicMixture(2.0 * jr.normal(getkey(), (2, 5)), jnp.array([0.4, 0.6]), scale)
        state = mc.GramState.from_models(q, p)
        emc, score = _exact_two_mode_metrics(state, stats)
        logits, w = _flat_samples(state, stats, getkey(), 200_000)
        assert abs(float(emc) - float(_emc(logits, w, stats.log_weights))) < 4e-3
        assert abs(float(score) - float(_mode_score(logits, w))) < 4e-3


def test_collapse_crossing_recovers_a_log_linear_law():
    # P(τ) = a − b log τ exactly: the crossing of any level between grid values is exact (NF9)
    taus = np.array([2.0, 8.0, 32.0, 128.0])
    p = 0.9 - 0.15 * np.log(taus)
    for level in (0.7, 0.4, 0.25):
        tau, censored = collapse_crossing(taus, p, level)
        assert censored is None
        assert tau == pytest.approx(np.exp((0.9 - level) / 0.15), rel=1e-12)
    assert collapse_crossing(taus, p, 0.95) == (2.0, "at_or_below")
    assert collapse_crossing(taus, p, 0.01) == (128.0, "above")
    # a missing estimate is skipped: the crossing uses the neighbours that exist
    tau, _ = collapse_crossing(taus, [p[0], None, p[2], p[3]], 0.4)
    f = (p[0] - 0.4) / (p[0] - p[2])
    assert tau == pytest.approx(np.exp(np.log(2.0) + f * np.log(16.0)), rel=1e-12)
    with pytest.raises(ValueError, match="`taus`"):
        collapse_crossing([4.0, 2.0], [0.5, 0.1], 0.2)
