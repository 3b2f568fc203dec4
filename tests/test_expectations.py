import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import modecollapse as mc


def _mc_stats(mean, cov, key, n=1_000_000):
    L = np.linalg.cholesky(np.asarray(cov) + 1e-300 * np.eye(len(mean)))
    x = mean + jr.normal(key, (n, len(mean))) @ L.T
    pi = jax.nn.softmax(x)
    lse = jax.nn.logsumexp(x, axis=-1)
    return (jnp.mean(lse), jnp.std(lse) / np.sqrt(n)), (
        jnp.mean(pi, 0),
        jnp.std(pi, 0) / np.sqrt(n),
    )


def _random_cov(key, n, scale):
    A = jr.normal(key, (n, n))
    return scale * A @ A.T / n


@pytest.mark.parametrize("n,scale", [(3, 1.0), (3, 4.0), (4, 2.0), (6, 1.0)])
def test_against_monte_carlo(getkey, n, scale):
    mean = jr.normal(getkey(), (n,))
    cov = _random_cov(getkey(), n, scale)
    lse, resp, outer = mc.expected_softmax_stats(mean, cov)
    (lse_mc, lse_se), (resp_mc, resp_se) = _mc_stats(mean, cov, getkey())
    # Tensor Gauss–Hermite (n ≤ 4) is far below MC error; QMC (n ≥ 5) is documented at ~1e-3.
    slack = 0.0 if n <= 4 else 2e-3
    assert abs(lse - lse_mc) < 4 * lse_se + slack
    assert jnp.all(jnp.abs(resp - resp_mc) < 4 * resp_se + slack)
    np.testing.assert_allclose(jnp.sum(resp), 1.0, atol=1e-10)
    np.testing.assert_allclose(jnp.sum(outer, 1), resp, atol=1e-10)


def test_three_logits_reduce_to_the_exact_two_logit_route(getkey):
    """A third logit at −60 contributes nothing: tensor quadrature against the 1-D route."""
    mean2 = jnp.array([0.3, -0.4])
    cov2 = jnp.array([[1.0, 0.3], [0.3, 0.5]])
    mean3 = jnp.concatenate([mean2, jnp.array([-60.0])])
    cov3 = jnp.zeros((3, 3)).at[:2, :2].set(cov2)
    a = mc.expected_softmax_stats(mean2, cov2)
    b = mc.expected_softmax_stats(mean3, cov3)
    np.testing.assert_allclose(a[0], b[0], atol=1e-10)
    np.testing.assert_allclose(a[1], b[1][:2], atol=1e-10)
    np.testing.assert_allclose(a[2], b[2][:2, :2], atol=1e-10)


@pytest.mark.parametrize("n", [2, 3])
def test_gradients_against_finite_differences(getkey, n):
    mean = jr.normal(getkey(), (n,))
    cov = _random_cov(getkey(), n, 1.0)
    grad_mean, grad_cov = jax.grad(mc.expected_lse, argnums=(0, 1))(mean, cov)
    h = 1e-5
    for i in range(n):
        e = jnp.zeros(n).at[i].set(h)
        fd = (mc.expected_lse(mean + e, cov) - mc.expected_lse(mean - e, cov)) / (2 * h)
        np.testing.assert_allclose(grad_mean[i], fd, rtol=1e-6, atol=1e-9)
    E = jnp.zeros((n, n)).at[0, n - 1].set(h).at[n - 1, 0].set(h)
    fd = (mc.expected_lse(mean, cov + E) - mc.expected_lse(mean, cov - E)) / (2 * h)
    np.testing.assert_allclose(grad_cov[0, n - 1] + grad_cov[n - 1, 0], fd, rtol=1e-5, atol=1e-9)
    # E[∇ LSE] = E[π] (heat-equation route of the custom JVP, eq. (G3))
    np.testing.assert_allclose(grad_mean, mc.expected_softmax_stats(mean, cov)[1], atol=1e-10)


def test_singular_covariance_has_finite_gradients():
    mean = jnp.array([0.1, 0.2, -0.3])
    v = jnp.array([1.0, -1.0, 0.5])
    cov = jnp.outer(v, v)  # rank one
    g = jax.grad(lambda m, c: mc.expected_softmax_stats(m, c)[1][0], argnums=(0, 1))(mean, cov)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)
    assert bool(
        jnp.all(jnp.isfinite(jax.grad(mc.expected_lse, argnums=1)(mean, jnp.zeros((3, 3)))))
    )


def test_coarser_rule_is_close_and_differentiable(getkey):
    mean = jr.normal(getkey(), (3,))
    cov = _random_cov(getkey(), 3, 1.0)
    fine = mc.expected_softmax_stats(mean, cov)
    coarse = mc.expected_softmax_stats(mean, cov, 16)
    np.testing.assert_allclose(coarse[1], fine[1], atol=1e-5)
    g = jax.grad(mc.expected_lse, argnums=1)(mean, cov, 16)
    assert bool(jnp.all(jnp.isfinite(g)))
