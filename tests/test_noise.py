"""The SGD-noise correction (docs/theory.md, §12, eqs. (N1)–(N5)) against brute force."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import modecollapse as mc
from modecollapse._dynamics._noise import (
    gradient_noise_trace,
    sgd_noise_correction,
    solve_theory_sgd,
)


def _fixed_state(d: int):
    """K = J = 2 in general position, overlaps O(1) at every d, s ≠ σ and unequal weights."""
    k1, k2 = jr.split(jr.key(1))
    U = 1.2 * jr.normal(k1, (2, d)) / jnp.sqrt(d) * jnp.array([[1.5], [1.0]])
    M = jr.normal(k2, (2, d)) / jnp.sqrt(d)
    p = mc.GaussianMixture(U, jnp.array([0.35, 0.65]), 1.1)
    q = mc.IsotropicMixture(M, jnp.array([0.3, -0.2]), jnp.log(0.8))
    return q, p


@eqx.filter_jit
def _brute_force_trace(q, p, beta, n, draws, key):
    """tr Cov(∇_{m_k} F̂, ∇_{m_l} F̂) from independent draws of jax.grad of `mc_objective`."""

    def grad_means(k):
        z = jr.normal(k, (q.n_components, n, q.dim))
        f = lambda M: mc.mc_objective(mc.IsotropicMixture(M, q.logits, q.log_scale), p, beta, z)  # noqa: E731
        return jax.grad(f)(q.means)

    keys = jr.split(key, draws).reshape(50, draws // 50)
    G = jax.lax.map(jax.vmap(grad_means), keys).reshape(draws, q.n_components, q.dim)
    G = G - G.mean(0)
    X = jnp.einsum("nkd,nld->nkl", G, G)
    return X.mean(0) * draws / (draws - 1), X.std(0) / jnp.sqrt(draws)


@pytest.mark.parametrize("d", [20, 200])
def test_trace_matches_brute_force(d):
    q, p = _fixed_state(d)
    state, stats = mc.GramState.from_models(q, p), mc.TargetStatistics.from_target(p)
    beta, n = 0.7, 4
    exact = gradient_noise_trace(state, stats, beta, d, n)
    leading = gradient_noise_trace(state, stats, beta, d, n, exact=False)
    brute, se = _brute_force_trace(q, p, beta, n, 20_000, jr.key(7))
    # MC error only: measured |z| ≤ 2.7 over 3 × 10⁵ draws (docs/theory.md, §12).
    assert jnp.all(jnp.abs(exact - brute) <= 4 * se), (exact, brute, se)
    # The O(d/n) part alone (N4) misses by O(1/n), visible at d = 20 on the off-diagonal.
    if d == 20:
        assert jnp.abs(leading - brute)[0, 1] > 5 * se[0, 1]
    # Exposed as a Q-correction: η η_m² C on Q, nothing elsewhere.
    corr = sgd_noise_correction(state, stats, beta, mc.LearningRates(2.0), d, n, 0.01)
    assert jnp.allclose(corr.Q, 0.01 * 4.0 * exact)
    assert not jnp.any(corr.R) and not jnp.any(corr.logits) and corr.log_scale == 0


def _perp(Q, R, T):
    """|m_⊥|²-type overlaps: Q − R T⁺ Rᵀ, the part of Q orthogonal to span{μ_j}."""
    return Q - R @ jnp.linalg.pinv(T) @ jnp.swapaxes(R, -1, -2)


@pytest.mark.slow  # long (~30–40 s); its siblings in this file stay in the default run
def test_seed_average_tracks_corrected_theory():
    d, seeds, t_end = 100, 32, 2.0
    e = jnp.eye(d)
    p = mc.GaussianMixture(jnp.stack([2 * e[0], -2 * e[0]]), jnp.array([0.6, 0.4]), 1.0)
    M = jnp.stack([0.5 * e[0], -0.5 * e[0]]) + 0.3 * jr.normal(jr.key(0), (2, d)) / jnp.sqrt(d)
    q = mc.IsotropicMixture(M, jnp.zeros(2), 0.0)
    rates, schedule = mc.LearningRates(1.0, 0.0, 0.0), mc.NoAnnealing()
    ts = jnp.linspace(0.0, t_end, 5)
    state, stats = mc.GramState.from_models(q, p), mc.TargetStatistics.from_target(p)
    plain = mc.solve_theory(state, stats, schedule, ts, dim=d, rates=rates)
    plain_perp = _perp(plain.Q[-1], plain.R[-1], stats.T)

    gaps = []
    for step, n in [(0.01, 16), (0.005, 64)]:
        theory = solve_theory_sgd(
            state,
            stats,
            schedule,
            ts,
            dim=d,
            rates=rates,
            particles=jnp.asarray(n),
            step=jnp.asarray(step),
        )
        assert theory.failure() is None

        @eqx.filter_vmap
        def run(key):
            est = mc.FreshParticles(key, n, step)
            traj = mc.solve_full(q, p, schedule, ts, rates=rates, estimator=est)
            return traj.Q[-1], traj.R[-1]

        Q, R = run(jr.split(jr.key(1), seeds))
        se = Q.std(0) / jnp.sqrt(seeds)
        # Q itself: within 4 standard errors of the seed mean, plus 2e-3 for the O(η) Euler and
        # O(η/n) terms the correction leaves out (measured ≤ 1e-3).
        assert jnp.all(jnp.abs(Q.mean(0) - theory.Q[-1]) <= 4 * se + 2e-3), (Q.mean(0), se)
        # The orthogonal part isolates the noise: its seed spread is small, so the test is sharp.
        perp = _perp(Q, R, stats.T)
        perp_se = perp.std(0) / jnp.sqrt(seeds)
        predicted = _perp(theory.Q[-1], theory.R[-1], stats.T)
        assert jnp.all(jnp.abs(perp.mean(0) - predicted) <= 4 * perp_se + 5e-4)
        gap = jnp.trace(perp.mean(0) - plain_perp)
        gap_se = jnp.sqrt(jnp.sum(jnp.diag(perp_se) ** 2))
        assert gap > 4 * gap_se, (gap, gap_se)  # the uncorrected theory misses
        gaps.append(gap)
    # The miss scales like η d / n: predicted ratio (0.01/16) / (0.005/64) = 8.
    assert 8 / 1.4 < gaps[0] / gaps[1] < 8 * 1.4, gaps


def test_correction_tracks_sgd_in_extensive_scaling():
    # Extensive scaling (§11): |μ_j|² = d t_j with t = 1, statistics normalised by d. The noise
    # term of (N1) is then η C / d = η b / n + O(1/d): O(1) in d (b = diag(w²) = I/4 here, β = 1,
    # s = σ, hard assignments). Only the means learn, so (L1) leaves the rates at (1, 0, 0).
    d, seeds, t_end, step, n = 256, 32, 1.5, 0.02, 1
    mu = jnp.sqrt(d) * jnp.eye(d)[0]
    p = mc.GaussianMixture(jnp.stack([mu, -mu]), jnp.array([0.5, 0.5]), 1.0)
    # Informative start m_k = ξ_k μ_1 + c g_k, the same vectors for every seed.
    xi, c = jnp.array([0.4, -0.3]), 0.5
    q = mc.IsotropicMixture(xi[:, None] * mu + c * jr.normal(jr.key(0), (2, d)), jnp.zeros(2), 0.0)
    rates, schedule = mc.LearningRates(1.0, 0.0, 0.0), mc.NoAnnealing()
    ts = jnp.linspace(0.0, t_end, 4)
    state, stats = mc.GramState.from_models(q, p), mc.TargetStatistics.from_target(p)
    plain = mc.solve_theory(state, stats, schedule, ts, dim=d, rates=rates)
    theory = solve_theory_sgd(
        state, stats, schedule, ts, dim=d, rates=rates, particles=jnp.asarray(n), step=step
    )
    assert theory.failure() is None and plain.failure() is None

    @eqx.filter_vmap
    def run(key):
        traj = mc.solve_full(
            q, p, schedule, ts, rates=rates, estimator=mc.FreshParticles(key, n, step)
        )
        return traj.Q[-1], traj.R[-1]

    Q, R = run(jr.split(jr.key(1), seeds))
    perp = _perp(Q, R, stats.T) / d
    Q = Q / d
    corrected = (theory.Q[-1] / d, _perp(theory.Q[-1], theory.R[-1], stats.T) / d)
    uncorrected = (plain.Q[-1] / d, _perp(plain.Q[-1], plain.R[-1], stats.T) / d)
    mean, se = Q.mean(0), Q.std(0, ddof=1) / jnp.sqrt(seeds)
    perp_mean, perp_se = perp.mean(0), perp.std(0, ddof=1) / jnp.sqrt(seeds)

    # Q/d: within 4 se plus 2e-3 for the O(η) Euler bias of the mean-field drift, which (N1)
    # leaves out (estimated ±(1-2)e-3 per entry at η = 0.02, t = 1.5; measured |z| ≤ 4.2 without
    # it). The uncorrected theory is 5-6 se off on the diagonal here, but that margin is not
    # robust across particle keys (2.6-6.2 se), so it is only reported in docs/theory.md §12.
    assert jnp.all(jnp.abs(mean - corrected[0]) <= 4 * se + 2e-3), (mean, se, corrected[0])
    # Q_⊥/d isolates the noise (+η b/n (1 − e^{-t}) = 3.9e-3 on the diagonal): within 4 se plus
    # 5e-4 for the Euler bias −ηt/4·Q_⊥/d ≈ −4.5e-4. Measured z: −1.3, −1.1, −0.1.
    assert jnp.all(jnp.abs(perp_mean - corrected[1]) <= 4 * perp_se + 5e-4), (perp_mean, perp_se)
    # The uncorrected theory misses Q_⊥/d on the diagonal by ≥ 7 se (measured 8.7, 11.7; 7.2-10.6
    # over three particle keys), far more than the corrected one.
    z_corr = jnp.diag(perp_mean - corrected[1]) / jnp.diag(perp_se)
    z_plain = jnp.diag(perp_mean - uncorrected[1]) / jnp.diag(perp_se)
    assert jnp.all(z_plain > 4) and jnp.all(z_plain > jnp.abs(z_corr) + 3), (z_plain, z_corr)
    # The trace of the gap against the predicted η tr(b) / n (1 − e^{-t}) (measured 0.0072 ± 0.0005
    # against 0.0078).
    gap = jnp.trace(perp_mean - uncorrected[1])
    gap_se = jnp.sqrt(jnp.sum(jnp.diag(perp_se) ** 2))
    predicted = jnp.trace(corrected[1] - uncorrected[1])
    assert gap > 4 * gap_se and jnp.abs(gap - predicted) <= 4 * gap_se + 1e-3, (gap, gap_se)
