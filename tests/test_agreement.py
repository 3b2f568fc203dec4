"""The `exact` full d-dimensional flow against the summary-statistic ODE, whole trajectories."""

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from helpers import assert_routes_agree, rel_err

import modecollapse as mc

TIGHT = mc.SolverOptions(rtol=1e-10, atol=1e-12)


def _target(kind: str, d: int):
    U = jnp.zeros((2, d))
    if kind == "antipodal":  # singular T
        U = U.at[0, 0].set(2.5).at[1, 0].set(-2.5)
    else:  # general position, T invertible
        U = U.at[0, 0].set(2.5).at[1, 0].set(-1.0).at[1, min(1, d - 1)].set(2.0)
    return mc.GaussianMixture(U, jnp.array([0.65, 0.35]), 1.3)


def _both_routes(family, target, schedule, ts, rates, d):
    """The exact full flow and the theory from the same initial state, tight tolerances."""
    full = mc.solve_full(family, target, schedule, ts, rates=rates, options=TIGHT)
    theory = mc.solve_theory(
        mc.GramState.from_models(family, target),
        mc.TargetStatistics.from_target(target),
        schedule,
        ts,
        dim=d,
        rates=rates,
        options=TIGHT,
    )
    return full, theory


@pytest.mark.parametrize("kind", ["antipodal", "general"])
@pytest.mark.parametrize("d", [3, 50, 1000])
def test_full_flow_matches_theory(d, kind):
    target = _target(kind, d)
    key = jr.key(d)
    M = jr.normal(key, (2, d)) / jnp.sqrt(d) + jnp.zeros((2, d)).at[:, 0].set(
        jnp.array([0.3, -0.2])
    )
    family = mc.IsotropicMixture(M, jnp.array([0.1, -0.1]), jnp.log(0.9))
    schedule = mc.LinearSchedule(0.3, 8.0)
    rates = mc.LearningRates(means=1.0, weights=1.5, scale=2.0 / d)  # η_s ∝ 1/d (docs, §6)
    ts = jnp.linspace(0.0, 16.0, 33)
    full, theory = _both_routes(family, target, schedule, ts, rates, d)
    assert_routes_agree(full, theory, 1e-6)


def test_frozen_groups_stay_frozen():
    target = _target("general", 4)
    family = mc.IsotropicMixture(jnp.ones((2, 4)) * jnp.array([[0.5], [-0.3]]), jnp.zeros(2), 0.1)
    ts = jnp.linspace(0.0, 2.0, 3)
    for rates, frozen in [
        (mc.LearningRates(means=0.0, weights=1.0, scale=1.0), "R"),
        (mc.LearningRates(means=1.0, weights=0.0, scale=1.0), "weights"),
        (mc.LearningRates(means=1.0, weights=1.0, scale=0.0), "scale"),
    ]:
        rates = jax.tree.map(jnp.asarray, rates)  # traced rates: one compilation per route
        for traj in (
            mc.solve_full(family, target, mc.NoAnnealing(), ts, rates=rates),
            mc.solve_theory(
                mc.GramState.from_models(family, target),
                mc.TargetStatistics.from_target(target),
                mc.NoAnnealing(),
                ts,
                dim=4,
                rates=rates,
            ),
        ):
            values = getattr(traj, frozen)
            assert float(jnp.max(jnp.abs(values - values[0]))) < 1e-12


def test_mc_fresh_tracks_theory_with_many_particles():
    """SGD with small steps and many particles stays close to the exact flow."""
    d = 3
    target = _target("general", d)
    family = mc.IsotropicMixture(jnp.array([[0.5, 0.2, 0.0], [-0.4, 0.1, 0.3]]), jnp.zeros(2), 0.0)
    ts = jnp.linspace(0.0, 6.0, 7)
    rates = mc.LearningRates(1.0, 1.0, 0.3)
    est = mc.FreshParticles(jr.key(0), 4096, 0.005)
    sgd = mc.solve_full(family, target, mc.LinearSchedule(0.5, 3.0), ts, rates=rates, estimator=est)
    exact = mc.solve_full(family, target, mc.LinearSchedule(0.5, 3.0), ts, rates=rates)
    assert sgd.failure() is None
    assert rel_err(sgd.R, exact.R) < 0.03
    assert rel_err(sgd.scale, exact.scale) < 0.03
    again = mc.solve_full(
        family, target, mc.LinearSchedule(0.5, 3.0), ts, rates=rates, estimator=est
    )
    assert bool(jnp.all(again.R == sgd.R))  # reproducible from the key


@pytest.mark.slow  # long (~30–40 s); its siblings in this file stay in the default run
def test_mc_fixed_flow_approaches_exact_flow():
    d = 3
    target = _target("general", d)
    family = mc.IsotropicMixture(jnp.array([[0.5, 0.2, 0.0], [-0.4, 0.1, 0.3]]), jnp.zeros(2), 0.0)
    ts = jnp.linspace(0.0, 4.0, 5)
    exact = mc.solve_full(family, target, mc.NoAnnealing(), ts)
    errs = []
    for n in (256, 16384):
        est = mc.FixedParticles.draw(jr.key(1), n, 2, d)
        errs.append(
            rel_err(mc.solve_full(family, target, mc.NoAnnealing(), ts, estimator=est).R, exact.R)
        )
    assert errs[1] < errs[0] and errs[1] < 0.02, errs


@pytest.mark.slow
def test_full_flow_matches_theory_at_large_d():
    """The same agreement at d = 20000 with a singular antipodal target (run with `-m slow`)."""
    test_full_flow_matches_theory(20_000, "antipodal")


def test_adiabatic_scale_follows_the_tempered_variance():
    """`adiabatic_scale`: s(t)² = σ²/β(t) exactly, and the full flow still equals the theory."""
    d = 20
    target = _target("general", d)
    schedule = mc.GeometricSchedule(0.1, 6.0)
    log_s0 = jnp.log(target.scale) - 0.5 * jnp.log(schedule(0.0))
    M = jr.normal(jr.key(7), (2, d)) / jnp.sqrt(d)
    family = mc.IsotropicMixture(M, jnp.array([0.2, -0.2]), log_s0)
    rates = mc.LearningRates(1.0, 1.0, 5.0, adiabatic_scale=True)  # η_s is ignored
    ts = jnp.linspace(0.0, 10.0, 21)
    full, theory = _both_routes(family, target, schedule, ts, rates, d)
    expected = target.scale / jnp.sqrt(jax.vmap(schedule)(ts))
    # solver tolerance (the schedule has a kink at t = 6)
    assert rel_err(theory.scale, expected) < 1e-6 and rel_err(full.scale, expected) < 1e-6
    for name in ("R", "Q", "weights", "objective"):
        assert rel_err(getattr(full, name), getattr(theory, name)) < 1e-6, name


def test_fast_kernel_theory_tracks_the_accurate_one():
    """The fast 1-D kernel (I6) moves the theory's trajectory by its own error, not more."""
    d = 50
    target = _target("general", d)
    M = jnp.zeros((2, d)).at[0, 0].set(0.4).at[1, 1].set(-0.3)
    family = mc.IsotropicMixture(M, jnp.array([0.2, -0.2]), jnp.log(0.9))
    args = dict(dim=d, rates=mc.LearningRates(means=1.0, weights=1.0, scale=2.0 / d))
    state, stats = mc.GramState.from_models(family, target), mc.TargetStatistics.from_target(target)
    ts = jnp.linspace(0.0, 20.0, 21)
    schedule = mc.LinearSchedule(0.3, 8.0)
    accurate = mc.solve_theory(state, stats, schedule, ts, options=TIGHT, **args)
    fast_options = mc.SolverOptions(rtol=1e-10, atol=1e-12, kernel="fast")
    fast = mc.solve_theory(state, stats, schedule, ts, options=fast_options, **args)
    for name in ("R", "Q", "weights", "scale"):
        a, b = getattr(accurate, name), getattr(fast, name)
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-6 * (1.0 + float(jnp.max(jnp.abs(a))))
    assert float(jnp.max(jnp.abs(accurate.R - fast.R))) > 0.0  # a different rule
    with pytest.raises(ValueError, match="^`options.kernel` = 'fast' applies to the reverse-KL"):
        mc.solve_theory(
            state,
            stats,
            schedule,
            ts,
            options=mc.SolverOptions(kernel="fast"),
            divergence=mc.Renyi(0.5),
            **args,
        )
