import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from modecollapse._numerics._integrals import gauss_hermite, sigmoid_moment, sigmoid_moments

MS = [0.0, 1e-3, -1e-3, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 50.0, -50.0]
VS = [0.0, 1e-8, 1e-3, 0.1, 0.5, 0.8, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1e3, 1e4]


@functools.cache
def _poly(n: int) -> tuple[float, ...]:
    """σ^{(n)} = P_n(σ), coefficients highest degree first (independent of the module's own)."""
    p = np.poly1d([1.0, 0.0])
    ds = np.poly1d([-1.0, 1.0, 0.0])
    for _ in range(n):
        p = p.deriv() * ds
    return tuple(p.coeffs)


def _f(n: int, x: float) -> float:
    """f_n(x) in plain float64 scalar arithmetic, accurate in both tails."""
    if n == -1:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    e = math.exp(-abs(x))
    s = e / (1.0 + e)  # σ(−|x|)
    if n == 0:
        return s if x < 0 else 1.0 - s
    out = 0.0
    for c in _poly(n):
        out = out * s + c
    return out if (x <= 0 or n % 2 == 1) else -out


@functools.cache
def _reference(n: int, m: float, v: float) -> float:
    """E[f_n(m + √v Z)] by adaptive quadrature in z, broken at the kink/step z0 = −m/√v."""
    if v == 0:
        return _f(n, m)
    sd = math.sqrt(v)
    z0 = -m / sd
    pts = list(np.arange(-13.0, 13.5, 2.0)) + [
        z0 + d / sd for d in (0, 1, -1, 4, -4, 12, -12, 40, -40)
    ]
    pts = np.unique(np.clip(pts, -13.0, 13.0))
    c = 1.0 / math.sqrt(2.0 * math.pi)

    def integrand(z):
        return _f(n, m + sd * z) * c * math.exp(-0.5 * z * z)

    return math.fsum(
        integrate.quad(integrand, a, b, epsabs=1e-15, epsrel=1e-13, limit=100)[0]
        for a, b in zip(pts[:-1], pts[1:])
    )


def _grid():
    m, v = np.meshgrid(np.array(MS), np.array(VS), indexing="ij")
    return m, v


@pytest.mark.parametrize("n", [-1, 0, 1, 2])
def test_values_against_quad(n):
    m, v = _grid()
    ref = np.vectorize(functools.partial(_reference, n))(m, v)
    out = np.asarray(sigmoid_moment(n, m, v))
    assert out.shape == m.shape and out.dtype == np.float64
    err = np.abs(out - ref)
    i = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= 1e-9, f"n={n}: max abs error {err.max():.3e} at m={m[i]}, v={v[i]}"


@pytest.mark.parametrize("n", [3, 4, 6])
def test_values_higher_derivatives(n):
    m, v = np.meshgrid(
        np.array([0.0, 0.5, -1.0, 3.0, -10.0]), np.array([0.3, 0.79, 0.81, 4.0, 50.0])
    )
    ref = np.vectorize(functools.partial(_reference, n))(m, v)
    err = np.abs(np.asarray(sigmoid_moment(n, m, v)) - ref)
    assert err.max() <= 1e-9, f"n={n}: max abs error {err.max():.3e}"


@pytest.mark.parametrize("n", [-1, 0, 1, 2, 3, 5])
def test_zero_variance(n):
    m = np.array(MS + [0.3, -1.7, 25.0, -35.0])
    # f_n by nested autodiff of jax.nn.sigmoid: an implementation independent of the module's.
    f = jax.nn.softplus if n == -1 else jax.nn.sigmoid
    for _ in range(max(n, 0)):
        f = jax.grad(f)
    expected = np.asarray(jax.vmap(f)(jnp.asarray(m)))
    out = np.asarray(sigmoid_moment(n, m, 0.0))
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-14)


# Points on both sides of the switch between the two quadratures (v = 0.8), and large v.
POINTS = [(0.3, 500.0), (-1.2, 0.7), (1.2, 0.9), (-2.0, 0.79), (-2.0, 0.81), (0.5, 5.0), (3.0, 0.1)]


@pytest.mark.parametrize("n", [-1, 0, 1, 2])
@pytest.mark.parametrize("m, v", POINTS)
def test_jvp(n, m, v):
    grad_m, grad_v = jax.grad(sigmoid_moment, argnums=(1, 2))(n, m, v)
    # eq. (I1): the custom_jvp rule (up to round-off from differently fused kernels).
    np.testing.assert_allclose(grad_m, sigmoid_moment(n + 1, m, v), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(grad_v, 0.5 * sigmoid_moment(n + 2, m, v), rtol=1e-14, atol=1e-16)
    # ... and consistent with the values themselves.
    hm, hv = 1e-4, 1e-4 * max(1.0, v)
    fd_m = (sigmoid_moment(n, m + hm, v) - sigmoid_moment(n, m - hm, v)) / (2 * hm)
    fd_v = (sigmoid_moment(n, m, v + hv) - sigmoid_moment(n, m, v - hv)) / (2 * hv)
    np.testing.assert_allclose(grad_m, fd_m, rtol=0, atol=1e-7)
    np.testing.assert_allclose(grad_v, fd_v, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n", [-1, 0, 2])
def test_grad_at_zero_variance(n):
    m = jnp.array([0.0, 0.4, -3.0, 50.0, -50.0])
    v = jnp.zeros_like(m)
    grad_m, grad_v = jax.vmap(jax.grad(sigmoid_moment, argnums=(1, 2)), in_axes=(None, 0, 0))(
        n, m, v
    )
    assert jnp.all(jnp.isfinite(grad_m)) and jnp.all(jnp.isfinite(grad_v))
    np.testing.assert_allclose(grad_m, sigmoid_moment(n + 1, m, 0.0), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(grad_v, 0.5 * sigmoid_moment(n + 2, m, 0.0), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("n", [-1, 1])
def test_second_derivatives(n):
    def f(mv):
        return sigmoid_moment(n, mv[0], mv[1])

    hess = jax.hessian(f)
    for mv in ([0.7, 0.0], [-0.3, 0.5], [0.7, 2.0], [4.0, 300.0]):
        assert jnp.all(jnp.isfinite(hess(jnp.array(mv))))
    mv = jnp.array([0.7, 2.0])
    m, v = mv
    expected = jnp.array(
        [
            [sigmoid_moment(n + 2, m, v), 0.5 * sigmoid_moment(n + 3, m, v)],
            [0.5 * sigmoid_moment(n + 3, m, v), 0.25 * sigmoid_moment(n + 4, m, v)],
        ]
    )
    np.testing.assert_allclose(hess(mv), expected, rtol=1e-14, atol=1e-15)
    grad = jax.grad(f)
    h = 1e-4
    fd = jnp.stack([(grad(mv + h * e) - grad(mv - h * e)) / (2 * h) for e in jnp.eye(2)])
    np.testing.assert_allclose(hess(mv), fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n", [-1, 0, 1, 2, 3])
def test_float32(n):
    m, v = _grid()
    out32 = sigmoid_moment(n, jnp.asarray(m, jnp.float32), jnp.asarray(v, jnp.float32))
    assert out32.dtype == jnp.float32
    assert jnp.all(jnp.isfinite(out32))
    out64 = np.asarray(sigmoid_moment(n, m, v))  # checked against quad above
    err = np.abs(np.asarray(out32, np.float64) - out64) / np.maximum(1.0, np.abs(out64))
    assert err.max() <= 1e-5, f"n={n}: float32 max (relative for |E| > 1) error {err.max():.2e}"
    grad_m, grad_v = jax.vmap(jax.grad(sigmoid_moment, argnums=(1, 2)), in_axes=(None, 0, 0))(
        n, jnp.asarray(m.ravel(), jnp.float32), jnp.asarray(v.ravel(), jnp.float32)
    )
    assert grad_m.dtype == jnp.float32
    assert jnp.all(jnp.isfinite(grad_m)) and jnp.all(jnp.isfinite(grad_v))


def test_vmap_jit(getkey):
    m = 10 * jax.random.normal(getkey(), (100,))
    v = jnp.exp(4 * jax.random.normal(getkey(), (100,))).at[:5].set(0.0)
    for n in (-1, 0, 1):
        direct = sigmoid_moment(n, m, v)
        batched = jax.jit(jax.vmap(functools.partial(sigmoid_moment, n)))(m, v)
        assert batched.shape == (100,)
        np.testing.assert_allclose(batched, direct, rtol=1e-13, atol=1e-15)
        grad = jax.grad(functools.partial(sigmoid_moment, n), argnums=(0, 1))
        grads = jax.jit(jax.vmap(grad))(m, v)
        assert all(jnp.all(jnp.isfinite(g)) for g in grads)
    # Broadcasting of m against v.
    assert sigmoid_moment(0, jnp.zeros((3, 1)), jnp.ones((4,))).shape == (3, 4)


def test_invalid_order():
    with pytest.raises(ValueError, match="^`n` must be"):
        sigmoid_moment(-2, 0.0, 1.0)


def test_gauss_hermite():
    z, w = gauss_hermite(20)
    assert z.shape == w.shape == (20,)
    np.testing.assert_allclose(np.sum(w), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.sum(w * z**2), 1.0, rtol=1e-13)
    np.testing.assert_allclose(np.sum(w * z**4), 3.0, rtol=1e-13)
    np.testing.assert_allclose(np.sum(w * np.cos(z)), np.exp(-0.5), rtol=1e-13)


# --- The joint kernel `sigmoid_moments` (eqs. (I5)–(I7)) ---------------------------------------

# A dense grid (m: 0, ±1e-4 … ±50 log-spaced; v: 0, 1e-10 … 1e4 log-spaced, 0.8, 1) and random
# points, with reference values by adaptive quadrature (scipy.integrate.quad_vec), written by
# benchmarks/kernel_accuracy.py; every (m, v) is representable in float32.
_TABLE = Path(__file__).parent / "data" / "integrals_reference.npz"
ORDERS = (-1, 0, 1, 2, 3, 4, 5, 6)
TOL64 = {-1: 1e-12, 0: 1e-12, 1: 1e-12, 2: 1e-12, 3: 1e-12, 4: 1e-12, 5: 2e-11, 6: 1e-10}


@functools.cache
def _table():
    data = np.load(_TABLE)
    assert tuple(data["orders"]) == ORDERS
    return data["m"], data["v"], data["reference"]


def test_reference_table_is_quad():
    # The stored reference is the quadrature of this file (spot check on a few rows).
    m, v, ref = _table()
    for i in np.random.default_rng(0).choice(m.size, 6, replace=False):
        for k, n in enumerate(ORDERS[:5]):
            assert abs(ref[k, i] - _reference(n, float(m[i]), float(v[i]))) <= 1e-13


def test_dense_grid_float64():
    m, v, ref = _table()
    assert m.size > 3000 and np.sum(v == 0) > 50 and np.min(v[v > 0]) <= 1.1e-10
    out = sigmoid_moments(ORDERS, m, v)
    for n, o, r in zip(ORDERS, out, ref):
        assert o.dtype == jnp.float64 and o.shape == m.shape
        err = np.abs(np.asarray(o) - r)
        i = np.argmax(err)
        assert err[i] <= TOL64[n], f"n={n}: {err[i]:.2e} at m={m[i]}, v={v[i]}"


def test_dense_grid_float32():
    m, v, ref = _table()
    out = sigmoid_moments(ORDERS[:6], jnp.asarray(m, jnp.float32), jnp.asarray(v, jnp.float32))
    for n, o, r in zip(ORDERS, out, ref):
        assert o.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(o)))
        err = np.abs(np.asarray(o, np.float64) - r)
        # softplus reaches ≈ 50, where one float32 ulp is 3.8e-6: relative there.
        err = err / np.maximum(1.0, np.abs(r)) if n == -1 else err
        i = np.argmax(err)
        assert err[i] <= 1e-6, f"n={n}: {err[i]:.2e} at m={m[i]}, v={v[i]}"


def test_random_points_against_quad(getkey):
    m = np.asarray(jax.random.uniform(getkey(), (8,), minval=-50.0, maxval=50.0))
    v = np.exp(np.asarray(jax.random.uniform(getkey(), (8,), minval=-23.0, maxval=9.2)))
    out = sigmoid_moments((-1, 0, 1, 2, 3, 4), m, v)
    for n, o in zip((-1, 0, 1, 2, 3, 4), out):
        ref = np.array([_reference(n, float(a), float(b)) for a, b in zip(m, v)])
        np.testing.assert_allclose(o, ref, rtol=0, atol=1e-12)


def test_joint_matches_single_and_repeats():
    m, v = _grid()
    joint = sigmoid_moments((2, -1, 0, 2), m, v)
    assert len(joint) == 4
    np.testing.assert_array_equal(joint[0], joint[3])
    for n, o in zip((2, -1, 0), joint):
        np.testing.assert_allclose(o, sigmoid_moment(n, m, v), rtol=1e-15, atol=1e-16)


def test_zero_and_negative_variance():
    m = np.array(MS + [0.3, -1.7, 25.0, -35.0])
    orders = (-1, 0, 1, 2, 3, 4)
    at_zero = sigmoid_moments(orders, m, 0.0)
    negative = sigmoid_moments(orders, m, -1e-3)
    for n, a, b in zip(orders, at_zero, negative):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, [_f(n, x) for x in m], rtol=1e-15, atol=1e-15)


def _joint_sum(orders, mv):
    # One scalar made of every order, to differentiate the joint kernel as a whole.
    return sum((k + 1.0) * o for k, o in enumerate(sigmoid_moments(orders, mv[0], mv[1])))


@pytest.mark.parametrize("mv", [(0.7, 0.0), (-0.3, 0.5), (1.2, 0.9), (-4.0, 30.0), (2.0, 800.0)])
def test_joint_derivatives(mv):
    orders = (-1, 0, 2)
    mv = jnp.array(mv)
    m, v = mv
    shifted = dict(zip(range(-1, 7), sigmoid_moments(tuple(range(-1, 7)), m, v)))
    grad = jax.grad(functools.partial(_joint_sum, orders))(mv)
    hess = jax.hessian(functools.partial(_joint_sum, orders))(mv)
    weights = [(k + 1.0, n) for k, n in enumerate(orders)]
    # eq. (I1) once and twice.
    expected_grad = [
        sum(c * shifted[n + 1] for c, n in weights),
        sum(c * 0.5 * shifted[n + 2] for c, n in weights),
    ]
    hmm = sum(c * shifted[n + 2] for c, n in weights)
    hmv = sum(c * 0.5 * shifted[n + 3] for c, n in weights)
    hvv = sum(c * 0.25 * shifted[n + 4] for c, n in weights)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hess, [[hmm, hmv], [hmv, hvv]], rtol=1e-13, atol=1e-15)
    assert bool(jnp.all(jnp.isfinite(hess)))
    if mv[1] > 0:  # finite differences of the values themselves
        h = 1e-4 * jnp.array([1.0, max(1.0, float(mv[1]))])
        fd = [
            (_joint_sum(orders, mv + h * e) - _joint_sum(orders, mv - h * e)) / (2 * h @ e)
            for e in jnp.eye(2)
        ]
        np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7)


def test_joint_float32_vmap_jit(getkey):
    m = 10 * jax.random.normal(getkey(), (64,), jnp.float32)
    v = jnp.exp(4 * jax.random.normal(getkey(), (64,), jnp.float32)).at[:5].set(0.0)
    orders = (-1, 0, 1)
    direct = sigmoid_moments(orders, m, v)
    batched = jax.jit(jax.vmap(functools.partial(sigmoid_moments, orders)))(m, v)
    for a, b in zip(direct, batched):
        assert a.dtype == b.dtype == jnp.float32 and a.shape == (64,)
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
    grads = jax.vmap(jax.grad(lambda a, b: sigmoid_moments(orders, a, b)[1], (0, 1)))(m, v)
    assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in grads)
    assert sigmoid_moments((0, 1), jnp.zeros((3, 1)), jnp.ones((4,)))[1].shape == (3, 4)


@pytest.mark.parametrize("orders", [(), (0, -2), (1, 7, -3), (True,)])
def test_invalid_orders(orders):
    with pytest.raises(ValueError, match="^`orders` must be") as info:
        sigmoid_moments(orders, 0.0, 1.0)
    assert "\n" not in str(info.value)


# --- The fast rule (eq. (I6)) ----------------------------------------------------------------

# The probit mixture's sup errors over x (docs/theory.md, eq. (I6)): 8.1e-10, 6.2e-10, 5.2e-10,
# 6.9e-10, 4.2e-9 and 3.0e-8 for n = −1 … 4; they bound its error at every (m, v).
TOL_FAST = {-1: 1e-9, 0: 1e-9, 1: 1e-9, 2: 1e-9, 3: 5e-9, 4: 4e-8}


def _mixture_error(n: int, x: np.ndarray, scales, weights) -> np.ndarray:
    """f_n(x) − Σ_k a_k ∂_x^n Φ(x/s_k), from scipy's Φ and numpy's Hermite polynomials."""
    from scipy.special import ndtr

    u = x[:, None] / np.asarray(scales)
    pdf = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    if n == -1:
        terms = x[:, None] * ndtr(u) + np.asarray(scales) * pdf
    elif n == 0:
        terms = ndtr(u)
    else:
        he = np.polynomial.hermite_e.hermeval(u, [0.0] * (n - 1) + [1.0])
        terms = (-1.0) ** (n - 1) * he * pdf / np.asarray(scales) ** n
    exact = np.array([_f(n, float(t)) for t in x])
    return exact - terms @ np.asarray(weights)


def test_probit_mixture_stated_sup_errors():
    # The stored bounds are the sup over x of the mixture's error, recomputed here independently
    # on a grid of spacing 1e-3 over [−60, 60] (both signs: the errors are odd or even).
    from modecollapse._numerics import _integrals

    scales, weights = _integrals._PROBIT_SCALES, _integrals._PROBIT_WEIGHTS
    assert abs(math.fsum(weights) - 1.0) < 1e-15 and min(weights) > 0
    x = np.linspace(-60.0, 60.0, 120001)
    for n, stated in _integrals._PROBIT_ERROR.items():
        sup = float(np.max(np.abs(_mixture_error(n, x, scales, weights))))
        assert 0.9 * stated <= sup <= 1.02 * stated, f"n={n}: sup {sup:.3e}, stated {stated:.3e}"


def test_normal_cdf_from_the_pdf():
    # eq. (I8): Φ from φ and the Mills-ratio polynomial, against scipy's ndtr, both tails.
    from scipy.special import ndtr

    from modecollapse._numerics import _integrals

    u = np.concatenate([np.linspace(-40.0, 40.0, 400001), [-1e3, -50.0, 50.0, 1e3, 0.0]])
    pdf = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    out = np.asarray(_integrals._normal_cdf_from_pdf(jnp.asarray(u), jnp.asarray(pdf)))
    assert np.max(np.abs(out - ndtr(u))) <= 1e-15
    assert np.all((out >= 0.0) & (out <= 1.0))


def test_accurate_rule_is_the_trapezoidal_mixture():
    # eq. (I7): the density of the scale 2K integrates to one, its second moment is the
    # logistic variance π²/3, and the trapezoidal mixture's sup errors over x are as stated.
    from scipy import integrate as sint

    from modecollapse._numerics import _integrals

    g = _integrals._kolmogorov_scale_density
    mass = sint.quad(lambda t: float(g(np.array([t]))[0]), 0.0, 20.0, limit=200)[0]
    second = sint.quad(lambda t: t * t * float(g(np.array([t]))[0]), 0.0, 20.0, limit=200)[0]
    assert abs(mass - 1.0) < 1e-12 and abs(second - math.pi**2 / 3) < 1e-11
    scales, weights = _integrals._mixture("accurate")
    assert len(scales) == 27 and abs(math.fsum(weights) - 1.0) < 1e-15
    x = np.linspace(-60.0, 60.0, 120001)
    bounds = {-1: 3e-14, 0: 2e-14, 1: 2e-14, 2: 2e-14, 3: 2e-14, 4: 1e-13, 5: 1e-12, 6: 1e-11}
    for n, bound in bounds.items():
        sup = float(np.max(np.abs(_mixture_error(n, x, scales, weights))))
        assert sup <= bound, f"n={n}: sup {sup:.2e}"


@pytest.mark.parametrize("m, v", [(300.0, 2e6), (-120.0, 1e8), (7.0, 3e5), (-1e3, 0.5)])
def test_fast_rule_beyond_the_stated_range(m, v):
    # The mixture's error bound holds for every (m, v): checked against quadrature far outside
    # |m| ≤ 50, v ≤ 1e4.
    out = sigmoid_moments(tuple(TOL_FAST)[:5], m, v, kernel="fast")
    for n, o in zip(TOL_FAST, out):
        assert abs(float(o) - _reference(n, m, v)) <= TOL_FAST[n] * (1 + 1e-12 * abs(m))


def test_fast_rule_on_the_dense_grid():
    m, v, ref = _table()
    out = sigmoid_moments(tuple(TOL_FAST), m, v, kernel="fast")
    for n, o, r in zip(TOL_FAST, out, ref):
        err = np.abs(np.asarray(o) - r)
        i = np.argmax(err)
        assert err[i] <= TOL_FAST[n], f"n={n}: {err[i]:.2e} at m={m[i]}, v={v[i]}"
    # It is a different rule: the float64 values differ from the accurate ones beyond rounding.
    accurate = sigmoid_moments((0,), m, v)[0]
    assert float(jnp.max(jnp.abs(out[1] - accurate))) > 1e-10


def test_fast_rule_keeps_float32_and_zero_variance():
    m, v, _ = _table()
    m32, v32 = jnp.asarray(m, jnp.float32), jnp.asarray(v, jnp.float32)
    for a, b in zip(
        sigmoid_moments((-1, 0, 1), m32, v32, kernel="fast"), sigmoid_moments((-1, 0, 1), m32, v32)
    ):
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)  # float32: the same rule either way
    x = np.array([-30.0, -1.0, 0.0, 2.5, 40.0])
    np.testing.assert_array_equal(
        sigmoid_moments((0,), x, 0.0, kernel="fast")[0], sigmoid_moments((0,), x, 0.0)[0]
    )


@pytest.mark.parametrize("m, v", [(0.3, 2.0), (-4.0, 30.0), (2.0, 800.0)])
def test_fast_rule_heat_equation(m, v):
    # eq. (I1) holds within the rule: its derivatives are its own higher orders.
    gm, gv = jax.grad(lambda a, b: sigmoid_moments((0,), a, b, kernel="fast")[0], (0, 1))(m, v)
    s1, s2 = sigmoid_moments((1, 2), m, v, kernel="fast")
    np.testing.assert_allclose(gm, s1, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(gv, 0.5 * s2, rtol=1e-13, atol=1e-16)


def test_invalid_kernel():
    with pytest.raises(ValueError, match="^`kernel` must be one of") as info:
        sigmoid_moments((0,), 0.0, 1.0, kernel="fastest")
    assert "\n" not in str(info.value)
