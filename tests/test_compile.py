"""No retracing: a second solve with new values of the same shapes compiles nothing."""

import contextlib

import jax
import jax.monitoring
import jax.numpy as jnp
import jax.random as jr
from helpers import random_problem

import modecollapse as mc

_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def _count_compiles():
    """Counts jaxpr traces and backend compilations (jax.monitoring duration events)."""
    counts = dict.fromkeys(_EVENTS, 0)

    def listener(event, duration, **kwargs):
        if event in counts:
            counts[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _solves(key, estimator):
    p, q = random_problem(key, 2, 2, 5)
    ts = jnp.linspace(0.0, 0.5, 3)
    rates = mc.LearningRates(1.0, 1.0, 0.1)
    schedule = mc.LinearSchedule(0.5, 1.0)
    full = mc.solve_full(q, p, schedule, ts, rates=rates, estimator=estimator)
    state = mc.GramState.from_models(q, p)
    stats = mc.TargetStatistics.from_target(p)
    theory = mc.solve_theory(state, stats, schedule, ts, dim=5, rates=rates)
    return jax.block_until_ready((full, theory))


def test_second_solve_with_new_values_does_not_recompile():
    # The particle route (FreshParticles: a new key is a new value, not a new trace) and the theory.
    make = lambda k: mc.FreshParticles(k, 8, 0.25, chunk=4)  # noqa: E731
    with _count_compiles() as first:
        _solves(jr.key(0), make(jr.key(1)))  # first call: traces and compiles
    assert all(v > 0 for v in first.values()), first  # the listener sees compilations
    with _count_compiles() as counts:
        _solves(jr.key(2), make(jr.key(3)))  # new target, family and particle key
    assert all(v == 0 for v in counts.values()), counts
