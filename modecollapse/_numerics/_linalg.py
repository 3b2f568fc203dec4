"""The PSD factor and the one rank rule of the package (docs/theory.md, §8b, eq. (RK1)).

Gram matrices (T = U Uᵀ, the embedding Gram of span{m, μ}, the logit covariances of (G1)) are often
singular: antipodal targets, coincident means. Every decision "this eigenvalue is zero" uses one
rule, written here once:

    an eigenvalue λ of an n × n Gram matrix counts as zero when λ ≤ RANK_RTOL · n · eps · max|λ|,

with eps the machine epsilon of the matrix's dtype, so the rule is the same relative precision in
float32 and float64. It sets the rank r of T for the initial law (B2), the span basis of the
projected estimator (E8), and the rank and PSD checks of the experiment's Gram matrices. Factors
that need no rank (`sqrt_psd`) only clip the negative rounding of zero eigenvalues.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

RANK_RTOL = 1000.0
"""Eigenvalues at or below RANK_RTOL · n · eps · max|λ| count as zero (see the module docstring)."""


def rank_rtol(n: int, dtype) -> float:
    """The relative rank tolerance RANK_RTOL · n · eps(dtype) of an n × n Gram matrix.

    **Arguments:**

    - `n`: the matrix size.
    - `dtype`: its floating dtype.

    **Returns:** a Python float; multiply by max|λ| for the absolute threshold.

    **Example:**
    ```python
    rank_rtol(2, jnp.float64)  # 1000 · 2 · 2.2e-16 ≈ 4.4e-13
    ```
    """
    return RANK_RTOL * n * float(np.finfo(dtype).eps)


def nonzero_eigenvalues(
    lam: Float[Array | np.ndarray, " n"], scale: float | None = None
) -> Bool[Array | np.ndarray, " n"]:
    """Which eigenvalues of a Gram matrix count as nonzero under the package's one rule.

    Works on JAX arrays (traced or not) and on NumPy arrays (it returns the same kind).

    **Arguments:**

    - `lam`: the eigenvalues of an n × n Gram matrix, shape (n,).
    - `scale`: the magnitude the matrix was computed from, when larger than max|λ| (for a
      difference such as Q − α αᵀ, the magnitude of Q, so that its cancellation error counts as
      zero); default max|λ|.

    **Returns:** a boolean mask, True where λ > RANK_RTOL · n · eps · max(max|λ|, scale); its
    sum is the numerical rank.

    **Example:**
    ```python
    lam = jnp.linalg.eigvalsh(jnp.array([[9.0, -9.0], [-9.0, 9.0]]))  # [~1e-16, 18]
    nonzero_eigenvalues(lam)  # [False, True]: rank 1
    ```
    """
    xp = np if isinstance(lam, np.ndarray) else jnp
    dtype = lam.dtype
    floor = float(np.finfo(dtype).tiny) if scale is None else max(float(scale), 0.0)
    top = xp.maximum(xp.max(xp.abs(lam), initial=0.0), floor)
    return lam > rank_rtol(lam.shape[-1], dtype) * top


def numerical_rank(gram: Float[Array | np.ndarray, "n n"]) -> Array | int:
    """The numerical rank of a symmetric PSD matrix under the package's one rule.

    **Arguments:**

    - `gram`: an (n, n) symmetric matrix (JAX or NumPy).

    **Returns:** the rank, an integer array (JAX) or int (NumPy).

    **Example:**
    ```python
    numerical_rank(jnp.array([[9.0, -9.0], [-9.0, 9.0]]))  # 1
    ```
    """
    if isinstance(gram, np.ndarray):
        return int(np.sum(nonzero_eigenvalues(np.linalg.eigvalsh(0.5 * (gram + gram.T)))))
    return jnp.sum(nonzero_eigenvalues(jnp.linalg.eigvalsh(0.5 * (gram + gram.T))))


def psd_factor(
    gram: Float[Array, "n n"],
) -> tuple[Float[Array, "n n"], Float[Array, " n"], Float[Array, "n n"], Bool[Array, " n"]]:
    """Eigen-factor C = V Λ₊^½ of a PSD matrix with the numerically-zero columns set to zero.

    **Arguments:**

    - `gram`: an (n, n) symmetric PSD matrix (JAX); symmetrised before the eigendecomposition.

    **Returns:** `(C, lam, V, active)`: C Cᵀ = gram up to the dropped eigenvalues, the
    eigenvalues (ascending), the eigenvectors, and the mask of the columns kept
    (`nonzero_eigenvalues`), whose sum is the rank r.

    **Example:**
    ```python
    C, lam, V, active = psd_factor(jnp.array([[9.0, -9.0], [-9.0, 9.0]]))
    jnp.sum(active)  # 1
    ```
    """
    lam, V = jnp.linalg.eigh(0.5 * (gram + gram.T))
    active = jnp.asarray(nonzero_eigenvalues(lam))
    return V * jnp.sqrt(jnp.where(active, lam, 0.0)), lam, V, active


def sqrt_psd(cov: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """A square root L with L Lᵀ = cov, by eigendecomposition with negative rounding clipped.

    Never a Cholesky factor: `cov` may be singular (eq. (G1)).

    **Arguments:**

    - `cov`: an (n, n) symmetric PSD matrix.

    **Returns:** L, (n, n).

    **Example:**
    ```python
    L = sqrt_psd(jnp.array([[1.0, 1.0], [1.0, 1.0]]))
    L @ L.T  # ≈ [[1, 1], [1, 1]]
    ```
    """
    lam, vecs = jnp.linalg.eigh(cov)
    return vecs * jnp.sqrt(jnp.clip(lam, 0.0, None))
