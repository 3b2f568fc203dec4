"""Isotropic Gaussian mixtures: the target p and the variational family q (docs/theory.md, §1)."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._numerics._dtypes import as_float


class AbstractIsotropicMixture(eqx.Module):
    """Σ_k w_k N(x; m_k, s² I_d): a mixture of isotropic Gaussians sharing one scale s.

    Concrete subclasses say how the weights and the scale are parameterised. The `*_single`
    methods act on one point of shape (d,) (the vmap-friendly core, as in flowjax); the others act
    on a trailing axis of size d and broadcast over any leading batch axes.
    """

    means: eqx.AbstractVar[Float[Array, "n d"]]

    @property
    @abc.abstractmethod
    def log_weights(self) -> Float[Array, " n"]:
        """log w_k."""

    @property
    @abc.abstractmethod
    def scale(self) -> Float[Array, ""]:
        """The shared standard deviation s."""

    @property
    def weights(self) -> Float[Array, " n"]:
        return jnp.exp(self.log_weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_logits_single(self, x: Float[Array, " d"]) -> Float[Array, " n"]:
        """Logits log w_k + (x·m_k − |m_k|²/2)/s² of one point x, shape (d,) (eq. (M2)).

        **Arguments:**

        - `x`: one point, shape (d,).

        **Returns:** the (n,) logits; their softmax is `responsibilities(x)`.

        **Example:**
        ```python
        p = GaussianMixture(jnp.array([[3.0], [-3.0]]), jnp.array([0.5, 0.5]))
        jax.vmap(p.component_logits_single)(jnp.zeros((10, 1))).shape  # (10, 2)
        ```
        """
        s2 = self.scale**2
        sq = jnp.sum(self.means**2, axis=-1)
        return self.log_weights + (self.means @ x - 0.5 * sq) / s2

    def log_prob_single(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Log density of one point x, shape (d,): LSE(logits) − |x|²/(2s²) − (d/2) log(2π s²)
        (eq. (M1)); `log_prob` vectorises it.

        **Arguments:**

        - `x`: one point, shape (d,).

        **Returns:** a scalar.

        **Example:**
        ```python
        jax.vmap(p.log_prob_single)(x)  # == p.log_prob(x) for x of shape (n, d)
        ```
        """
        s2 = self.scale**2
        return (
            jax.nn.logsumexp(self.component_logits_single(x))
            - 0.5 * jnp.sum(x**2) / s2
            - 0.5 * self.dim * jnp.log(2 * math.pi * s2)
        )

    def score_single(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """∇ log density (Σ_k π_k(x) m_k − x)/s² at one point x, shape (d,) (eq. (M3)).

        **Arguments:**

        - `x`: one point, shape (d,).

        **Returns:** the (d,) score; `score` vectorises it.

        **Example:**
        ```python
        p.score_single(jnp.zeros(p.dim))
        ```
        """
        pi = jax.nn.softmax(self.component_logits_single(x))
        return (pi @ self.means - x) / self.scale**2

    def log_prob(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        """Log density (eq. (M1)).

        **Arguments:**

        - `x`: points, shape (..., d).

        **Returns:** log densities, shape (...).

        **Example:**
        ```python
        p = GaussianMixture(means=jnp.array([[3.0], [-3.0]]), weights=jnp.array([0.5, 0.5]))
        p.log_prob(jnp.zeros((10, 1))).shape  # (10,)
        ```
        """
        return jnp.vectorize(self.log_prob_single, signature="(d)->()")(x)

    def score(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        """∇_x log density (eq. (M3)), shape (..., d).

        **Arguments:**

        - `x`: points, shape (..., d).

        **Returns:** scores, shape (..., d).

        **Example:**
        ```python
        p = GaussianMixture(means=jnp.array([[3.0], [-3.0]]), weights=jnp.array([0.5, 0.5]))
        p.score(jnp.zeros(1))  # Array([0.])
        ```
        """
        return jnp.vectorize(self.score_single, signature="(d)->(d)")(x)

    def responsibilities(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch n"]:
        """Posterior component probabilities π_k(x) = softmax_k of eq. (M2).

        **Arguments:**

        - `x`: points, shape (..., d).

        **Returns:** responsibilities, shape (..., n), summing to 1.

        **Example:**
        ```python
        p = GaussianMixture(means=jnp.array([[3.0], [-3.0]]), weights=jnp.array([0.5, 0.5]))
        p.responsibilities(jnp.array([3.0]))  # ≈ [1, 0]
        ```
        """
        fn = lambda y: jax.nn.softmax(self.component_logits_single(y))  # noqa: E731
        return jnp.vectorize(fn, signature="(d)->(n)")(x)

    def sample(self, key: PRNGKeyArray, sample_shape: tuple[int, ...] = ()) -> Array:
        """Draw samples (component index from the weights, then a Gaussian draw).

        Not reparameterisable in the weights; use `IsotropicMixture.sample_components` for VI.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `sample_shape`: leading shape of the output.

        **Returns:** samples of shape `sample_shape + (d,)`.

        **Example:**
        ```python
        p = GaussianMixture(means=jnp.array([[3.0], [-3.0]]), weights=jnp.array([0.5, 0.5]))
        x = p.sample(jr.key(0), (1000,))  # (1000, 1)
        ```
        """
        ckey, zkey = jr.split(key)
        idx = jr.categorical(ckey, self.log_weights, shape=sample_shape)
        z = jr.normal(zkey, sample_shape + (self.dim,), dtype=self.means.dtype)
        return self.means[idx] + self.scale * z


class GaussianMixture(AbstractIsotropicMixture):
    """Target p(x) = Σ_j ρ_j N(x; μ_j, σ² I_d) (eq. (M1)).

    **Arguments:**

    - `means`: μ, shape (J, d); its floating dtype is kept (float32 stays float32 under x64).
    - `weights`: ρ, shape (J,), positive and summing to 1.
    - `scale`: σ > 0 (default 1).

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[3.0, 0.0], [-3.0, 0.0]]), jnp.array([0.6, 0.4]), 1.0)
    p.log_prob(jnp.zeros(2))
    p_half = p.tempered(0.5)  # log p_β = β log p
    ```
    """

    means: Float[Array, "n d"]
    log_weights_: Float[Array, " n"]
    scale_: Float[Array, ""]

    def __init__(self, means: ArrayLike, weights: ArrayLike, scale: ArrayLike = 1.0):
        self.means = as_float(means)  # keeps float32 under x64
        weights = as_float(weights, like=self.means)
        scale = as_float(scale, like=self.means)
        weights = eqx.error_if(
            weights,
            jnp.any(weights <= 0) | (jnp.abs(jnp.sum(weights) - 1) > 1e-6),
            "`weights` must be positive and sum to 1; normalise them first.",
        )
        self.log_weights_ = jnp.log(weights)
        self.scale_ = eqx.error_if(scale, scale <= 0, "`scale` must be > 0.")

    def __check_init__(self):
        if self.means.ndim != 2:
            raise ValueError("`means` must have shape (J, d).")
        if self.log_weights_.shape != self.means.shape[:1]:
            raise ValueError("`weights` must have shape (J,), one per row of `means`.")
        if self.scale_.shape != ():
            raise ValueError("`scale` must be a scalar (the targets are isotropic).")

    @property
    def log_weights(self) -> Float[Array, " n"]:
        return self.log_weights_

    @property
    def scale(self) -> Float[Array, ""]:
        return self.scale_

    def tempered(self, beta: ArrayLike) -> "TemperedTarget":
        """The tempered view log p_β = β log p (unnormalised; eq. (F2)).

        **Arguments:**

        - `beta`: inverse temperature β.

        **Returns:** a `TemperedTarget`.

        **Example:**
        ```python
        p = GaussianMixture(jnp.array([[1.0], [-1.0]]), jnp.array([0.5, 0.5]))
        p.tempered(0.5).log_prob(jnp.zeros(1))  # 0.5 * p.log_prob(0)
        ```
        """
        return TemperedTarget(self, as_float(beta, like=self.means))


class TemperedTarget(eqx.Module):
    """β log p for a `GaussianMixture` p: the annealed target of eq. (F2).

    **Arguments:**

    - `base`: the target p.
    - `beta`: inverse temperature β.

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[1.0], [-1.0]]), jnp.array([0.5, 0.5]))
    pb = TemperedTarget(p, 0.3)
    pb.score(jnp.ones(1))  # 0.3 * p.score(1)
    ```
    """

    base: GaussianMixture
    beta: Float[Array, ""]

    def log_prob(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        """β log p(x), unnormalised."""
        return self.beta * self.base.log_prob(x)

    def score(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        """β ∇ log p(x)."""
        return self.beta * self.base.score(x)


class IsotropicMixture(AbstractIsotropicMixture):
    """Variational family q_θ = Σ_k w_k N(m_k, s² I_d), θ = (means, logits, log_scale) (eq. (M1)).

    All parameters are unconstrained: w = softmax(logits), s = exp(log_scale).

    **Arguments:**

    - `means`: m, shape (K, d); its floating dtype is kept (float32 stays float32 under x64).
    - `logits`: a, shape (K,), cast to the dtype of `means`.
    - `log_scale`: log s, a scalar, cast to the dtype of `means`.

    **Example:**
    ```python
    q = IsotropicMixture(jnp.zeros((2, 5)), jnp.zeros(2), 0.0)
    x = q.sample_components(jr.normal(jr.key(0), (2, 100, 5)))  # (2, 100, 5)
    q.log_prob(x).shape  # (2, 100)
    ```
    """

    means: Float[Array, "n d"]
    logits: Float[Array, " n"]
    log_scale: Float[Array, ""]

    def __init__(self, means: ArrayLike, logits: ArrayLike, log_scale: ArrayLike):
        self.means = as_float(means)  # keeps float32 under x64
        self.logits = as_float(logits, like=self.means)
        self.log_scale = as_float(log_scale, like=self.means)

    def __check_init__(self):
        if self.means.ndim != 2:
            raise ValueError("`means` must have shape (K, d).")
        if self.logits.shape != self.means.shape[:1]:
            raise ValueError("`logits` must have shape (K,), one per row of `means`.")
        if self.log_scale.shape != ():
            raise ValueError("`log_scale` must be a scalar (one scale shared by the components).")

    @property
    def log_weights(self) -> Float[Array, " n"]:
        return jax.nn.log_softmax(self.logits)

    @property
    def scale(self) -> Float[Array, ""]:
        return jnp.exp(self.log_scale)

    def sample_components(self, noise: Float[Array, "n *batch d"]) -> Float[Array, "n *batch d"]:
        """Reparameterised particles x_k = m_k + s z_k, one batch per component (eq. (E2)).

        **Arguments:**

        - `noise`: standard normal z, shape (K, ..., d).

        **Returns:** particles of the same shape.

        **Example:**
        ```python
        q = IsotropicMixture(jnp.zeros((2, 3)), jnp.zeros(2), 0.0)
        q.sample_components(jnp.ones((2, 4, 3)))  # all ones
        ```
        """
        means = self.means.reshape(self.means.shape[:1] + (1,) * (noise.ndim - 2) + (self.dim,))
        return means + self.scale * noise
