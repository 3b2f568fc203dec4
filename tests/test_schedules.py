import jax
import jax.numpy as jnp
import numpy as np

import modecollapse as mc


def test_values():
    lin = mc.LinearSchedule(0.2, 20.0)
    np.testing.assert_allclose([lin(0.0), lin(10.0), lin(20.0), lin(50.0)], [0.2, 0.6, 1.0, 1.0])
    geo = mc.GeometricSchedule(0.01, 10.0)
    np.testing.assert_allclose([geo(0.0), geo(5.0), geo(10.0), geo(30.0)], [0.01, 0.1, 1.0, 1.0])
    exp = mc.ExponentialSchedule(0.5, 2.0)
    np.testing.assert_allclose(exp(1.0), 1 - 0.5 * np.exp(-2.0))
    assert float(mc.NoAnnealing()(3.0)) == 1.0
    assert lin.breakpoints == (20.0,) and exp.breakpoints == ()


def test_differentiable_in_parameters():
    t = 7.0
    for cls, params in [
        (mc.LinearSchedule, (0.3, 20.0)),
        (mc.GeometricSchedule, (0.05, 12.0)),
        (mc.ExponentialSchedule, (0.2, 0.3)),
    ]:
        grads = jax.grad(lambda p: cls(*p)(t))(jnp.array(params))
        h = 1e-6
        for i in range(2):
            e = jnp.zeros(2).at[i].set(h)
            fd = (cls(*(jnp.array(params) + e))(t) - cls(*(jnp.array(params) - e))(t)) / (2 * h)
            np.testing.assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-10)


def test_vmap_over_time():
    beta = jax.vmap(mc.LinearSchedule(0.0 + 0.5, 4.0))(jnp.linspace(0, 8, 9))
    assert jnp.all(jnp.diff(beta) >= 0) and beta[-1] == 1.0
