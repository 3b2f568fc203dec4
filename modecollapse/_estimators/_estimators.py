"""Gradient estimators of the full flow: exact, fixed, fresh and projected particles.

docs/theory.md, §4 and §4b.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._mixtures import GaussianMixture, IsotropicMixture
from .._objective import AbstractDivergence, ReverseKL, objective
from ._particles import (
    Params,
    particle_noise,
    particle_objective,
    particle_value_and_grad,
    projected_value_and_grad,
)


def _params(family: IsotropicMixture) -> Params:
    return (family.means, family.logits, family.log_scale)


def _divergence_particles(divergence, family, target, beta, key, n):
    """The particle estimate of a divergence other than reverse KL (§16): materialised noise."""
    K, d = family.means.shape
    J = target.means.shape[0]
    dtype = family.means.dtype
    noise_q = particle_noise(key, n, K, d, dtype)
    noise_p = particle_noise(jr.fold_in(key, 2**30), n, J, d, dtype)
    return divergence.mc(family, target, beta, noise_q, noise_p)


def _divergence_value_and_grad(divergence, family, target, beta, key, n):
    def f(params):
        return _divergence_particles(divergence, IsotropicMixture(*params), target, beta, key, n)

    return jax.value_and_grad(f)(_params(family))


class AbstractEstimator(eqx.Module):
    """A route to ∇_θ F(θ; β) for the full flow (eq. (D1)); concrete estimators are final.

    Subclasses implement `objective`, `value_and_grad` and `fixed_step`, and carry the
    `divergence` they estimate (`ReverseKL()` by default). Adding an estimator is one
    final class plus one line of `ESTIMATORS` (and its name in the jax-free `_config.ESTIMATORS`;
    tests/test_registries.py keeps them equal).
    """

    @abc.abstractmethod
    def objective(
        self,
        family: IsotropicMixture,
        target: GaussianMixture,
        beta: ArrayLike,
        t: ArrayLike,
        step_index: ArrayLike | None = None,
    ) -> Float[Array, ""]:
        """The function of θ whose gradient drives the flow at time `t`.

        **Arguments:**

        - `family`: the variational mixture q_θ.
        - `target`: the target p.
        - `beta`: inverse temperature β.
        - `t`: time.
        - `step_index`: the integer index of the Euler step (the SGD route passes it); None
          derives it from `t` (see `AbstractSGDEstimator.step_key`).

        **Returns:** the scalar objective.

        **Example:**
        ```python
        ExactEstimator().objective(q, p, 1.0, 0.0)  # == objective(q, p)
        ```
        """

    @abc.abstractmethod
    def value_and_grad(
        self,
        family: IsotropicMixture,
        target: GaussianMixture,
        beta: ArrayLike,
        t: ArrayLike,
        step_index: ArrayLike | None = None,
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

    @property
    @abc.abstractmethod
    def fixed_step(self) -> float | None:
        """A fixed Euler step if the estimator is stochastic in time (SGD), else None."""


class AbstractParticleEstimator(AbstractEstimator):
    """An estimator from n reparameterised particles per component drawn from `key` (eq. (E1))."""

    key: eqx.AbstractVar[PRNGKeyArray]
    n: eqx.AbstractVar[int]


class AbstractSGDEstimator(AbstractParticleEstimator):
    """Fresh particles at every step of a fixed-step Euler scheme, i.e. SGD (eq. (E3)).

    The particles of Euler step n are keyed by `fold_in(key, n)`, with n the integer step counter
    of the solve (`StepCountingEuler`), so a run is reproducible from its key and no two steps
    share particles, at any number of steps and in any precision.
    """

    step: eqx.AbstractVar[float]

    @property
    def fixed_step(self) -> float | None:
        return self.step

    def step_key(self, t: ArrayLike, step_index: ArrayLike | None = None) -> PRNGKeyArray:
        """The particle key of Euler step `step_index`: fold_in(key, step_index).

        **Arguments:**

        - `t`: the time at the start of the step; used only when `step_index` is None, as
          round(t/step) (exact for a direct call at a grid time, not along a long float solve).
        - `step_index`: the integer step index (what the full flow passes).

        **Returns:** a PRNG key.

        **Example:**
        ```python
        est = FreshParticles(jr.key(0), 16, 0.1)
        est.step_key(0.3)  # == est.step_key(0.0, 3) == fold_in(key, 3)
        ```
        """
        if step_index is None:
            step_index = jnp.round(jnp.asarray(t) / self.step)
        return jr.fold_in(self.key, jnp.asarray(step_index).astype(jnp.int32))


class ExactEstimator(AbstractEstimator):
    """`exact`: F through the reduction to span{μ_j, m_k} (eq. (F3)), differentiated by autodiff.

    It shares no code with the hand-derived theory right-hand side (eqs. (T1)–(T5)).

    **Arguments:**

    - `nodes`: see `gram_objective` (default: the accurate rule).
    - `divergence`: the objective (default `ReverseKL()`); for any other, its Gram form (§16)
      evaluated from the d-dimensional means, differentiated by autodiff.

    **Example:**
    ```python
    est = ExactEstimator()
    g = jax.grad(lambda q: est.objective(q, p, 1.0, 0.0))(q)
    ```
    """

    nodes: int | None = eqx.field(static=True, default=None)
    divergence: AbstractDivergence = ReverseKL()

    @property
    def fixed_step(self) -> float | None:
        return None

    def objective(self, family, target, beta, t, step_index=None):
        if isinstance(self.divergence, ReverseKL):
            return objective(family, target, beta, self.nodes)
        return self.divergence(family, target, beta, self.nodes)

    def value_and_grad(self, family, target, beta, t, step_index=None):
        def f(params):
            return self.objective(IsotropicMixture(*params), target, beta, t)

        return jax.value_and_grad(f)(_params(family))


def _check_particles(n: int, chunk: int | None, step: float | None = None) -> None:
    if n < 1:
        raise ValueError("`n` (particles per component) must be >= 1.")
    if chunk is not None and chunk < 1:
        raise ValueError("`chunk` (particles per chunk) must be >= 1, or None for the default.")
    if step is not None and not step > 0:
        raise ValueError("`step` must be > 0.")


class FixedParticles(AbstractParticleEstimator):
    """`mc-fixed`: n particles per component drawn once, so the flow is a deterministic ODE.

    The particles are never stored: particle i is regenerated from `fold_in(key, i)` chunk by
    chunk at every evaluation (eqs. (E4)–(E7)), so memory is O(chunk · K · d) at any n and d.
    `particle_noise(key, n, K, d)` materialises the same particles for small problems.

    **Arguments:**

    - `key`: PRNG key of the particles.
    - `n`: particles per component.
    - `chunk`: particles per chunk (default None: K · chunk · d ≤ 2²³ numbers).
    - `divergence`: the objective (default `ReverseKL()`); any other uses its `mc` estimate on
      materialised particles (the VR bound for `Renyi`, biased at finite n; §16).

    **Example:**
    ```python
    est = FixedParticles(jr.key(0), n=1024, chunk=256)
    value, grads = est.value_and_grad(q, p, 1.0, 0.0)
    ```
    """

    key: PRNGKeyArray
    n: int = eqx.field(static=True)
    chunk: int | None = eqx.field(static=True, default=None)
    divergence: AbstractDivergence = ReverseKL()

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

    @property
    def fixed_step(self) -> float | None:
        return None

    def objective(self, family, target, beta, t, step_index=None):
        if not isinstance(self.divergence, ReverseKL):
            return _divergence_particles(self.divergence, family, target, beta, self.key, self.n)
        return particle_objective(_params(family), target, beta, self.key, self.n, self.chunk)

    def value_and_grad(self, family, target, beta, t, step_index=None):
        if not isinstance(self.divergence, ReverseKL):
            return _divergence_value_and_grad(
                self.divergence, family, target, beta, self.key, self.n
            )
        return particle_value_and_grad(_params(family), target, beta, self.key, self.n, self.chunk)


class FreshParticles(AbstractSGDEstimator):
    """`mc-fresh`: new particles at every step of a fixed-step Euler scheme, i.e. SGD (eq. (E3)).

    The particles of Euler step n are those of `FixedParticles` with the key `fold_in(key, n)`
    (n the integer step counter of the solve; see `AbstractSGDEstimator`), regenerated chunk by
    chunk (eqs. (E4)–(E7)), so a run is reproducible from its key and memory is O(chunk · K · d).

    **Arguments:**

    - `key`: PRNG key of the run.
    - `n`: particles per component.
    - `step`: the Euler step η (the SGD learning rate, in units of the flow's time).
    - `chunk`: particles per chunk (default None: K · chunk · d ≤ 2²³ numbers).
    - `divergence`: as in `FixedParticles`.

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
    divergence: AbstractDivergence = ReverseKL()

    def __check_init__(self):
        _check_particles(self.n, self.chunk, self.step)

    def objective(self, family, target, beta, t, step_index=None):
        key = self.step_key(t, step_index)
        if not isinstance(self.divergence, ReverseKL):
            return _divergence_particles(self.divergence, family, target, beta, key, self.n)
        return particle_objective(_params(family), target, beta, key, self.n, self.chunk)

    def value_and_grad(self, family, target, beta, t, step_index=None):
        key = self.step_key(t, step_index)
        if not isinstance(self.divergence, ReverseKL):
            return _divergence_value_and_grad(self.divergence, family, target, beta, key, self.n)
        return particle_value_and_grad(_params(family), target, beta, key, self.n, self.chunk)


class ProjectedFreshParticles(AbstractSGDEstimator):
    """`mc-fresh-projected`: SGD as `FreshParticles`, its per-step gradient drawn from the exact
    law of the n-particle gradient through the projections on span{m_k, μ_j} (eqs. (E8)–(E10)).

    Each step costs O(K·(K+J)·d + n·K·(K+J)²) instead of O(n·K·d): at d = 10⁶ and n = 4096 this
    is thousands of times fewer random numbers. The trajectories have the law of `mc-fresh`
    trajectories, not the same numbers.

    **Arguments:**

    - `key`: PRNG key of the run (step n is keyed by `fold_in(key, n)`).
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
    divergence: AbstractDivergence = ReverseKL()

    def __check_init__(self):
        _check_particles(self.n, None, self.step)
        if not isinstance(self.divergence, ReverseKL):
            raise ValueError(
                "`mc-fresh-projected` estimates reverse KL only; use `mc-fresh` for "
                f"`{self.divergence.kind}`."
            )

    def objective(self, family, target, beta, t, step_index=None):
        """The value of the estimate; its gradient is `value_and_grad`'s, not autodiff of this."""
        return self.value_and_grad(family, target, beta, t, step_index)[0]

    def value_and_grad(self, family, target, beta, t, step_index=None):
        key = self.step_key(t, step_index)
        return projected_value_and_grad(_params(family), target, beta, key, self.n)


# The estimator registry: one line per estimator, name -> builder(key, settings), where the
# settings have the `[simulation]` fields `particles`, `step`, `chunk` and `quadrature_nodes`, and
# an optional divergence (default reverse KL).
# The jax-free config validates `simulation.estimator` against the same names
# (`_config.ESTIMATORS`; tests/test_registries.py keeps them equal).
ESTIMATORS: dict[str, Callable[..., AbstractEstimator]] = {
    "exact": lambda key, sim, div=ReverseKL(): ExactEstimator(sim.quadrature_nodes, div),
    "mc-fixed": lambda key, sim, div=ReverseKL(): FixedParticles(
        key, sim.particles, sim.chunk, div
    ),
    "mc-fresh": lambda key, sim, div=ReverseKL(): FreshParticles(
        key, sim.particles, sim.step, sim.chunk, div
    ),
    "mc-fresh-projected": lambda key, sim, div=ReverseKL(): ProjectedFreshParticles(
        key, sim.particles, sim.step, div
    ),
}
