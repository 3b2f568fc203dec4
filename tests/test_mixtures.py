import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import modecollapse as mc


def _scipy_log_prob(means, weights, scale, x):
    comps = [
        np.log(w) + multivariate_normal(m, scale**2 * np.eye(len(m))).logpdf(x)
        for m, w in zip(means, weights)
    ]
    return logsumexp(np.stack(comps), axis=0)


def test_log_prob_matches_scipy(getkey):
    means = jr.normal(getkey(), (3, 4))
    weights = jnp.array([0.2, 0.5, 0.3])
    p = mc.GaussianMixture(means, weights, 1.7)
    x = 2 * jr.normal(getkey(), (50, 4))
    expected = _scipy_log_prob(np.asarray(means), np.asarray(weights), 1.7, np.asarray(x))
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-12, atol=1e-12)


def test_family_log_prob_and_score(getkey):
    q = mc.IsotropicMixture(jr.normal(getkey(), (2, 3)), jnp.array([0.3, -0.2]), 0.4)
    x = jr.normal(getkey(), (7, 3))
    w = np.asarray(jax.nn.softmax(q.logits))
    expected = _scipy_log_prob(np.asarray(q.means), w, float(jnp.exp(0.4)), np.asarray(x))
    np.testing.assert_allclose(q.log_prob(x), expected, rtol=1e-12)
    autodiff = jax.vmap(jax.grad(lambda y: q.log_prob(y)))(x)
    np.testing.assert_allclose(q.score(x), autodiff, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(q.responsibilities(x), -1), 1.0, rtol=1e-12)


def test_sampling_moments(getkey):
    means = jnp.array([[4.0, 0.0], [-2.0, 1.0]])
    p = mc.GaussianMixture(means, jnp.array([0.3, 0.7]), 0.5)
    x = p.sample(getkey(), (200_000,))
    assert x.shape == (200_000, 2)
    mean = jnp.array([0.3, 0.7]) @ means
    np.testing.assert_allclose(jnp.mean(x, 0), mean, atol=4 * 2.2 / np.sqrt(200_000))


def test_reparameterised_components(getkey):
    q = mc.IsotropicMixture(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.zeros(2), jnp.log(2.0))
    z = jr.normal(getkey(), (2, 5, 2))
    np.testing.assert_allclose(q.sample_components(z), q.means[:, None] + 2.0 * z)


def test_tempered_view(getkey):
    p = mc.GaussianMixture(jnp.array([[1.0], [-2.0]]), jnp.array([0.4, 0.6]), 1.2)
    x = jr.normal(getkey(), (9, 1))
    pb = p.tempered(0.3)
    np.testing.assert_allclose(pb.log_prob(x), 0.3 * p.log_prob(x))
    np.testing.assert_allclose(pb.score(x), 0.3 * p.score(x))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="`weights`"):
        mc.GaussianMixture(jnp.zeros((2, 3)), jnp.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="`logits`"):
        mc.IsotropicMixture(jnp.zeros((2, 3)), jnp.zeros(3), 0.0)


def test_bad_values_raise():
    with pytest.raises(Exception, match="`weights` must be positive and sum to 1"):
        mc.GaussianMixture(jnp.zeros((2, 3)), jnp.array([0.5, 0.6]), 1.0)
    with pytest.raises(Exception, match="`scale` must be > 0"):
        mc.GaussianMixture(jnp.zeros((2, 3)), jnp.array([0.5, 0.5]), -1.0)
