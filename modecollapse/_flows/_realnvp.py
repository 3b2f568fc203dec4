"""RealNVP: affine coupling layers with alternating halves and a N(0, I_d) base.

docs/theory.md, §15 (equations (NF1)–(NF4)). The unbatched methods (`transform_and_log_det`,
`inverse_and_log_det`, `log_prob_single`, `transform_and_log_prob_single`) act on one point of
shape (d,), as flowjax's do, and are public so that other modules can vmap them; the other methods
vectorise them over any leading batch axes.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


def _standard_normal_log_prob(z: Float[Array, " d"]) -> Float[Array, ""]:
    # log N(z; 0, I_d)  (eq. (NF3))
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class AffineCoupling(eqx.Module):
    """One affine coupling layer (eq. (NF1)).

    The input splits into a conditioning part c and a transformed part u (the first ⌊d/2⌋
    coordinates and the rest, swapped when `flip`); the output is (c, u·exp(ℓ(c)) + t(c)) with the
    bounded log-scale ℓ = b·tanh(h/b) of eq. (NF2).

    **Arguments:**

    - `key`: PRNG key of the conditioner's weights.
    - `dim`: d ≥ 2.
    - `width`: hidden units of the conditioner MLP.
    - `depth`: hidden layers of the conditioner MLP (default 2).
    - `flip`: condition on the second part instead of the first.
    - `scale_bound`: b > 0, the bound on |log-scale| per coordinate (default 2).
    - `init_scale`: factor on the conditioner's last layer at initialisation (default 0.01: the
      layer starts close to the identity).
    - `activation`: the MLP's activation (default tanh, 1-Lipschitz).

    **Example:**
    ```python
    layer = AffineCoupling(jr.key(0), dim=2, width=16)
    y, log_det = layer.transform_and_log_det(jnp.ones(2))
    layer.inverse_and_log_det(y)[0]  # ≈ [1, 1]
    ```
    """

    conditioner: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    flip: bool = eqx.field(static=True)
    scale_bound: float = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        dim: int,
        width: int,
        depth: int = 2,
        flip: bool = False,
        scale_bound: float = 2.0,
        init_scale: float = 0.01,
        activation: Callable = jax.nn.tanh,
    ):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"`dim` must be an integer >= 2, got {dim!r}; RealNVP needs d >= 2.")
        if width < 1 or depth < 1:
            raise ValueError("`width` and `depth` must be >= 1.")
        self.dim = dim
        self.flip = bool(flip)
        self.scale_bound = float(scale_bound)
        n_cond, n_trans = self.split_sizes()
        mlp = eqx.nn.MLP(n_cond, 2 * n_trans, width, depth, activation=activation, key=key)
        last = mlp.layers[-1]
        self.conditioner = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias),
            mlp,
            (init_scale * last.weight, jnp.zeros_like(last.weight[:, 0])),
        )

    def __check_init__(self):
        if not self.scale_bound > 0:
            raise ValueError(f"`scale_bound` must be > 0, got {self.scale_bound}.")

    def split_sizes(self) -> tuple[int, int]:
        """(size of the conditioning part c, size of the transformed part u) (eq. (NF1))."""
        first = self.dim // 2
        return (self.dim - first, first) if self.flip else (first, self.dim - first)

    def _split(self, x: Float[Array, " d"]) -> tuple[Array, Array]:
        first = self.dim // 2
        a, b = x[:first], x[first:]
        return (b, a) if self.flip else (a, b)

    def _join(self, c: Array, u: Array) -> Float[Array, " d"]:
        return jnp.concatenate([u, c] if self.flip else [c, u])

    def _shift_log_scale(self, c: Array) -> tuple[Array, Array]:
        h = self.conditioner(c)
        n = h.shape[0] // 2
        # bounded log-scale ℓ = b·tanh(h/b), |ℓ| ≤ b  (eq. (NF2))
        return h[:n], self.scale_bound * jnp.tanh(h[n:] / self.scale_bound)

    def transform_and_log_det(
        self, x: Float[Array, " d"]
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """y = (c, u·e^ℓ + t) and log|det ∂y/∂x| = Σ ℓ (eq. (NF1))."""
        c, u = self._split(x)
        shift, log_scale = self._shift_log_scale(c)
        return self._join(c, u * jnp.exp(log_scale) + shift), jnp.sum(log_scale)

    def inverse_and_log_det(
        self, y: Float[Array, " d"]
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """x = (c, (v − t)·e^−ℓ) and log|det ∂x/∂y| = −Σ ℓ."""
        c, v = self._split(y)
        shift, log_scale = self._shift_log_scale(c)
        return self._join(c, (v - shift) * jnp.exp(-log_scale)), -jnp.sum(log_scale)


class RealNVP(eqx.Module):
    """A RealNVP normalizing flow q = g#N(0, I_d), g = f_L ∘ … ∘ f_1 (eqs. (NF1)–(NF4)).

    Layer i is an `AffineCoupling` with `flip = (i odd)`, so consecutive layers transform
    alternating halves. Densities are exact: log q(g(z)) = log N(z) − Σ_i log|det ∂f_i| (eq. (NF3)).

    **Arguments:**

    - `key`: PRNG key of the weights.
    - `dim`: d ≥ 2.
    - `layers`: number of coupling layers (default 8).
    - `width`: hidden units per conditioner (default 32).
    - `depth`: hidden layers per conditioner (default 2).
    - `scale_bound`, `init_scale`, `activation`: see `AffineCoupling`.

    **Example:**
    ```python
    flow = RealNVP(jr.key(0), dim=2, layers=4, width=16)
    x, log_q = flow.sample_and_log_prob(jr.key(1), (100,))
    flow.log_prob(x)  # ≈ log_q
    ```
    """

    layers: tuple[AffineCoupling, ...]
    dim: int = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        dim: int,
        layers: int = 8,
        width: int = 32,
        depth: int = 2,
        scale_bound: float = 2.0,
        init_scale: float = 0.01,
        activation: Callable = jax.nn.tanh,
    ):
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"`layers` must be an integer >= 1, got {layers!r}.")
        keys = jr.split(key, layers)
        self.layers = tuple(
            AffineCoupling(k, dim, width, depth, bool(i % 2), scale_bound, init_scale, activation)
            for i, k in enumerate(keys)
        )
        self.dim = dim

    def __check_init__(self):
        if any(layer.dim != self.dim for layer in self.layers):
            raise ValueError("every coupling layer must have the flow's `dim`.")

    # ---- unbatched -------------------------------------------------------------------------

    def transform_and_log_det(
        self, z: Float[Array, " d"]
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """x = g(z) and log|det ∂g/∂z| (eq. (NF3))."""
        log_det = jnp.zeros((), z.dtype)
        for layer in self.layers:
            z, ld = layer.transform_and_log_det(z)
            log_det = log_det + ld
        return z, log_det

    def inverse_and_log_det(
        self, x: Float[Array, " d"]
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """z = g⁻¹(x) and log|det ∂g⁻¹/∂x|."""
        log_det = jnp.zeros((), x.dtype)
        for layer in reversed(self.layers):
            x, ld = layer.inverse_and_log_det(x)
            log_det = log_det + ld
        return x, log_det

    def log_prob_single(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """log q(x) = log N(g⁻¹(x)) + log|det ∂g⁻¹/∂x| of one point x, shape (d,) (eq. (NF3))."""
        z, log_det = self.inverse_and_log_det(x)
        return _standard_normal_log_prob(z) + log_det

    def transform_and_log_prob_single(
        self, z: Float[Array, " d"]
    ) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """(x = g(z), log q(x)) for one base point z, shape (d,) (eq. (NF3)); vmap it for VI."""
        # reparameterised sample and its exact density: log q(g(z)) = log N(z) − log|det|  (NF3)
        x, log_det = self.transform_and_log_det(z)
        return x, _standard_normal_log_prob(z) - log_det

    # ---- vectorised ------------------------------------------------------------------------

    def transform(self, z: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        """x = g(z).

        **Arguments:**

        - `z`: base points, shape (..., d).

        **Returns:** the pushed-forward points, shape (..., d).

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        flow.transform(jnp.zeros((5, 2))).shape  # (5, 2)
        ```
        """
        return jnp.vectorize(lambda v: self.transform_and_log_det(v)[0], signature="(d)->(d)")(z)

    def inverse(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        """z = g⁻¹(x).

        **Arguments:**

        - `x`: points, shape (..., d).

        **Returns:** base points, shape (..., d).

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        flow.inverse(flow.transform(jnp.ones(2)))  # ≈ [1, 1]
        ```
        """
        return jnp.vectorize(lambda v: self.inverse_and_log_det(v)[0], signature="(d)->(d)")(x)

    def log_prob(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        """Exact log q(x) by the inverse pass (eq. (NF3)).

        **Arguments:**

        - `x`: points, shape (..., d).

        **Returns:** log densities, shape (...).

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        flow.log_prob(jnp.zeros((3, 2))).shape  # (3,)
        ```
        """
        return jnp.vectorize(self.log_prob_single, signature="(d)->()")(x)

    def sample(self, key: PRNGKeyArray, sample_shape: tuple[int, ...] = ()) -> Array:
        """Draw x = g(z), z ~ N(0, I_d).

        **Arguments:**

        - `key`: PRNG key.
        - `sample_shape`: leading shape of the output.

        **Returns:** samples of shape `sample_shape + (d,)`.

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        flow.sample(jr.key(1), (10,)).shape  # (10, 2)
        ```
        """
        return self.transform(self._base_noise(key, sample_shape))

    def sample_and_log_prob(
        self, key: PRNGKeyArray, sample_shape: tuple[int, ...] = ()
    ) -> tuple[Array, Array]:
        """Reparameterised samples and their exact log densities, one forward pass (eq. (NF3)).

        **Arguments:**

        - `key`: PRNG key.
        - `sample_shape`: leading shape of the output.

        **Returns:** `(x, log_q)` of shapes `sample_shape + (d,)` and `sample_shape`.

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        x, log_q = flow.sample_and_log_prob(jr.key(1), (10,))
        ```
        """
        return self.transform_and_log_prob(self._base_noise(key, sample_shape))

    def transform_and_log_prob(self, z: Float[Array, "*batch d"]) -> tuple[Array, Array]:
        """(g(z), log q(g(z))) for given base points z, shape (..., d) (eq. (NF3)).

        **Arguments:**

        - `z`: base points, shape (..., d).

        **Returns:** `(x, log_q)` of shapes (..., d) and (...).

        **Example:**
        ```python
        flow = RealNVP(jr.key(0), dim=2)
        x, log_q = flow.transform_and_log_prob(jnp.zeros((4, 2)))
        ```
        """
        return jnp.vectorize(self.transform_and_log_prob_single, signature="(d)->(d),()")(z)

    def _base_noise(self, key: PRNGKeyArray, sample_shape: tuple[int, ...]) -> Array:
        dtype = self.layers[0].conditioner.layers[0].weight.dtype
        return jr.normal(key, tuple(sample_shape) + (self.dim,), dtype=dtype)
