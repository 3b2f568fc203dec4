import jax.numpy as jnp
import numpy as np
import pytest

import modecollapse as mc
from modecollapse._dynamics._limit import extensive_rates, normalise, solve_limit

TIGHT = mc.SolverOptions(rtol=1e-10, atol=1e-12)


def _finite_vs_limit(d: float) -> float:
    """Max normalised gap between the finite-d theory and the d → ∞ route, informative start."""
    t = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    r0 = jnp.array([[0.3, -0.3], [-0.1, 0.1]])
    q0 = jnp.array([[0.34, 0.0], [0.0, 0.26]])
    state = mc.GramState(r0 * d, q0 * d, jnp.zeros(2), jnp.array(0.0))
    target = mc.TargetStatistics(t * d, jnp.log(jnp.array([0.6, 0.4])), jnp.array(1.0))
    schedule = mc.LinearSchedule(0.5, 5.0)
    rates = mc.LearningRates(1.0, 1.0, 1.0)
    ts = jnp.linspace(0, 10, 21)
    finite = mc.solve_theory(
        state, target, schedule, ts, dim=d, rates=extensive_rates(rates, d), options=TIGHT
    )
    s, tt = normalise(state, target, d)
    limit = solve_limit(s, tt, schedule, ts, rates=rates, options=TIGHT)
    assert finite.failure() is None and limit.failure() is None
    # the run does something: both means reach their modes, the weights move
    assert float(jnp.min(jnp.abs(limit.R[-1]))) > 0.95
    return max(
        float(jnp.max(jnp.abs(finite.R / d - limit.R))),
        float(jnp.max(jnp.abs(finite.Q / d - limit.Q))),
        float(jnp.max(jnp.abs(finite.weights - limit.weights))),
        float(jnp.max(jnp.abs(finite.scale - limit.scale))),
    )


def test_limit_matches_finite_d_theory_at_a_million():
    assert _finite_vs_limit(1e6) < 1e-3


def test_limit_gap_shrinks_like_one_over_d():
    """Same initial state: the O(1) logit terms (log ρ, log w) are the leading correction, 1/d."""
    dims = np.array([1024.0, 4096.0, 16384.0])
    gaps = np.array([_finite_vs_limit(d) for d in dims])
    slope = np.polyfit(np.log(dims), np.log(gaps), 1)[0]
    assert -1.2 < slope < -0.8, (slope, gaps)


@pytest.mark.slow  # long (~30–40 s); its siblings in this file stay in the default run
def test_agreement_routes_small():
    """The agreement benchmark's routes at d = 8: full and theory agree to solver tolerance."""
    import jax.random as jr

    from modecollapse._jobs._agreement import run_dimension

    out = run_dimension(8, 3, jnp.linspace(0.0, 10.0, 11), 8, 0.02, jr.key(0))
    assert float(np.max(out["gaps"]["full-theory"])) < 1e-6
    assert set(out["seconds"]) == {"full", "sgd", "theory", "limit", "limit0"}
    assert all(np.all(np.isfinite(g)) for g in out["gaps"].values())
