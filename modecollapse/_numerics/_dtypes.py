"""The one dtype rule of the package: keep the input's floating dtype (as optimistix does).

float32 in gives float32 out, also under `jax_enable_x64`; integers, booleans and Python numbers
become the default float. Constructors use `as_float` (in `eqx.field(converter=...)` or their
`__init__`) instead of `jnp.asarray(x, dtype=float)`, which would turn float32 into float64.
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def as_float(x: ArrayLike, like: ArrayLike | None = None) -> Array:
    """`x` as a floating JAX array: its own float dtype, or `like`'s dtype when given.

    **Arguments:**

    - `x`: an array or number.
    - `like`: an array whose floating dtype to use instead (e.g. the means of a mixture, so
      that its weights and scale match them).

    **Returns:** a JAX array; a float32 `x` stays float32 under x64, an int becomes the default
    float.

    **Example:**
    ```python
    as_float(jnp.ones(2, jnp.float32)).dtype  # float32
    as_float(3).dtype  # the default float (float64 under x64)
    as_float(0.5, like=jnp.ones(2, jnp.float32)).dtype  # float32
    ```
    """
    if like is not None:
        return jnp.asarray(x, dtype=jnp.result_type(as_float(like)))
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.result_type(float))


def common_float(*xs: ArrayLike):
    """The floating dtype of a computation on `xs`: Python numbers adapt (weak), arrays decide.

    **Arguments:**

    - `xs`: arrays or numbers.

    **Returns:** the promoted floating dtype of the array arguments (`as_float` of each), or the
    default float when every argument is a Python number.

    **Example:**
    ```python
    common_float(0.5, jnp.ones(2, jnp.float32))  # float32
    common_float(0.5, 2)  # the default float
    ```
    """
    dtypes = [as_float(x).dtype for x in xs if not isinstance(x, (bool, int, float))]
    if not dtypes:
        return jnp.result_type(float)
    out = dtypes[0]
    for d in dtypes[1:]:
        out = jnp.promote_types(out, d)
    return out
