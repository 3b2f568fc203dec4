"""The objectives: F(θ; β) = E_q[log q − β log p] (docs/theory.md, §2, §4), and beyond it the
Rényi family F_α and forward KL in the same Gram form (§16)."""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._mixtures import GaussianMixture, IsotropicMixture
from ._numerics._dtypes import as_float
from ._numerics._expectations import expected_lse
from ._numerics._tilted import RULES as RENYI_RULES, log_expected_exp_lse
from ._summary import GramState, TargetStatistics, gaussian_logit_law


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


# ---------------------------------------------------------------------------------------------
# Beyond reverse KL: the Rényi family and forward KL in the same Gram form (docs/theory.md, §16).
# ---------------------------------------------------------------------------------------------


def renyi_finite(log_scale: ArrayLike, target_scale: ArrayLike, alpha, beta) -> Array:
    """Whether F_α is finite: a = α + (1 − α) β s²/σ² > 0 (eq. (RY2)); always true for α ≤ 1.

    **Arguments:**

    - `log_scale`: log s; `target_scale`: σ; `alpha`: α; `beta`: β.

    **Returns:** a boolean array.

    **Example:**
    ```python
    renyi_finite(0.0, 1.0, 2.0, 1.0)  # a = 2 − 1 = 1 > 0: True
    ```
    """
    s2 = jnp.exp(2 * jnp.asarray(log_scale))
    return alpha + (1.0 - alpha) * beta * s2 / jnp.asarray(target_scale) ** 2 > 0


def renyi_gram_objective(
    state: GramState,
    target: TargetStatistics,
    alpha: ArrayLike,
    beta: ArrayLike,
    dim: ArrayLike,
    rule: str = "accurate",
) -> Float[Array, ""]:
    """F_α(θ; β) = 1/(α − 1) log ∫ q^α (p^β)^{1−α} dx from the summary statistics (eq. (RY4)).

    With γ = 1 − α and h = β log p − log q, F_α = −(1/γ) log Σ_k w_k E_{N(m_k, s²I)}[e^{γh}].
    Completing the square in the quadratic part of γh moves each component to N(m_k/a, s²/a · I)
    with a = α + γβ s²/σ² (eq. (RY2)); the d-dimensional Gaussian factor is a^{−d/2} exactly (no
    rank of span{m, μ} enters), and what is left is E[exp(γβ LSE(ℓ^p) − γ LSE(ℓ^q))] over the
    joint Gaussian law of both mixtures' logits (eq. (RY3)), computed by `log_expected_exp_lse`.
    +inf where a ≤ 0 (only possible for α > 1). α = 1 is reverse KL (eq. (F3)).

    **Arguments:**

    - `state`: the summary statistics (R, Q, logits, log s) of q.
    - `target`: the target's statistics (T, log ρ, σ).
    - `alpha`: the order α > 0.
    - `beta`: the inverse temperature β.
    - `dim`: the dimension d.
    - `rule`: the integral's rule, "accurate" (default) or "fast" (see `log_expected_exp_lse`).

    **Returns:** the scalar F_α.

    **Example:**
    ```python
    state = GramState.from_models(q, p)
    f = renyi_gram_objective(state, TargetStatistics.from_target(p), 0.5, 1.0, p.dim)
    ```
    """
    R = state.R
    alpha, beta, dim = (as_float(x, like=R) for x in (alpha, beta, dim))
    gam = 1.0 - alpha
    is_kl = gam == 0.0
    gam_safe = jnp.where(is_kl, 1.0, gam)
    s2 = jnp.exp(2 * state.log_scale)
    sig2 = target.scale**2
    a = alpha + gam * beta * s2 / sig2
    finite = a > 0
    a_safe = jnp.where(finite, a, 1.0)
    c = 0.5 * beta / sig2 - 0.5 / s2
    const = 0.5 * dim * jnp.log(2 * math.pi * s2) - 0.5 * beta * dim * jnp.log(2 * math.pi * sig2)
    log_w = jax.nn.log_softmax(state.logits)
    Q, T = state.Q, target.T
    # The logits at x ~ N(m_k/a, s²/a · I) (eq. (G1) with the means m_k/a): rows k.
    mean_p = target.log_weights + (R / a_safe - 0.5 * jnp.diag(T)) / sig2
    mean_q = log_w + (Q / a_safe - 0.5 * jnp.diag(Q)) / s2
    G = jnp.block([[T / sig2**2, R.T / (sig2 * s2)], [R / (sig2 * s2), Q / s2**2]])
    cov = (s2 / a_safe) * G
    sizes = (T.shape[0], Q.shape[0])
    coefs = jnp.stack([gam_safe * beta, -gam_safe])
    tilted = jax.vmap(
        lambda mp, mq: log_expected_exp_lse(jnp.concatenate([mp, mq]), cov, coefs, sizes, rule=rule)
    )
    log_e = (
        log_w
        + gam_safe * const
        - 0.5 * dim * jnp.log(a_safe)
        - gam_safe * c * jnp.diag(Q) / a_safe
        + tilted(mean_p, mean_q)
    )
    value = -jax.nn.logsumexp(log_e) / gam_safe
    value = jnp.where(finite, value, jnp.inf)
    return jnp.where(is_kl, gram_objective(state, target, beta, dim), value)


def forward_kl_gram_objective(
    state: GramState, target: TargetStatistics, dim: ArrayLike, nodes: int | None = None
) -> Float[Array, ""]:
    """KL(p‖q) = E_p[log p − log q] from the summary statistics (eq. (FK1)).

    Under x ~ N(μ_j, σ²I) the logits of q are Gaussian with mean log w + (R_{·j} − diag Q/2)/s² and
    covariance σ² Q/s⁴, those of p with mean log ρ + (T_{·j} − diag T/2)/σ² and covariance T/σ²,
    and E|x|² = T_jj + dσ² (eq. (G1) with the roles of p and q exchanged).

    **Arguments:**

    - `state`, `target`, `dim`, `nodes`: as in `gram_objective`.

    **Returns:** the scalar KL(p‖q) ≥ 0.

    **Example:**
    ```python
    kl = forward_kl_gram_objective(GramState.from_models(q, p), TargetStatistics.from_target(p), 3)
    ```
    """
    dim = as_float(dim, like=state.R)
    s2 = jnp.exp(2 * state.log_scale)
    sig2 = target.scale**2
    log_w = jax.nn.log_softmax(state.logits)
    lse = jax.vmap(expected_lse, (0, None, None))
    lse_q = lse(*gaussian_logit_law(log_w, state.R.T, state.Q, sig2, s2), nodes)
    lse_p = lse(*gaussian_logit_law(target.log_weights, target.T, target.T, sig2, sig2), nodes)
    sq = jnp.diag(target.T) + dim * sig2  # E|x|² under component j
    g = (
        lse_p
        - sq / (2 * sig2)
        - 0.5 * dim * jnp.log(2 * math.pi * sig2)
        - lse_q
        + sq / (2 * s2)
        + 0.5 * dim * jnp.log(2 * math.pi * s2)
    )
    return jnp.dot(jnp.exp(target.log_weights), g)


class AbstractDivergence(eqx.Module):
    """The objective a flow minimises, as a function of the summary statistics (§2, §16).

    Concrete divergences are final: `ReverseKL` (F of eq. (F3)), `Renyi` (eq. (RY4)) and
    `ForwardKL` (eq. (FK1)). Every one is rotation invariant, so the theory ODE is the pull-back
    of its gradient (eq. (PB1)) and the full flow's exact gradient is autodiff through `gram`
    evaluated from the d-dimensional means.
    """

    kind: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def gram(
        self,
        state: GramState,
        target: TargetStatistics,
        beta: ArrayLike,
        dim: ArrayLike,
        nodes: int | None = None,
    ) -> Float[Array, ""]:
        """The objective at (state, β) (see the concrete class for its equation).

        **Arguments:** as `gram_objective`.

        **Returns:** a scalar.

        **Example:**
        ```python
        Renyi(0.5).gram(GramState.from_models(q, p), TargetStatistics.from_target(p), 1.0, 3)
        ```
        """

    def __call__(self, family, target, beta: ArrayLike = 1.0, nodes: int | None = None):
        """The objective of the models themselves (through `GramState.from_models`)."""
        state = GramState.from_models(family, target)
        return self.gram(state, TargetStatistics.from_target(target), beta, family.dim, nodes)

    @abc.abstractmethod
    def mc(self, family, target, beta, noise_q, noise_p):
        """A reparameterised Monte Carlo estimate whose gradient is the particle route (§16).

        **Arguments:** `family`, `target`, `beta`; `noise_q` (K, n, d) and `noise_p` (J, n, d)
        standard normals, per component of q and of p.

        **Returns:** the scalar estimate.

        **Example:**
        ```python
        Renyi(0.5).mc(q, p, 1.0, jr.normal(k1, (2, 64, 3)), jr.normal(k2, (2, 64, 3)))
        ```
        """


class ReverseKL(AbstractDivergence):
    """F = E_q[log q − β log p] (eq. (F3)); KL(q‖p) at β = 1. The default.

    **Example:**
    ```python
    ReverseKL()(q, p)  # == objective(q, p)
    ```
    """

    kind: ClassVar[str] = "reverse-kl"

    def gram(self, state, target, beta, dim, nodes=None):
        return gram_objective(state, target, beta, dim, nodes)

    def mc(self, family, target, beta, noise_q, noise_p):
        return mc_objective(family, target, beta, noise_q)


class Renyi(AbstractDivergence):
    """F_α = 1/(α − 1) log ∫ q^α (p^β)^{1−α} dx (eq. (RY4)); reverse KL at α = 1.

    α ∈ (0, 1) is mass-covering; α > 1 is finite only where α + (1 − α)β s²/σ² > 0
    (`renyi_finite`), and +inf elsewhere.

    **Arguments:**

    - `alpha`: the order α > 0 (a number or a traced scalar, so sweeps over α share one compile).
    - `rule`: the integral's rule, "accurate" (default, ≤ 1e-9 measured on log E) or "fast"
      (≤ 1e-4, half the cost; docs/theory.md §16).

    **Example:**
    ```python
    Renyi(0.5)(q, p)  # ≤ KL(q‖p) at β = 1 (F_α increases with α)
    ```
    """

    alpha: float | Array
    rule: str = eqx.field(static=True, default="accurate")
    kind: ClassVar[str] = "renyi"

    def __check_init__(self):
        if isinstance(self.alpha, (int, float)) and not self.alpha > 0:
            raise ValueError(f"`alpha` must be > 0, got {self.alpha}.")
        if self.rule not in RENYI_RULES:
            raise ValueError(f"`rule` must be one of {', '.join(RENYI_RULES)}, got {self.rule!r}.")

    def gram(self, state, target, beta, dim, nodes=None):
        return renyi_gram_objective(state, target, self.alpha, beta, dim, self.rule)

    def mc(self, family, target, beta, noise_q, noise_p):
        # The VR bound: −(1/γ) log Σ_k w_k mean_i e^{γ h(m_k + s z_ki)}; biased at finite n.
        gam = 1.0 - as_float(self.alpha, like=family.means)
        gam = jnp.where(gam == 0.0, 1e-12, gam)
        x = family.sample_components(noise_q)
        h = beta * target.log_prob(x) - family.log_prob(x)
        n = h.shape[1]
        log_mean = jax.nn.logsumexp(gam * h, axis=1) - math.log(n)
        return -jax.nn.logsumexp(family.log_weights + log_mean) / gam


class ForwardKL(AbstractDivergence):
    """KL(p‖q) (eq. (FK1)), at β = 1 only: no tempered version is defined.

    **Example:**
    ```python
    ForwardKL()(q, p)  # KL(p‖q) ≥ 0
    ```
    """

    kind: ClassVar[str] = "forward-kl"

    def gram(self, state, target, beta, dim, nodes=None):
        return forward_kl_gram_objective(state, target, dim, nodes)

    def mc(self, family, target, beta, noise_q, noise_p):
        # −E_p[log q] + E_p[log p], x = μ_j + σ z per component of p (no reparameterisation of q).
        x = target.means[:, None, :] + target.scale * noise_p
        h = target.log_prob(x) - family.log_prob(x)
        return jnp.dot(target.weights, jnp.mean(h, axis=1))


DIVERGENCES = {"reverse-kl": ReverseKL, "renyi": Renyi, "forward-kl": ForwardKL}
"""The divergence registry, kind -> class (the jax-free `_config.OBJECTIVE_KINDS` are the same)."""
