import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modecollapse as mc
from modecollapse._annealing._schedules import adiabatic_log_scale_rate
from modecollapse._dynamics._solve import SolverOptions, integrate_final


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


# --- one table, one constructor


def test_config_kinds_match_the_schedule_table():
    """The jax-free config validates `[annealing]` against the same kinds and parameter names."""
    from modecollapse._experiments._config import ANNEALING_KINDS

    assert ANNEALING_KINDS == {k: mc.schedule_parameters(k) for k in mc.SCHEDULES}


def test_schedule_from_kind_builds_every_kind():
    for kind, cls in mc.SCHEDULES.items():
        names = mc.schedule_parameters(kind)
        params = dict(zip(names, (0.25, 7.0)))
        s = mc.schedule_from_kind(kind, params)
        assert type(s) is cls and all(getattr(s, n) == v for n, v in params.items())
        assert float(s(0.0)) == pytest.approx(params.get("beta0", 1.0))


@pytest.mark.parametrize(
    "kind, params, key",
    [
        ("cosine", {}, "`kind`"),
        ("linear", {"beta0": 0.2}, "`parameters`"),
        ("none", {"rate": 1.0}, "`parameters`"),
    ],
)
def test_schedule_from_kind_one_line_errors(kind, params, key):
    with pytest.raises(ValueError, match=key) as e:
        mc.schedule_from_kind(kind, params)
    assert "\n" not in str(e.value)


def test_design_coordinates_round_trip():
    """(β0, τ) → parameters → τ, with the exponential's documented rate = 3/τ (eq. (A2))."""
    from modecollapse._annealing._schedules import annealing_time, design_kinds, design_parameters

    assert design_kinds() == ("linear", "geometric", "exponential")
    for kind in design_kinds():
        params = design_parameters(kind, 0.1, 40.0)
        assert annealing_time(kind, params) == pytest.approx(40.0)
    s = mc.make_schedule("exponential", 0.1, 40.0)
    assert float(s.rate) == pytest.approx(3.0 / 40.0)
    assert float(s(40.0)) == pytest.approx(1 - 0.9 * np.exp(-3.0))
    with pytest.raises(ValueError, match="`kind`"):
        design_parameters("none", 0.1, 40.0)


# --- abstract or final


def test_schedules_are_abstract_or_final():
    with pytest.raises(TypeError):
        mc.AbstractSchedule()  # type: ignore[abstract]
    concrete = {
        n for n, v in vars(mc.AbstractSchedule).items() if callable(v) or isinstance(v, property)
    }
    abstract = set(mc.AbstractSchedule.__abstractmethods__)
    for cls in mc.SCHEDULES.values():
        assert cls.__bases__ == (mc.AbstractSchedule,) and cls.__subclasses__() == []
        assert abstract <= set(vars(cls))  # every abstract member implemented
        overridden = (concrete - abstract - {"__init__"}) & set(vars(cls))
        assert not {n for n in overridden if not n.startswith("__")}


# --- dtype


@pytest.mark.parametrize("kind", list(mc.SCHEDULES))
def test_float32_parameters_give_float32_beta_under_x64(kind):
    names = mc.schedule_parameters(kind)
    params = {n: np.float32(v) for n, v in zip(names, (0.25, 7.0))}
    s = mc.schedule_from_kind(kind, params)
    with jax.numpy_dtype_promotion("strict"):
        # with float32 parameters a Python t stays weak; NoAnnealing has none: it follows t
        for t in (3.0, np.float32(3.0)) if names else (np.float32(3.0),):
            assert s(t).dtype == jnp.float32
            assert adiabatic_log_scale_rate(s, t).dtype == jnp.float32
        # Python-float parameters follow the dtype of t
        python = mc.schedule_from_kind(kind, {n: float(v) for n, v in params.items()})
        assert python(np.float32(3.0)).dtype == jnp.float32
        assert adiabatic_log_scale_rate(python, np.float32(3.0)).dtype == jnp.float32
        assert python(3.0).dtype == jnp.float64


def test_adiabatic_rate_matches_the_closed_form_in_both_dtypes():
    """−½ β'/β (eq. (S5)) from jax.jvp against the hand derivative of (S2), float32 and float64."""
    for dtype, tol in ((np.float32, 1e-6), (np.float64, 1e-14)):
        b0, tau, t = dtype(0.2), dtype(20.0), dtype(5.0)
        rate = adiabatic_log_scale_rate(mc.LinearSchedule(b0, tau), t)
        expect = -0.5 * ((1 - b0) / tau) / (b0 + (1 - b0) * t / tau)
        assert rate.dtype == dtype
        np.testing.assert_allclose(rate, expect, rtol=tol)


# --- fault 3: the kinks


def test_breakpoints_of_concrete_durations_are_kept():
    for duration in (20.0, np.float64(20.0), np.float32(20.0), jnp.asarray(20.0)):
        assert mc.LinearSchedule(0.2, duration).breakpoints == (20.0,)
        assert mc.GeometricSchedule(0.2, duration).breakpoints == (20.0,)


def test_breakpoints_do_not_hide_bugs():
    """A duration that is not a finite number raises, naming it (before: a NaN kink, silently)."""
    with pytest.raises(ValueError, match="`duration`"):
        _ = mc.LinearSchedule(0.2, np.nan).breakpoints


def _integral_of_beta(schedule, t1, options):
    end = integrate_final(
        lambda t, y, args: args(t),
        jnp.zeros(()),
        schedule,
        0.0,
        t1,
        options,
        breakpoints=schedule.breakpoints,
    )
    return end.y, end.num_steps


def test_traced_duration_has_no_static_kink_and_is_still_correct():
    """Under jit with a traced duration the kink is unknown: `breakpoints` is () by design and the
    adaptive controller resolves the kink; ∫β dt matches the closed form either way (eq. (S2))."""
    options = SolverOptions(rtol=1e-10, atol=1e-12)
    b0, tau, t1 = 0.2, 13.0, 40.0
    exact = b0 * tau + (1 - b0) * tau / 2 + (t1 - tau)
    seen = []

    @jax.jit
    def traced(tau):
        s = mc.LinearSchedule(b0, tau)
        seen.append(s.breakpoints)
        return _integral_of_beta(s, t1, options)

    static_value, static_steps = _integral_of_beta(mc.LinearSchedule(b0, tau), t1, options)
    traced_value, traced_steps = traced(jnp.asarray(tau))
    assert seen == [()]
    np.testing.assert_allclose(static_value, exact, rtol=1e-10)
    np.testing.assert_allclose(traced_value, exact, rtol=1e-8)
    assert int(static_steps) <= int(traced_steps)  # the known kink costs no rejected steps
