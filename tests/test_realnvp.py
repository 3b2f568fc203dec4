import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from modecollapse._flows._realnvp import AffineCoupling, RealNVP


@eqx.filter_jit
def _log_dets(flow, zs):
    def one(z):
        x, log_det = flow.transform_and_log_det(z)
        sign, ref = jnp.linalg.slogdet(jax.jacobian(lambda v: flow.transform_and_log_det(v)[0])(z))
        return log_det, ref, sign, flow.inverse_and_log_det(x)[1]

    return jax.vmap(one)(zs)


@pytest.mark.parametrize("dim", [3])
def test_log_det_matches_jacobian(getkey, dim):
    flow = RealNVP(getkey(), dim, layers=4, width=16, init_scale=1.0)
    log_det, ref, sign, inv = _log_dets(flow, jr.normal(getkey(), (16, dim)) * 1.5)
    assert jnp.all(sign != 0)
    np.testing.assert_allclose(log_det, ref, rtol=0, atol=1e-10)
    assert jnp.std(log_det) > 0.05  # a non-trivial, point-dependent volume change
    # the inverse pass's log-det is minus the forward one at the image
    np.testing.assert_allclose(inv, -log_det, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dim", [5])
def test_change_of_variables_consistency(getkey, dim):
    flow = RealNVP(getkey(), dim, layers=6, width=16, init_scale=1.0)

    @eqx.filter_jit
    def run(flow, key, z):
        x, log_q = flow.sample_and_log_prob(key, (64,))
        return x, log_q, flow.log_prob(x), flow.transform(flow.inverse(x)), flow.transform(z)

    z = jr.normal(getkey(), (7, 3, dim))
    x, log_q, log_q2, x2, gz = run(flow, getkey(), z)
    assert x.shape == (64, dim) and log_q.shape == (64,)
    np.testing.assert_allclose(log_q2, log_q, rtol=0, atol=1e-10)
    np.testing.assert_allclose(x2, x, rtol=0, atol=1e-10)
    np.testing.assert_allclose(eqx.filter_jit(flow.inverse)(gz), z, rtol=0, atol=1e-10)
    # the flow is not the identity at this initialisation
    assert jnp.max(jnp.abs(gz - z)) > 0.1


def test_scale_is_bounded(getkey):
    bound = 0.7
    layer = AffineCoupling(getkey(), 4, 16, scale_bound=bound, init_scale=50.0)
    log_det = jax.jit(jax.vmap(lambda x: layer.transform_and_log_det(x)[1]))(
        jr.normal(getkey(), (50, 4)) * 10
    )
    assert jnp.all(jnp.abs(log_det) <= 2 * bound + 1e-12)  # two transformed coordinates
    assert jnp.max(jnp.abs(log_det)) > bound  # and the bound is approached


def test_density_integrates_to_one_on_a_grid(getkey):
    flow = RealNVP(getkey(), 2, layers=4, width=16, init_scale=0.3)
    g = jnp.linspace(-12.0, 12.0, 481)
    h = float(g[1] - g[0])
    gx, gy = jnp.meshgrid(g, g)
    log_q = eqx.filter_jit(flow.log_prob)(jnp.stack([gx, gy], -1))
    total = float(jnp.sum(jnp.exp(log_q)) * h * h)
    assert abs(total - 1.0) < 2e-3, total
    # a 1-D marginal integrates to 1 too, and matches the sample histogram's mass on x₁ > 0
    marginal = jnp.sum(jnp.exp(log_q), axis=0) * h
    assert abs(float(jnp.sum(marginal) * h) - 1.0) < 2e-3
    x = eqx.filter_jit(flow.sample)(getkey(), (20000,))
    frac = float(jnp.mean(x[:, 0] > 0))
    grid_frac = float(jnp.sum(jnp.where(g > 0, marginal, 0.0)) * h)
    assert abs(frac - grid_frac) < 4 * math.sqrt(0.25 / 20000) + 2e-3


def test_identity_at_zero_init(getkey):
    flow = RealNVP(getkey(), 3, layers=2, width=8, init_scale=0.0)
    z = jr.normal(getkey(), (10, 3))
    x, log_q = eqx.filter_jit(flow.transform_and_log_prob)(z)
    np.testing.assert_allclose(x, z)
    ref = -0.5 * jnp.sum(z**2, -1) - 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(log_q, ref, atol=1e-12)


def test_bad_arguments(getkey):
    with pytest.raises(ValueError, match="`dim`"):
        RealNVP(getkey(), 1)
    with pytest.raises(ValueError, match="`layers`"):
        RealNVP(getkey(), 2, layers=0)
    with pytest.raises(ValueError, match="`scale_bound`"):
        AffineCoupling(getkey(), 2, 8, scale_bound=-1.0)
