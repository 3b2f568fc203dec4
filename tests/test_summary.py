"""The summary statistics and the Gaussian logit law (G1), against sampled logits."""

import jax.numpy as jnp
import jax.random as jr
import pytest

from modecollapse import GaussianMixture, IsotropicMixture
from modecollapse._summary import GramState, TargetStatistics


def _models(getkey, dtype=jnp.float64):
    q = IsotropicMixture(
        jr.normal(getkey(), (3, 5), dtype),
        jnp.array([0.2, -0.1, 0.4], dtype),
        jnp.array(-0.3, dtype),
    )
    p = GaussianMixture(
        jr.normal(getkey(), (2, 5), dtype), jnp.array([0.3, 0.7], dtype), jnp.array(1.2, dtype)
    )
    return q, p


@pytest.mark.parametrize("which", ["q", "p"])
def test_logit_law_matches_sampled_logits(getkey, which):
    # Independent route: draw x = m_k + s z in R^d and evaluate the mixtures' logits (eq. (M2)).
    q, p = _models(getkey)
    state = GramState.from_models(q, p)
    model = q if which == "q" else p
    mean, cov = (
        state.logit_law() if which == "q" else TargetStatistics.from_target(p).logit_law(state)
    )
    z = jr.normal(getkey(), (3, 200_000, 5))
    logits = jnp.stack(
        [
            jnp.vectorize(model.component_logits_single, signature="(d)->(n)")(x)
            for x in q.sample_components(z)
        ]
    )
    emp_mean = jnp.mean(logits, axis=1)
    centred = logits - emp_mean[:, None, :]
    emp_cov = jnp.einsum("kia,kib->kab", centred, centred) / z.shape[1]
    scale = 1.0 + jnp.max(jnp.abs(cov))
    assert jnp.allclose(emp_mean, mean, atol=0.02 * scale)
    for k in range(3):
        assert jnp.allclose(emp_cov[k], cov, atol=0.03 * scale)
