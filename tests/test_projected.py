"""`mc-fresh-projected`: the n-particle gradient drawn from its exact law (eqs. (E8)–(E10)).

The independent route is the particle estimator itself (`particle_value_and_grad`, which draws
every z_ik in R^d): over many keys, both must have the same mean (the exact gradient) and the
same covariance, and SGD trajectories driven by either must have the same law.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import random_problem

import modecollapse as mc
from modecollapse._estimators._particles import particle_value_and_grad, projected_value_and_grad

DRAWS = 20_000


def _flat(out):
    value, (gm, ga, gs) = out
    return jnp.concatenate([value[:, None], gm.reshape(len(value), -1), ga, gs[:, None]], axis=1)


def _antipodal(d):
    U = jnp.zeros((2, d)).at[0, 0].set(3.0).at[1, 0].set(-3.0)
    return mc.GaussianMixture(U, jnp.array([0.6, 0.4]), 1.0)


@pytest.mark.parametrize(
    "case, d, n",
    [("general", 6, 3), ("antipodal", 5, 1), ("antipodal", 3, 4), ("general", 12, 8)],
)
def test_law_matches_the_particle_estimator(getkey, case, d, n):
    # "antipodal" has a singular target Gram (r = 3 < K + J); d = 3 leaves no complement; n = 1
    # is below K (one orthogonal vector per component).
    p, q = random_problem(getkey(), 2, 2, d)
    if case == "antipodal":
        p = _antipodal(d)
    params, beta = (q.means, q.logits, q.log_scale), 0.7
    keys = jr.split(getkey(), DRAWS)
    ref = _flat(jax.jit(jax.vmap(lambda k: particle_value_and_grad(params, p, beta, k, n)))(keys))
    law = _flat(jax.jit(jax.vmap(lambda k: projected_value_and_grad(params, p, beta, k, n)))(keys))
    value, (gm, ga, gs) = mc.ExactEstimator().value_and_grad(q, p, beta, 0.0)
    exact = jnp.concatenate([value[None], gm.ravel(), ga, gs[None]])
    # unbiased: the mean is the exact value and gradient (Bonferroni-safe |z| < 4.5)
    z_exact = (law.mean(0) - exact) / jnp.sqrt(law.var(0) / DRAWS)
    assert float(jnp.max(jnp.abs(z_exact))) < 4.5
    z_pair = (law.mean(0) - ref.mean(0)) / jnp.sqrt((law.var(0) + ref.var(0)) / DRAWS)
    assert float(jnp.max(jnp.abs(z_pair))) < 4.5
    # the same covariance: variances to 6% (their sampling error is about 1.4% each) and the
    # whole matrix to 5% of its largest entry
    ratio = law.var(0) / ref.var(0)
    assert float(jnp.max(jnp.abs(ratio - 1))) < 0.06, ratio
    cov_law, cov_ref = np.cov(np.asarray(law).T), np.cov(np.asarray(ref).T)
    assert np.max(np.abs(cov_law - cov_ref)) < 0.05 * np.max(np.abs(cov_ref))


def test_sgd_trajectories_have_the_particle_law(getkey):
    """Seed means of R, Q and the weights after 15 SGD steps agree with `mc-fresh` (z < 4.5)."""
    d, n, step, seeds = 40, 4, 0.02, 200
    p, q = random_problem(getkey(), 2, 2, d)
    ts = jnp.linspace(0.0, 0.3, 2)
    rates = mc.LearningRates(1.0, 1.0, 0.05)

    def final(est):
        traj = mc.solve_full(q, p, mc.NoAnnealing(), ts, rates=rates, estimator=est)
        return jnp.concatenate([traj.R[-1].ravel(), traj.Q[-1].ravel(), traj.weights[-1]])

    keys = jr.split(getkey(), seeds)
    fresh = jax.vmap(lambda k: final(mc.FreshParticles(k, n, step)))(keys)
    law = jax.vmap(lambda k: final(mc.ProjectedFreshParticles(k, n, step)))(keys)
    z = (law.mean(0) - fresh.mean(0)) / jnp.sqrt((law.var(0) + fresh.var(0)) / seeds)
    assert float(jnp.max(jnp.abs(z))) < 4.5, z
    # the seed-to-seed spread too (the variance ratio's sampling error is about 14% here)
    ratio = law.var(0) / fresh.var(0)
    assert float(jnp.max(jnp.abs(ratio - 1))) < 0.5, ratio


def test_a_million_dimensions_is_cheap_and_finite():
    d, n = 10**6, 4096
    p = _antipodal(d)
    q = mc.IsotropicMixture(
        jr.normal(jr.key(0), (2, d)) / jnp.sqrt(d), jnp.zeros(2), jnp.asarray(0.0)
    )
    est = mc.ProjectedFreshParticles(jr.key(1), n, 0.01)
    value, (gm, ga, gs) = jax.jit(lambda e, q: e.value_and_grad(q, p, 1.0, 0.0))(est, q)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in (value, gm, ga, gs))
    exact_value, (egm, _, _) = mc.ExactEstimator().value_and_grad(q, p, 1.0, 0.0)
    # the projections of the mean gradient on the target means are O(1) and within a few
    # standard errors of the exact ones (per-particle spread O(1), n = 4096)
    np.testing.assert_allclose(gm @ p.means.T, egm @ p.means.T, atol=0.5)
    assert abs(float(value - exact_value)) < 0.5
    # the orthogonal noise has its predicted size: |∇⊥|² ≈ d · tr(C_kᵀC_k) ~ d / n per component
    assert 0.1 * d / n < float(jnp.sum((gm - egm) ** 2)) < 10 * d / n


def test_cli_run_and_full_route_sweep(tmp_path):
    import json

    from modecollapse._cli import main
    from modecollapse._experiments._config import DEFAULT_TOML

    text = (
        DEFAULT_TOML.replace('estimator = "exact"', 'estimator = "mc-fresh-projected"')
        .replace("dim = 64", "dim = 1000")
        .replace("t_end = 40.0", "t_end = 1.0")
        .replace("save_points = 41", "save_points = 3")
    )
    config = tmp_path / "exp.toml"
    config.write_text(text)
    main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config"]["simulation"]["estimator"] == "mc-fresh-projected"
    # SGD with 1024 particles per component stays near the exact theory on the overlaps R
    assert result["max_abs_diff"]["R"] < 0.2
    sweep = text + '\n[sweep]\nparameters = { "seed" = [0] }\nseeds = 2\nchunk = 2\n'
    config.write_text(sweep.replace("dim = 1000", "dim = 20"))
    out = tmp_path / "sweep"
    main(["sweep", "--config", str(config), "--out", str(out), "--route", "full", "--no-progress"])
    assert sum(json.loads((out / "summary.json").read_text())["labels"].values()) == 2


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="`n`"):
        mc.ProjectedFreshParticles(jr.key(0), 0, 0.01)
    with pytest.raises(ValueError, match="`step`"):
        mc.ProjectedFreshParticles(jr.key(0), 16, 0.0)
