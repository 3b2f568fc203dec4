import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import ndtr, ndtri

from modecollapse._flows._pushforward import (
    halfspace_masses,
    lipschitz_lower,
    lipschitz_upper,
    mixture_tv_bound,
    pushforward_tv_bound,
    required_lipschitz,
    tv_estimate,
    tv_threshold,
)
from modecollapse._flows._realnvp import RealNVP
from modecollapse._mixtures import GaussianMixture


def test_corner_formula_matches_brute_force():
    # (PF2): min over the feasible set {Φ⁻¹α + Φ⁻¹β ≤ −r} of the partition TV, on a fine grid
    alpha = jnp.linspace(0.0, 1.0, 1001)[:, None]
    beta = jnp.linspace(0.0, 1.0, 1001)[None, :]
    for a, b, r in [(0.45, 0.45, 1.0), (0.6, 0.3, 2.5), (0.2, 0.7, 0.3), (0.5, 0.5, 0.01)]:
        feasible = ndtri(alpha) + ndtri(beta) <= -r
        tv = 0.5 * (jnp.abs(alpha - a) + jnp.abs(beta - b) + jnp.abs(alpha + beta - a - b))
        brute = float(jnp.min(jnp.where(feasible, tv, jnp.inf)))
        assert abs(float(pushforward_tv_bound(a, b, r, 1.0)) - brute) < 3e-3, (a, b, r)


def test_bound_limits_and_monotonicity():
    L = jnp.logspace(-2, 4, 200)
    b = pushforward_tv_bound(0.4, 0.35, 3.0, L)
    assert jnp.all(jnp.diff(b) <= 1e-12)
    assert abs(float(b[0]) - 0.35) < 1e-6  # L → 0: min(a, b)
    assert float(b[-1]) == 0.0  # L → ∞: nothing forced
    # base mass outside the Lipschitz region weakens the bound
    assert float(pushforward_tv_bound(0.4, 0.35, 3.0, 1.0, outside=0.05)) < float(b[66])


def _tv_1d(g, dg, p: GaussianMixture, L: float) -> float:
    """TV(g#N(0,1), p) for an increasing 1-D map g, by quadrature on a fine grid."""
    z = jnp.linspace(-12.0, 12.0, 100_001)
    x = g(z, L)
    q_on_x = jnp.exp(-0.5 * z**2) / jnp.sqrt(2 * jnp.pi) / dg(z, L)
    xs = jnp.linspace(-15.0, 15.0, 60_001)
    q = jnp.interp(xs, x, q_on_x, left=0.0, right=0.0)
    pd = jnp.exp(p.log_prob(xs[:, None]))
    return float(0.5 * jnp.sum(jnp.abs(q - pd)) * (xs[1] - xs[0]))


def test_bound_holds_for_lipschitz_maps():
    # g(z) = z + c·tanh(k z): Lipschitz constant 1 + c·k, pushes N(0,1) towards two modes
    p = GaussianMixture(jnp.array([[3.0], [-3.0]]), jnp.array([0.5, 0.5]))
    g = lambda z, k: z + 2.5 * jnp.tanh(k * z)  # noqa: E731
    dg = lambda z, k: 1 + 2.5 * k / jnp.cosh(k * z) ** 2  # noqa: E731
    nontrivial = 0
    for k in [0.05, 0.3, 1.0, 3.0, 10.0]:
        L = 1 + 2.5 * k
        tv = _tv_1d(g, dg, p, k)
        bound = float(mixture_tv_bound(p, L))
        assert tv >= bound - 1e-4, (k, tv, bound)
        nontrivial += bound > 0.05
    assert nontrivial >= 2


def test_halfspace_masses_match_samples(getkey):
    p = GaussianMixture(jnp.array([[2.0, 1.0, 0.0], [-1.0, -2.0, 0.5]]), jnp.array([0.7, 0.3]))
    x = p.sample(getkey(), (100_000,))
    mid = 0.5 * (p.means[0] + p.means[1])
    e = (p.means[0] - p.means[1]) / jnp.linalg.norm(p.means[0] - p.means[1])
    u = (x - mid) @ e
    for delta in [0.5, 2.0, 5.0]:
        a, b = halfspace_masses(p, delta)
        assert abs(float(a) - float(jnp.mean(u >= delta / 2))) < 6e-3
        assert abs(float(b) - float(jnp.mean(u <= -delta / 2))) < 6e-3


def test_threshold_inverts_the_bound():
    p = GaussianMixture(jnp.array([[3.0, 0.0], [-3.0, 0.0]]), jnp.array([0.6, 0.4]))
    L1, L2 = tv_threshold(p, 0.1), tv_threshold(p, 0.02)
    assert 1 < L1 < L2
    assert abs(float(mixture_tv_bound(p, L1)) - 0.1) < 1e-4
    assert float(mixture_tv_bound(p, 0.99 * L1)) > 0.1


def test_lipschitz_estimates_bracket_finite_differences(getkey):
    flow = RealNVP(getkey(), 3, layers=4, width=8, init_scale=0.5)
    p = GaussianMixture(jnp.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]]), jnp.array([0.5, 0.5]))
    R = 4.0
    z1 = jr.normal(getkey(), (4000, 3))
    z2 = z1 + 0.05 * jr.normal(getkey(), (4000, 3))
    inside = (jnp.linalg.norm(z1, axis=1) < R) & (jnp.linalg.norm(z2, axis=1) < R)
    g = eqx.filter_jit(flow.transform)
    ratios = jnp.linalg.norm(g(z1) - g(z2), axis=1) / jnp.linalg.norm(z1 - z2, axis=1)
    fd = float(jnp.max(jnp.where(inside, ratios, 0.0)))
    lo = float(eqx.filter_jit(lipschitz_lower)(flow, z1[:64], p))
    hi = float(eqx.filter_jit(lipschitz_upper)(flow, R))
    assert lo <= hi
    assert fd <= hi
    assert lo >= 0.9 * fd  # the Jacobian max over few points nearly reaches the sampled slope
    # a chord |g(z) − g(z')|/|z − z'| is always a lower bound of the global constant
    assert lo >= 1.0 - 1e-9 or fd < 1.0


def test_tv_estimate_and_required_lipschitz(getkey):
    # q = N(0, I) (identity flow), p a 2-D mixture: TV on a grid against the sample estimate
    p = GaussianMixture(jnp.array([[2.0, 0.0], [-2.0, 0.0]]), jnp.array([0.5, 0.5]))
    g = jnp.linspace(-10, 10, 801)
    h = float(g[1] - g[0])
    pts = jnp.stack(jnp.meshgrid(g, g), -1)
    log_q = -0.5 * jnp.sum(pts**2, -1) - jnp.log(2 * jnp.pi)
    exact = 0.5 * float(jnp.sum(jnp.abs(jnp.exp(log_q) - jnp.exp(p.log_prob(pts))))) * h * h
    z = jr.normal(getkey(), (40_000, 2))
    est = float(tv_estimate(-0.5 * jnp.sum(z**2, -1) - jnp.log(2 * jnp.pi), p.log_prob(z)))
    assert abs(est - exact) < 0.01
    # the identity is 1-Lipschitz, so the masses of its samples cannot require much more than 1
    assert float(required_lipschitz(z, p)) <= 1.05
    # and the bound at L = 1 is below the exact TV of this 1-Lipschitz push-forward
    assert float(mixture_tv_bound(p, 1.0)) <= exact + 1e-6
    # while samples of p itself (two separated clusters) need a steeper map
    assert float(required_lipschitz(p.sample(getkey(), (40_000,)), p)) > 1.5


def test_gaussian_isoperimetry_identity():
    # (PF1) is tight for half-spaces under the identity map: Φ⁻¹(a) + Φ⁻¹(b) + δ = 0
    for delta in [0.5, 1.0, 3.0]:
        a = ndtr(jnp.asarray(0.3))
        b = ndtr(-0.3 - delta)
        np.testing.assert_allclose(ndtri(a) + ndtri(b) + delta, 0.0, atol=1e-12)
    assert jax.config.read("jax_enable_x64")
