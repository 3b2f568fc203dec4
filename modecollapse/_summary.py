"""Summary statistics of the (target, family) pair and trajectories of them (docs/theory.md, §3)."""

import functools

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from ._mixtures import GaussianMixture, IsotropicMixture


def gaussian_logit_law(
    log_weights: Float[Array, " n"],
    cross: Float[Array, "k n"],
    gram: Float[Array, "n n"],
    s2: ArrayLike,
    scale2: ArrayLike,
) -> tuple[Float[Array, "k n"], Float[Array, "n n"]]:
    """The Gaussian law of a mixture's logits at x ~ N(m_k, s² I), for every k (eq. (G1)).

    A mixture Σ_n ν_n N(c_n, τ² I) has logits ℓ_n = log ν_n + (x·c_n − |c_n|²/2)/τ² (eq. (M2)),
    affine in x; under x = m_k + s z they are Gaussian with mean log ν_n + (m_k·c_n − |c_n|²/2)/τ²
    and covariance s² (c_n·c_m)/τ⁴. Both `GramState.logit_law` (q's logits) and
    `TargetStatistics.logit_law` (p's logits) are this law.

    **Arguments:**

    - `log_weights`: log ν, (n,).
    - `cross`: m_k·c_n, (K, n).
    - `gram`: c_n·c_m, (n, n).
    - `s2`: s², the variance of x.
    - `scale2`: τ², the mixture's variance.

    **Returns:** `(mean, cov)` of shapes (K, n) and (n, n).

    **Example:**
    ```python
    T = jnp.array([[9.0, -9.0], [-9.0, 9.0]])
    mean, cov = gaussian_logit_law(jnp.log(jnp.array([0.5, 0.5])), jnp.zeros((1, 2)), T, 1.0, 1.0)
    # mean = [[log ½ − 4.5, log ½ − 4.5]], cov = T
    ```
    """
    mean = log_weights + (cross - 0.5 * jnp.diag(gram)) / scale2
    return jnp.asarray(mean), jnp.asarray(s2 * gram / scale2**2)


class TargetStatistics(eqx.Module):
    """What the dynamics needs of the target: T = U Uᵀ, log ρ and σ (eq. (R1)).

    **Arguments:**

    - `T`: Gram matrix of the target means, (J, J).
    - `log_weights`: log ρ, (J,).
    - `scale`: σ.

    **Example:**
    ```python
    p = GaussianMixture(jnp.array([[3.0], [-3.0]]), jnp.array([0.6, 0.4]))
    stats = TargetStatistics.from_target(p)
    stats.T  # [[9, -9], [-9, 9]]
    ```
    """

    T: Float[Array, "j j"]
    log_weights: Float[Array, " j"]
    scale: Float[Array, ""]

    @classmethod
    def from_target(cls, target: GaussianMixture) -> "TargetStatistics":
        return cls(target.means @ target.means.T, target.log_weights, target.scale)

    def logit_law(self, state: "GramState") -> tuple[Float[Array, "k j"], Float[Array, "j j"]]:
        """Law of the target logits ℓ^p under x ~ N(m_k, s² I), for every k (eq. (G1)).

        ℓ^p_j = log ρ_j + (x·μ_j − T_jj/2)/σ² has mean log ρ_j + (R_kj − T_jj/2)/σ² and covariance
        s² T/σ⁴ (the same for every k).

        **Arguments:**

        - `state`: the summary statistics (R, Q, logits, log s) of q.

        **Returns:** `(mean, cov)`: row k of `mean` (K, J) is the mean under component k; `cov`
        is (J, J).

        **Example:**
        ```python
        mean, cov = TargetStatistics.from_target(p).logit_law(GramState.from_models(q, p))
        mean.shape, cov.shape  # (K, J), (J, J)
        ```
        """
        return gaussian_logit_law(
            self.log_weights, state.R, self.T, jnp.exp(2 * state.log_scale), self.scale**2
        )


class GramState(eqx.Module):
    """The closed state of the theory: R = M Uᵀ, Q = M Mᵀ, logits a and log s (eq. (R1)).

    **Arguments:**

    - `R`: overlaps with the target means, (K, J).
    - `Q`: overlaps of the variational means, (K, K).
    - `logits`: a, (K,).
    - `log_scale`: log s.

    **Example:**
    ```python
    q = IsotropicMixture(jnp.ones((2, 4)), jnp.zeros(2), 0.0)
    p = GaussianMixture(jnp.eye(4)[:2], jnp.array([0.5, 0.5]))
    GramState.from_models(q, p).Q  # [[4, 4], [4, 4]]
    ```
    """

    R: Float[Array, "k j"]
    Q: Float[Array, "k k"]
    logits: Float[Array, " k"]
    log_scale: Float[Array, ""]

    @classmethod
    def from_models(cls, family: IsotropicMixture, target: GaussianMixture) -> "GramState":
        M = family.means
        return cls(M @ target.means.T, M @ M.T, family.logits, family.log_scale)

    def logit_law(self) -> tuple[Float[Array, "k k"], Float[Array, "k k"]]:
        """Law of q's own logits ℓ^q under x ~ N(m_k, s² I), for every k (eq. (G1)).

        ℓ^q_l = log w_l + (x·m_l − Q_ll/2)/s² has mean log w_l + (Q_kl − Q_ll/2)/s² and
        covariance Q/s² (the same for every k).

        **Returns:** `(mean, cov)`: row k of `mean` (K, K) is the mean under component k; `cov`
        is (K, K).

        **Example:**
        ```python
        mean, cov = GramState.from_models(q, p).logit_law()
        mean.shape, cov.shape  # (K, K), (K, K)
        ```
        """
        s2 = jnp.exp(2 * self.log_scale)
        return gaussian_logit_law(jax.nn.log_softmax(self.logits), self.Q, self.Q, s2, s2)


class Trajectory(eqx.Module):
    """Summary statistics saved along a solve (either route).

    `R` and `Q` are raw dot products (not normalised by d). `objective` is F(θ(t); β(t)) computed
    exactly (eq. (F3)). `result` is diffrax's `RESULTS` item: failures (max steps, a non-finite
    state) are returned, never raised; see `failure`. `final` is the final state (an
    `IsotropicMixture` for the full flow, a `GramState` for the theory).
    """

    ts: Float[Array, " t"]
    R: Float[Array, "t k j"]
    Q: Float[Array, "t k k"]
    weights: Float[Array, "t k"]
    scale: Float[Array, " t"]
    objective: Float[Array, " t"]
    result: dfx.RESULTS
    num_steps: Array
    final: eqx.Module

    def solved(self) -> Bool[Array, ""]:
        """The failure test, traceable (vmap-able): the solve succeeded and every saved number
        is finite. `failure` says which check failed; `all_finite` is the same finiteness test.

        **Returns:** a boolean scalar (for an unbatched trajectory).

        **Example:**
        ```python
        ok = jax.vmap(Trajectory.solved)(trajs)
        ```
        """
        saved = [getattr(self, name) for name in _SAVED]
        return (self.result == dfx.RESULTS.successful) & all_finite(*saved)

    def failure(self) -> str | None:
        """None if the solve succeeded and every saved number is finite, else what went wrong.

        Only for unbatched, concrete trajectories (call it outside `jit`).
        """
        if bool(self.solved()):
            return None
        if self.result != dfx.RESULTS.successful:
            return dfx.RESULTS[self.result]
        bad = next(name for name in _SAVED if not bool(all_finite(getattr(self, name))))
        return f"non-finite values (NaN or inf) in the saved `{bad}`."


_SAVED = ("R", "Q", "weights", "scale", "objective")


def all_finite(*arrays: Array, batch_ndim: int = 0) -> Bool[Array, "*batch"]:
    """Whether every entry of every array is finite, per batch element: the one finiteness test
    of a run (trajectories, flow training records).

    **Arguments:**

    - `arrays`: arrays sharing their leading `batch_ndim` axes.
    - `batch_ndim`: how many leading axes to keep (0: one boolean for everything).

    **Returns:** a boolean array of the batch shape.

    **Example:**
    ```python
    all_finite(loss, masses, kl, batch_ndim=1)  # one flag per seed
    ```
    """
    flags = [jnp.all(jnp.isfinite(a), axis=tuple(range(batch_ndim, jnp.ndim(a)))) for a in arrays]
    return functools.reduce(jnp.logical_and, flags)


def record(state: GramState, objective: Array) -> dict[str, Array]:
    """The per-time record saved by both routes."""
    return dict(
        R=state.R,
        Q=state.Q,
        weights=jax.nn.softmax(state.logits),
        scale=jnp.exp(state.log_scale),
        objective=objective,
    )
