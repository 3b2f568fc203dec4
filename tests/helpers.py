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


def assert_routes_agree(full, theory, tol: float = 1e-6, label=None) -> None:
    """The full flow and the theory agree within `tol` relative on every saved statistic, after
    the dynamics actually moved: the means towards the modes, the weights and the scale."""
    assert full.failure() is None and theory.failure() is None
    assert float(jnp.max(jnp.abs(theory.R[-1] - theory.R[0]))) > 1.0
    assert float(jnp.max(jnp.abs(theory.weights[-1] - theory.weights[0]))) > 1e-3
    assert float(jnp.abs(theory.scale[-1] - theory.scale[0])) > 1e-3
    for name in ("R", "Q", "weights", "scale", "objective"):
        err = rel_err(getattr(full, name), getattr(theory, name))
        assert err < tol, (label, name, err)
