"""Estimators: abstract-or-final, and SGD steps keyed by an integer counter (issue 11, fault 7)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from helpers import random_problem, rel_err

import modecollapse as mc
from modecollapse._estimators._estimators import (
    AbstractEstimator,
    AbstractParticleEstimator,
    AbstractSGDEstimator,
)
from modecollapse._estimators._particles import particle_value_and_grad


class _KeyProbe(AbstractSGDEstimator):
    """Drives the mean to u_n = uniform(step key of step n): after step n, m ≈ u_n."""

    key: jax.Array
    n: int = eqx.field(static=True)
    step: float = eqx.field(static=True)

    def objective(self, family, target, beta, t, step_index=None):
        return jnp.zeros((), family.means.dtype)

    def value_and_grad(self, family, target, beta, t, step_index=None):
        u = jr.uniform(self.step_key(t, step_index), (), family.means.dtype)
        # dm/dt = −g = (u − m)/η, so one Euler step of size η lands on u.
        g = (family.means - u) / jnp.asarray(self.step, family.means.dtype)
        zeros = jnp.zeros_like
        return jnp.zeros((), g.dtype), (g, zeros(family.logits), zeros(family.log_scale))


def test_estimators_are_abstract_or_final():
    for abstract in (AbstractEstimator, AbstractParticleEstimator, AbstractSGDEstimator):
        with pytest.raises(TypeError):
            abstract()
    for name in ("objective", "value_and_grad"):
        assert getattr(AbstractEstimator, name).__isabstractmethod__
    assert issubclass(mc.FreshParticles, AbstractSGDEstimator)
    assert issubclass(mc.ProjectedFreshParticles, AbstractSGDEstimator)
    assert issubclass(mc.FixedParticles, AbstractParticleEstimator)


def test_sgd_steps_never_share_a_key_in_a_long_float32_run():
    # 10⁵ Euler steps in float32, the span not a multiple of the step: diffrax's times drift off
    # the grid n·η, so round(t/η) repeats an index; the integer step counter never does.
    step, steps = 0.01, 100_000
    t_end = (steps - 0.99) * step
    p = mc.GaussianMixture(jnp.zeros((1, 1), jnp.float32), jnp.ones(1, jnp.float32))
    q = mc.IsotropicMixture(jnp.zeros((1, 1), jnp.float32), jnp.zeros(1), 0.0)
    key = jr.key(3)
    probe = _KeyProbe(key, 1, step)
    ts = jnp.linspace(0.0, t_end, 11, dtype=jnp.float32)
    options = mc.SolverOptions(max_steps=steps + 10)
    traj = mc.solve_full(q, p, mc.NoAnnealing(), ts, estimator=probe, options=options)
    assert traj.failure() is None and int(traj.num_steps) == steps
    assert traj.final.means.dtype == jnp.float32
    # Independent route: the last step is step n = steps − 1, keyed fold_in(key, n); every
    # repeated (or skipped) index before it would shift it.
    expected = jr.uniform(jr.fold_in(key, steps - 1), (), jnp.float32)
    # (one step lands on u up to the step's relative shortfall 1 − Δt/η ≤ 1/10⁴ and rounding)
    other = jr.uniform(jr.fold_in(key, steps - 2), (), jnp.float32)
    assert abs(float(expected - other)) > 0.05  # the check below tells the two indices apart
    assert abs(float(traj.final.means[0, 0] - expected)) < 2e-3
    # Before the fix the drift made one index repeat, so the last step was keyed by n − 1.


def test_mc_fresh_steps_are_the_particles_of_fold_in_key_n(getkey):
    # Independent route: explicit Euler by hand with `particle_value_and_grad` on fold_in(key, n).
    p, q = random_problem(getkey(), 2, 2, 3)
    key = getkey()
    est = mc.FreshParticles(key, 8, 0.1, chunk=3)
    ts = jnp.array([0.0, 0.3])
    traj = mc.solve_full(q, p, mc.NoAnnealing(), ts, estimator=est)
    params = (q.means, q.logits, q.log_scale)
    for n in range(3):
        _, grads = particle_value_and_grad(params, p, 1.0, jr.fold_in(key, n), 8, 3)
        params = tuple(x - 0.1 * g for x, g in zip(params, grads[:2])) + (params[2],)
    assert rel_err(traj.final.means, params[0]) < 1e-10
    assert rel_err(traj.final.logits, params[1]) < 1e-10
    again = mc.solve_full(q, p, mc.NoAnnealing(), ts, estimator=est)
    assert bool(jnp.all(again.final.means == traj.final.means))  # bit-reproducible from its key
