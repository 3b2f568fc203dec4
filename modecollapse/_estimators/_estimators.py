"""Gradient estimators of the full flow: exact, fixed, fresh and projected particles.

docs/theory.md, §4 and §4b.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._mixtures import GaussianMixture, IsotropicMixture
from .._objective import objective
from ._particles import (
    Params,
    family_from_params,
    particle_objective,
    particle_value_and_grad,
    projected_value_and_grad,
)


class AbstractEstimator(eqx.Module):
    """A route to ∇_θ F: the gradient flow calls `value_and_grad` (by default `jax.value_and_grad`
    of `objective` with respect to θ = (means, logits, log_scale))."""

    @abc.abstractmethod
    def objective(
        self, family: IsotropicMixture, target: GaussianMixture, beta: ArrayLike, t: ArrayLike
    ) -> Float[Array, ""]:
        """The function of θ whose gradient drives the flow at time `t`."""

    def value_and_grad(
        self, family: IsotropicMixture, target: GaussianMixture, beta: ArrayLike, t: ArrayLike
    ) -> tuple[Float[Array, ""], Params]:
        """`objective` and its gradient with respect to θ = (means, logits, log_scale).

        **Arguments:** as `objective`.

        **Returns:** `(value, (grad_means, grad_logits, grad_log_scale))`.

        **Example:**
        ```python
        value, (gm, ga, gs) = ExactEstimator().value_and_grad(q, p, 1.0, 0.0)
        gm.shape  # (K, d)
        ```
        """

        def f(params):
            return self.objective(family_from_params(params), target, beta, t)

        return jax.value_and_grad(f)((family.means, family.logits, family.log_scale))

    @property
    def fixed_step(self) -> float | None:
        """A fixed Euler step if the estimator is stochastic in time (SGD), else None."""
        return None


class ExactEstimator(AbstractEstimator):
    """`exact`: F through the reduction to span{μ_j, m_k} (eq. (F3)), differentiated by autodiff.

    It shares no code with the hand-derived theory right-hand side (eqs. (T1)–(T5)).

    **Arguments:**

    - `nodes`: see `gram_objective` (default: the accurate rule).

    **Example:**
    ```python
    est = ExactEstimator()
    g = jax.grad(lambda q: est.objective(q, p, 1.0, 0.0))(q)
    ```
    """

    nodes: int | None = eqx.field(static=True, default=None)

    def objective(self, family, target, beta, t):
        return objective(family, target, beta, self.nodes)


def _check_particles(n: int, chunk: int | None, step: float | None = None) -> None:
    if n < 1:
        raise ValueError("`n` (particles per component) must be >= 1.")
    if chunk is not None and chunk < 1:
        raise ValueError("`chunk` (particles per chunk) must be >= 1, or None for the default.")
    if step is not None and not step > 0:
        raise ValueError("`step` must be > 0.")


def _params(family: IsotropicMixture) -> Params:
    return (family.means, family.logits, family.log_scale)


class FixedParticles(AbstractEstimator):
    """`mc-fixed`: n particles per component drawn once, so the flow is a deterministic ODE.

    The particles are never stored: particle i is regenerated from `fold_in(key, i)` chunk by
    chunk at every evaluation (eqs. (E4)–(E7)), so memory is O(chunk · K · d) at any n and d.
    `particle_noise(key, n, K, d)` materialises the same particles for small problems.

    **Arguments:**

    - `key`: PRNG key of the particles.
    - `n`: particles per component.
    - `chunk`: particles per chunk (default None: K · chunk · d ≤ 2²³ numbers).

    **Example:**
    ```python
    est = FixedParticles(jr.key(0), n=1024, chunk=256)
    value, grads = est.value_and_grad(q, p, 1.0, 0.0)
    ```
    """

    key: PRNGKeyArray
    n: int = eqx.field(static=True)
    chunk: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_particles(self.n, self.chunk)

    @classmethod
    def draw(
        cls,
        key: PRNGKeyArray,
        n: int,
        components: int | None = None,
        dim: int | None = None,
        chunk: int | None = None,
    ) -> "FixedParticles":
        """The estimator of n particles per component from `key` (nothing is allocated).

        **Arguments:**

        - `key`, `n`, `chunk`: as the fields.
        - `components`, `dim`: accepted for compatibility; the shapes come from the family.

        **Returns:** a `FixedParticles`.

        **Example:**
        ```python
        est = FixedParticles.draw(jr.key(0), 1024, 2, 3)
        ```
        """
        del components, dim
        return cls(key, n, chunk)

    def objective(self, family, target, beta, t):
        return particle_objective(_params(family), target, beta, self.key, self.n, self.chunk)

    def value_and_grad(self, family, target, beta, t):
        return particle_value_and_grad(_params(family), target, beta, self.key, self.n, self.chunk)


def _step_key(key: PRNGKeyArray, step: float, t: ArrayLike) -> PRNGKeyArray:
    index = jnp.round(jnp.asarray(t) / step).astype(jnp.int32)
    return jr.fold_in(key, index)


class FreshParticles(AbstractEstimator):
    """`mc-fresh`: new particles at every step of a fixed-step Euler scheme, i.e. SGD (eq. (E3)).

    The particles of the step starting at time t are those of `FixedParticles` with the key
    `fold_in(key, round(t/step))`, regenerated chunk by chunk (eqs. (E4)–(E7)), so a run is
    reproducible from its key and memory is O(chunk · K · d).

    **Arguments:**

    - `key`: PRNG key of the run.
    - `n`: particles per component.
    - `step`: the Euler step η (the SGD learning rate, in units of the flow's time).
    - `chunk`: particles per chunk (default None: K · chunk · d ≤ 2²³ numbers).

    **Example:**
    ```python
    est = FreshParticles(jr.key(0), n=256, step=0.01)
    est.fixed_step  # 0.01
    ```
    """

    key: PRNGKeyArray
    n: int = eqx.field(static=True)
    step: float = eqx.field(static=True)
    chunk: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_particles(self.n, self.chunk, self.step)

    @property
    def fixed_step(self) -> float | None:
        return self.step

    def step_key(self, t: ArrayLike) -> PRNGKeyArray:
        """The particle key of the Euler step starting at time `t`: fold_in(key, round(t/step))."""
        return _step_key(self.key, self.step, t)

    def objective(self, family, target, beta, t):
        key = self.step_key(t)
        return particle_objective(_params(family), target, beta, key, self.n, self.chunk)

    def value_and_grad(self, family, target, beta, t):
        key = self.step_key(t)
        return particle_value_and_grad(_params(family), target, beta, key, self.n, self.chunk)


class ProjectedFreshParticles(AbstractEstimator):
    """`mc-fresh-projected`: SGD as `FreshParticles`, its per-step gradient drawn from the exact
    law of the n-particle gradient through the projections on span{m_k, μ_j} (eqs. (E8)–(E10)).

    Each step costs O(K·(K+J)·d + n·K·(K+J)²) instead of O(n·K·d): at d = 10⁶ and n = 4096 this
    is thousands of times fewer random numbers. The trajectories have the law of `mc-fresh`
    trajectories, not the same numbers.

    **Arguments:**

    - `key`: PRNG key of the run (step keys are `fold_in(key, round(t/step))`).
    - `n`: particles per component.
    - `step`: the Euler step η.

    **Example:**
    ```python
    est = ProjectedFreshParticles(jr.key(0), n=4096, step=0.01)
    value, grads = est.value_and_grad(q, p, 1.0, 0.0)
    ```
    """

    key: PRNGKeyArray
    n: int = eqx.field(static=True)
    step: float = eqx.field(static=True)

    def __check_init__(self):
        _check_particles(self.n, None, self.step)

    @property
    def fixed_step(self) -> float | None:
        return self.step

    def objective(self, family, target, beta, t):
        """The value of the estimate; its gradient is `value_and_grad`'s, not autodiff of this."""
        return self.value_and_grad(family, target, beta, t)[0]

    def value_and_grad(self, family, target, beta, t):
        key = _step_key(self.key, self.step, t)
        return projected_value_and_grad(_params(family), target, beta, key, self.n)
