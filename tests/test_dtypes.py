"""float32 in, float32 out, also under x64 (strict promotion is on in conftest.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import modecollapse as mc
from modecollapse._dynamics._limit import extensive_rates, normalise
from modecollapse._experiments._config import load_experiment
from modecollapse._experiments._problem import build_problem
from modecollapse._flows._pushforward import mixture_tv_bound, pushforward_tv_bound
from modecollapse._numerics._dtypes import as_float

F32 = jnp.float32


def _models():
    p = mc.GaussianMixture(jnp.array([[2.0, 0.0], [-2.0, 0.0]], F32), jnp.array([0.6, 0.4], F32))
    q = mc.IsotropicMixture(jnp.array([[1.0, 0.5], [-0.5, 1.0]], F32), jnp.zeros(2, F32), 0.1)
    return q, p


def test_as_float_keeps_float32_and_promotes_ints():
    assert as_float(jnp.ones(2, F32)).dtype == F32
    assert as_float(np.ones(2, np.float32)).dtype == F32
    assert as_float(3).dtype == jnp.result_type(float)
    assert as_float(0.5, like=jnp.ones(2, F32)).dtype == F32


def test_mixtures_keep_the_dtype_of_their_means():
    q, p = _models()
    for x in (q.means, q.logits, q.log_scale, p.means, p.log_weights, p.scale):
        assert x.dtype == F32
    assert p.tempered(0.5).beta.dtype == F32
    assert q.log_prob(jnp.zeros((3, 2), F32)).dtype == F32


def test_objective_and_theory_stay_float32():
    q, p = _models()
    state = mc.GramState.from_models(q, p)
    stats = mc.TargetStatistics.from_target(p)
    assert mc.objective(q, p).dtype == F32
    assert all(x.dtype == F32 for x in state.logit_law() + stats.logit_law(state))
    ts = jnp.linspace(0.0, 1.0, 3, dtype=F32)
    traj = mc.solve_theory(state, stats, mc.NoAnnealing(), ts, dim=2)
    assert traj.R.dtype == F32 and traj.objective.dtype == F32 and traj.final.Q.dtype == F32


def test_limit_stays_float32():
    # `extensive_rates` and `solve_limit` returned float64 for float32 input before.
    q, p = _models()
    rates = extensive_rates(mc.LearningRates(jnp.array(1.0, F32), jnp.array(1.0, F32), 0.5), 64)
    assert rates.weights.dtype == F32 and rates.scale.dtype == F32
    state, target = normalise(mc.GramState.from_models(q, p), mc.TargetStatistics.from_target(p), 2)
    ts = jnp.linspace(0.0, 1.0, 3, dtype=F32)
    traj = mc.solve_limit(state, target, mc.NoAnnealing(), ts, rates=rates)
    assert traj.R.dtype == F32 and traj.scale.dtype == F32 and traj.objective.dtype == F32


def test_pushforward_bounds_stay_float32():
    _, p = _models()
    a = jnp.array([0.45], F32)
    assert pushforward_tv_bound(a, a, 4.0, 1.0).dtype == F32
    assert mixture_tv_bound(p, jnp.array([1.0, 10.0], F32)).dtype == F32


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_build_problem_builds_in_the_configured_precision(precision):
    import dataclasses

    exp = load_experiment(None)
    exp = dataclasses.replace(
        exp, simulation=dataclasses.replace(exp.simulation, precision=precision)
    )
    problem = build_problem(exp)
    dtype = jnp.dtype(precision)
    leaves = (problem.family.means, problem.family.logits, problem.target.scale, problem.ts)
    assert all(x.dtype == dtype for x in leaves)


def test_full_flow_with_particles_stays_float32():
    q, p = _models()
    ts = jnp.linspace(0.0, 0.2, 3, dtype=F32)
    est = mc.FreshParticles(jr.key(0), 4, 0.1)
    traj = mc.solve_full(q, p, mc.NoAnnealing(), ts, estimator=est)
    assert traj.final.means.dtype == F32 and traj.objective.dtype == F32


def test_flow_lipschitz_bounds_stay_float32():
    from modecollapse._flows._pushforward import lipschitz_lower, lipschitz_upper
    from modecollapse._flows._realnvp import RealNVP

    _, p = _models()
    flow = RealNVP(jr.key(0), dim=2, layers=2, width=8)
    flow = jax.tree.map(lambda x: x.astype(F32) if eqx.is_inexact_array(x) else x, flow)
    assert lipschitz_upper(flow, 3.0).dtype == F32
    z = jr.normal(jr.key(1), (8, 2), F32)
    assert lipschitz_lower(flow, z, p, segment_points=4).dtype == F32
