"""The objective F(θ; β) = E_q[log q − β log p] and its gradient routes (docs/theory.md, §2, §4)."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._mixtures import GaussianMixture, IsotropicMixture
from ._numerics._dtypes import as_float
from ._numerics._expectations import expected_lse
from ._summary import GramState, TargetStatistics


def gram_objective(
    state: GramState,
    target: TargetStatistics,
    beta: ArrayLike,
    dim: ArrayLike,
    nodes: int | None = None,
) -> Float[Array, ""]:
    """F(θ; β) as a function of the summary statistics alone (eq. (F3)).

    Exact at every d: every expectation reduces to a Gaussian integral over logit differences
    (eqs. (G1), (G2)). At β = 1 it is KL(q‖p), d-dependent constants included.

    **Arguments:**

    - `state`: the summary statistics (R, Q, logits, log s) of q.
    - `target`: the target's statistics (T, log ρ, σ).
    - `beta`: inverse temperature β.
    - `dim`: the dimension d.
    - `nodes`: Gauss–Hermite nodes per dimension for K or J ≥ 3 (see `gaussian_expectation`).

    **Returns:** the scalar F.

    **Example:**
    ```python
    state = GramState.from_models(q, p)
    kl = gram_objective(state, TargetStatistics.from_target(p), 1.0, p.dim)
    ```
    """
    beta, dim = as_float(beta, like=state.R), as_float(dim, like=state.R)  # the state's dtype
    s2 = jnp.exp(2 * state.log_scale)
    sig2 = target.scale**2
    log_w = jax.nn.log_softmax(state.logits)
    q_sq = jnp.diag(state.Q)
    lse = jax.vmap(expected_lse, (0, None, None))
    lse_q = lse(*state.logit_law(), nodes)  # eq. (G1)
    lse_p = lse(*target.logit_law(state), nodes)
    coef = 0.5 / s2 - 0.5 * beta / sig2
    g = (
        -(q_sq + dim * s2) * coef
        + lse_q
        - beta * lse_p
        - 0.5 * dim * jnp.log(2 * math.pi * s2)
        + 0.5 * beta * dim * jnp.log(2 * math.pi * sig2)
    )
    return jnp.dot(jnp.exp(log_w), g)


def objective(
    family: IsotropicMixture,
    target: GaussianMixture,
    beta: ArrayLike = 1.0,
    nodes: int | None = None,
):
    """Exact F(θ; β) = E_q[log q − β log p] (eq. (F1)); at β = 1 this is KL(q‖p).

    **Arguments:**

    - `family`: the variational mixture q.
    - `target`: the target p.
    - `beta`: inverse temperature β (default 1).
    - `nodes`: see `gram_objective`.

    **Returns:** the scalar F.

    **Example:**
    ```python
    q = IsotropicMixture(jnp.zeros((2, 3)), jnp.zeros(2), 0.0)
    p = GaussianMixture(jnp.eye(3)[:2], jnp.array([0.5, 0.5]))
    objective(q, p)  # KL(q‖p) ≥ 0
    ```
    """
    state = GramState.from_models(family, target)
    return gram_objective(state, TargetStatistics.from_target(target), beta, family.dim, nodes)


def mc_objective(
    family: IsotropicMixture,
    target: GaussianMixture,
    beta: ArrayLike,
    noise: Float[Array, "k n d"],
) -> Float[Array, ""]:
    """Reparameterised Monte Carlo estimate of F (eq. (E1)): Σ_k w_k mean_i h(m_k + s z_ki).

    **Arguments:**

    - `family`, `target`, `beta`: as in `objective`.
    - `noise`: standard normal z, n particles per component, shape (K, n, d).

    **Returns:** the scalar estimate; its gradient is the `mc-*` gradient estimate (eq. (E2)).

    **Example:**
    ```python
    z = jr.normal(jr.key(0), (2, 4096, 3))
    mc_objective(q, p, 1.0, z)  # ≈ objective(q, p)
    ```
    """
    x = family.sample_components(noise)
    h = family.log_prob(x) - beta * target.log_prob(x)
    return jnp.dot(family.weights, jnp.mean(h, axis=1))
