"""Exact law of the initial summary statistics under random initialisation (docs, eqs. (B1)–(B8)).

Under m_k = c g_k/√d with g_k ~ N(0, I_d) i.i.d. (eq. (B1)), the pair (R(0), Q(0)) is drawn from its
exact joint law at any d with O(J³ + K²(J + K)) work, independent of d: no d-vector is stored.

- R = (c/√d) A Cᵀ with A ~ N(0, 1)^{K×r} and C Cᵀ = T (eqs. (B2)–(B4));
- Q = (c²/d) (A Aᵀ + W) with W ~ Wishart_K(d − r, I) (eq. (B5)), drawn by the Bartlett
  decomposition W = L Lᵀ, which stays exact when d − r < K (singular Wishart; eq. (B6));
- the χ² draws are 2·Gamma(ν/2), accurate for any ν (eq. (B7)).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._numerics._linalg import psd_factor
from .._summary import GramState, TargetStatistics


def _target_factor(T: Float[Array, "j j"]) -> tuple[Float[Array, "j j"], Float[Array, " j"]]:
    """C (J×J) with C Cᵀ = T⁺ (T with eigenvalues clipped to ≥ 0), and the mask of its nonzero
    columns; the number of nonzero columns is the numerical rank r (eq. (B2))."""
    C, _, _, active = psd_factor(T)  # the package's one rank rule (docs, eq. (B2))
    return C, active.astype(T.dtype)


def _bartlett_factor(
    key: PRNGKeyArray, nu: Float[Array, ""], components: int, dtype
) -> Float[Array, "k k"]:
    """Lower-triangular L with L Lᵀ ~ Wishart_K(ν, I), for any integer ν ≥ 0 (eq. (B6)).

    Row i (0-based) has N(0, 1) entries in the columns j < min(i, ν) and L_ii² ~ χ²_{ν−i} when
    i < ν; every other entry is 0, so only the first min(K, ν) columns are nonzero.
    """
    nkey, gkey = jr.split(key)
    idx = jnp.arange(components, dtype=dtype)
    has_pivot = idx < nu  # row i has a pivot iff i < ν  (eq. (B6))
    # χ²_ν = 2 Gamma(ν/2)  (eq. (B7)); the placeholder shape 1 is masked out below.
    shape = jnp.where(has_pivot, 0.5 * (nu - idx), 1.0)
    chi2 = 2.0 * jr.gamma(gkey, shape, dtype=dtype)
    diag = jnp.where(has_pivot, jnp.sqrt(chi2), 0.0)
    Z = jr.normal(nkey, (components, components), dtype=dtype)
    # columns j ≥ ν are empty  (eq. (B6))
    lower = jnp.where(has_pivot[None, :], jnp.tril(Z, -1), 0.0)
    return lower + jnp.diag(diag)


def _sample_overlaps(
    key: PRNGKeyArray,
    T: Float[Array, "j j"],
    components: int,
    dim: Float[Array, ""],
    norm: Float[Array, "*c"],
) -> tuple[Float[Array, "k j"], Float[Array, "k k"]]:
    dtype = T.dtype
    C, active = _target_factor(T)
    rank = jnp.sum(active)
    akey, wkey = jr.split(key)
    # a_k = P g_k ~ N(0, I_r), independent of the orthogonal part  (eq. (B3)). A has J columns;
    # those of zero eigenvalues are masked, leaving r live ones.
    A = jr.normal(akey, (components, T.shape[0]), dtype=dtype)
    L = _bartlett_factor(wkey, dim - rank, components, dtype)
    c = jnp.broadcast_to(norm, (components,))
    R = (c / jnp.sqrt(dim))[:, None] * (A @ C.T)  # (eq. (B4))
    gram = (A * active) @ A.T + L @ L.T  # A Aᵀ + W  (eq. (B5))
    Q = (c[:, None] * c[None, :] / dim) * gram
    Q = 0.5 * (Q + Q.T)
    R = eqx.error_if(
        R, dim < jnp.maximum(rank, 1), "`dim` must be ≥ max(1, rank(T)): the target means span r."
    )
    return R, Q


# Compiled once per (K, J, dtype) for eager callers; inlined when already under `jax.jit`.
# `dim` and `norm` are traced, so sweeps over them do not recompile.
_sample_overlaps_jit = jax.jit(_sample_overlaps, static_argnames="components")


def sample_initial_overlaps(
    key: PRNGKeyArray,
    target_means_gram: Float[ArrayLike, "j j"],
    *,
    components: int,
    dim: ArrayLike,
    norm: ArrayLike,
) -> tuple[Float[Array, "k j"], Float[Array, "k k"]]:
    """Draw (R(0), Q(0)) from their exact joint law under m_k = c g_k/√d (eqs. (B1)–(B7)).

    With T = U Uᵀ of rank r, R = (c/√d) A Cᵀ and Q = (c²/d)(A Aᵀ + W), where C Cᵀ = T,
    A ~ N(0, 1)^{K×r} and W ~ Wishart_K(d − r, I) via its Bartlett factor. Exact for every d ≥ r,
    including singular T (e.g. antipodal targets) and d − r < K (singular W). The work is
    O(J³ + K²(J + K)), independent of d; no d-vector is formed, so d = 10¹² is fine. Compatible
    with `jax.jit` (with `components` static) and `jax.vmap` over `key`.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `target_means_gram`: T = U Uᵀ, (J, J), positive semi-definite. Eigenvalues at or below
      `RANK_RTOL`·J·eps·max|λ| (1000·J·eps·max|λ|) count as zero: they set the rank r.
    - `components`: K, a static Python int.
    - `dim`: d ≥ max(1, r); a traced number, so changing it does not recompile.
    - `norm`: c, a scalar or one per component (K,); traced.

    **Returns:** `(R, Q)` with R = M Uᵀ of shape (K, J) and Q = M Mᵀ of shape (K, K).

    **Example:**
    ```python
    T = jnp.array([[9.0, -9.0], [-9.0, 9.0]])  # antipodal target, rank 1
    R, Q = sample_initial_overlaps(jr.key(0), T, components=3, dim=10**6, norm=1.0)
    R.shape, Q.shape  # (3, 2), (3, 3)
    ```
    """
    if not isinstance(components, int) or isinstance(components, bool) or components < 1:
        raise ValueError(f"`components` must be a Python int ≥ 1, got {components!r}.")
    T = jnp.asarray(target_means_gram)
    T = T.astype(jnp.result_type(T, 0.0))  # a weak 0.0: floats keep their width, ints → float
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"`target_means_gram` must have shape (J, J), got {T.shape}.")
    dim = jnp.asarray(dim, dtype=T.dtype)
    norm = jnp.asarray(norm, dtype=T.dtype)
    if norm.shape not in ((), (components,)):
        raise ValueError(f"`norm` must be a scalar or have shape ({components},).")
    return _sample_overlaps_jit(key, T, components, dim, norm)


def initial_state(
    key: PRNGKeyArray,
    target: TargetStatistics,
    *,
    components: int,
    dim: ArrayLike,
    norm: ArrayLike,
    logits: ArrayLike = 0.0,
    log_scale: ArrayLike = 0.0,
) -> GramState:
    """A `GramState` whose (R, Q) are drawn by `sample_initial_overlaps` (eqs. (B1)–(B7)).

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `target`: the target's statistics; only `target.T` is used.
    - `components`: K, a static Python int.
    - `dim`: d; traced.
    - `norm`: c, a scalar or (K,); traced.
    - `logits`: initial a, a scalar (broadcast) or (K,); default 0 (equal weights).
    - `log_scale`: initial log s, a scalar.

    **Returns:** a `GramState` with R (K, J), Q (K, K), logits (K,) and a scalar log s.

    **Example:**
    ```python
    stats = TargetStatistics.from_target(p)
    state = initial_state(jr.key(0), stats, components=2, dim=512, norm=1.0)
    traj = solve_theory(state, stats, NoAnnealing(), jnp.linspace(0, 10, 11), dim=512)
    ```
    """
    R, Q = sample_initial_overlaps(key, target.T, components=components, dim=dim, norm=norm)
    logits = jnp.broadcast_to(jnp.asarray(logits, dtype=R.dtype), (components,))
    log_scale = jnp.asarray(log_scale, dtype=R.dtype)
    if log_scale.shape != ():
        raise ValueError("`log_scale` must be a scalar (one scale shared by the components).")
    return GramState(R, Q, logits, log_scale)


def sample_initial_states(
    key: PRNGKeyArray,
    n: int,
    target: TargetStatistics,
    *,
    components: int,
    dim: ArrayLike,
    norm: ArrayLike,
    logits: ArrayLike = 0.0,
    log_scale: ArrayLike = 0.0,
) -> GramState:
    """`n` independent `initial_state`s, batched along a leading axis (vmapped over keys).

    **Arguments:**

    - `key`: a JAX PRNG key, split into `n`.
    - `n`: the number of draws, a static Python int.
    - `target`, `components`, `dim`, `norm`, `logits`, `log_scale`: as in `initial_state`,
      shared by all draws.

    **Returns:** a `GramState` with R (n, K, J), Q (n, K, K), logits (n, K) and log s (n,).

    **Example:**
    ```python
    stats = TargetStatistics.from_target(p)
    states = sample_initial_states(jr.key(0), 1000, stats, components=2, dim=64, norm=1.0)
    states.Q.shape  # (1000, 2, 2)
    ```
    """
    draw = lambda k: initial_state(  # noqa: E731
        k,
        target,
        components=components,
        dim=dim,
        norm=norm,
        logits=logits,
        log_scale=log_scale,
    )
    return jax.vmap(draw)(jr.split(key, n))
