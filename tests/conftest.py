import jax

jax.config.update("jax_enable_x64", True)
# As diffrax and equinox do: every implicit dtype promotion is an error in the tests.
jax.config.update("jax_numpy_dtype_promotion", "strict")

import jax.random as jr  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def getkey():
    """Deterministic key factory: every test sees the same sequence of keys."""
    key = jr.key(5678)

    def _getkey():
        nonlocal key
        key, sub = jr.split(key)
        return sub

    return _getkey
