"""Small builders shared by the tests."""

import jax.numpy as jnp
import jax.random as jr

import modecollapse as mc


def random_problem(key, K: int, J: int, d: int, *, spread: float = 1.5, sigma: float = 1.3):
    """A random target and family in general position, with unequal weights."""
    k1, k2, k3, k4, k5 = jr.split(key, 5)
    U = spread * jr.normal(k1, (J, d))
    rho = jr.dirichlet(k2, 3.0 * jnp.ones(J))
    target = mc.GaussianMixture(U, rho, sigma)
    M = jr.normal(k3, (K, d))
    family = mc.IsotropicMixture(M, 0.5 * jr.normal(k4, (K,)), 0.3 * jr.normal(k5, ()))
    return target, family


def rel_err(a, b) -> float:
    # compared in float64 (explicitly: the tests run with strict dtype promotion)
    a, b = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-300))
