"""Lane refill (docs/theory.md, §10, "Lane refill"): every trajectory of `integrate_lanes` is the
vmapped `diffeqsolve` one — the same accepted steps, records to rounding, the same status."""

import tomllib

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modecollapse as mc
from modecollapse._dynamics._refill import integrate_lanes
from modecollapse._dynamics._solve import SolverOptions, integrate
from modecollapse._dynamics._theory import (
    _theory_args,
    _theory_field,
    theory_save,
)
from modecollapse._experiments._config import DEFAULT_TOML, SIMULATION_DEFAULTS, ConfigError
from modecollapse._experiments._sweep import plan_sweep, run_sweep

_SAVED = ("R", "Q", "weights", "scale", "objective")

BASE = (
    DEFAULT_TOML.replace("dim = 64", "dim = 16")
    .replace("t_end = 40.0", "t_end = 20.0")
    .replace("save_points = 41", "save_points = 11")
)


def _plan(n_seeds: int, chunk: int, lanes: int | None = None):
    text = BASE.replace("atol = 1e-9", "atol = 1e-9" + (f"\nlanes = {lanes}" if lanes else ""))
    if lanes == 0:
        text = text.replace("atol = 1e-9", "atol = 1e-9\nlanes = 0")
    text += (
        '\n[sweep]\nparameters = { "variational.init.norm" = [0.5, 4.0], "annealing.beta0" = '
        f"[0.2, 1.0] }}\nseeds = {n_seeds}\nchunk = {chunk}\n"
    )
    return plan_sweep(tomllib.loads(text), "theory")


def _specs(n: int):
    plan = _plan(n, n)
    return mc.sweep_inputs(plan, np.arange(0, 4 * n, 4)[:n] % plan.total)


def _assert_same(lanes_traj, reference, atol=1e-10):
    np.testing.assert_array_equal(np.asarray(lanes_traj.num_steps), np.asarray(reference.num_steps))
    np.testing.assert_array_equal(
        np.asarray(lanes_traj.result._value), np.asarray(reference.result._value)
    )
    for name in _SAVED:
        a, b = np.asarray(getattr(lanes_traj, name)), np.asarray(getattr(reference, name))
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=name)
        ok = np.isfinite(b)
        np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=atol, err_msg=name)
    for a, b in zip(jax.tree.leaves(lanes_traj.final), jax.tree.leaves(reference.final)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@eqx.filter_jit
def _vmapped_theory(specs, options):
    return mc.sweep_theory_solves(specs, options)[0]


def _theory_lanes(specs, options, lanes):
    return mc.sweep_theory_solves(specs, options, lanes)


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "lanes",
    [pytest.param(1, marks=_SLOW), pytest.param(4, marks=_SLOW), 13, pytest.param(32, marks=_SLOW)],
)
def test_lanes_equal_the_vmapped_solve(lanes):
    """13 trajectories of unequal step counts: N not a multiple of L, L = N, L > N."""
    specs, options = _specs(13), SolverOptions()
    reference = _vmapped_theory(specs, options)
    steps = np.asarray(reference.num_steps)
    assert steps.max() > 1.2 * steps.min()  # heterogeneous, so lanes really refill
    traj, iterations = _theory_lanes(specs, options, lanes)
    _assert_same(traj, reference)
    width = min(lanes, 13)
    assert int(iterations) * width >= steps.sum()
    if lanes == 1:
        assert int(iterations) == steps.sum()  # one lane: no step is wasted


def _schedule_problem(n: int):
    """The theory ODE under linear schedules of per-trajectory durations (kinks inside [0, t1])."""
    specs = _specs(n)
    state0, stats, _, rates, dim, ts, divergence, _ = specs
    durations = jnp.linspace(3.0, 15.0, n)
    schedules = jax.vmap(lambda d: mc.LinearSchedule(jnp.asarray(0.2), d))(durations)
    args = jax.vmap(lambda st, sc, r, d, dv: _theory_args(st, sc, r, d, SolverOptions(), dv))(
        stats, schedules, rates, dim, divergence
    )
    return state0, args, ts, durations


@_SLOW
@pytest.mark.parametrize("shared", [False, True])
def test_lanes_step_onto_breakpoints(shared):
    """With kinks (ClipStepSizeController): per-trajectory jump times, or one shared tuple."""
    state0, args, ts, durations = _schedule_problem(9)
    options = SolverOptions()
    if shared:
        durations = jnp.full_like(durations, 7.0)
        args = eqx.tree_at(lambda a: a[1].duration, args, durations)

    def one(y0, a, t, b):
        jumps = (7.0,) if shared else b[None]
        return integrate(_theory_field, y0, a, t, options, theory_save, breakpoints=jumps)

    reference = eqx.filter_jit(jax.vmap(one))(state0, args, ts, durations)
    breakpoints = (7.0,) if shared else durations[:, None]
    traj, _ = eqx.filter_jit(integrate_lanes)(
        _theory_field, state0, args, ts, options, theory_save, lanes=4, breakpoints=breakpoints
    )
    _assert_same(traj, reference)
    plain = eqx.filter_jit(
        jax.vmap(lambda y0, a, t: integrate(_theory_field, y0, a, t, options, theory_save))
    )(state0, args, ts)
    assert np.any(np.asarray(plain.num_steps) != np.asarray(traj.num_steps))  # the kinks count


@_SLOW
def test_lanes_report_max_steps_as_diffeqsolve():
    specs = _specs(11)
    full = _vmapped_theory(specs, SolverOptions())
    max_steps = int(np.median(np.asarray(full.num_steps)))
    options = SolverOptions(max_steps=max_steps)
    reference = _vmapped_theory(specs, options)
    traj, _ = _theory_lanes(specs, options, 3)
    _assert_same(traj, reference)
    failed = np.asarray(traj.result._value) == dfx.RESULTS.max_steps_reached._value
    assert failed.any() and not failed.all()
    assert np.all(np.asarray(traj.num_steps)[failed] == max_steps)
    ok = np.asarray(jax.vmap(mc.Trajectory.solved)(traj))
    np.testing.assert_array_equal(ok, ~failed)


def test_lanes_stop_a_non_finite_state_at_once():
    """A field that turns NaN: diffeqsolve rejects until its step underflows, then spins to
    max_steps; the lane loop reports the same status and count without spinning."""

    def field(t, y, a):
        return jnp.where(t < a, -y + jnp.sin(t), jnp.nan)

    def save(t, y, a):
        return dict(R=y[None, None], Q=y[None, None], weights=y[None], scale=y, objective=y)

    def final(y):
        return mc.GramState(y[None, None], y[None, None], y[None], y)

    n, options = 6, SolverOptions(max_steps=2000)
    a = jnp.asarray([0.5, 2.0, 9.0, 20.0, 3.0, 30.0])  # t1 = 10: four of six break
    y0, ts = jnp.ones(n), jnp.tile(jnp.linspace(0.0, 10.0, 6), (n, 1))
    reference = eqx.filter_jit(
        jax.vmap(lambda y, b, t: integrate(field, y, b, t, options, save, final=final))
    )(y0, a, ts)
    traj, iterations = eqx.filter_jit(integrate_lanes)(
        field, y0, a, ts, options, save, lanes=2, final=final
    )
    _assert_same(traj, reference)
    assert list(np.asarray(traj.result._value) == 0) == [False, False, False, True, False, True]
    assert int(iterations) < options.max_steps


@_SLOW
def test_sweep_labels_with_and_without_lanes(tmp_path):
    plain = run_sweep(_plan(5, 7, lanes=0), str(tmp_path / "plain"))
    lanes = run_sweep(_plan(5, 7, lanes=3), str(tmp_path / "lanes"))
    for field in ("label", "status", "num_steps", "n_covered"):
        np.testing.assert_array_equal(lanes[field], plain[field], err_msg=field)
    np.testing.assert_allclose(lanes["kl"], plain["kl"], rtol=1e-9)


def test_lanes_key_is_validated():
    assert _plan(2, 2).base.simulation.lanes == SIMULATION_DEFAULTS.lanes
    data = tomllib.loads(BASE.replace("atol = 1e-9", "atol = 1e-9\nlanes = -1"))
    with pytest.raises(ConfigError, match=r"^`simulation.lanes`: must be >= 0"):
        mc.parse_experiment(data)
    data = tomllib.loads(BASE.replace("atol = 1e-9", 'atol = 1e-9\nlanes = "many"'))
    with pytest.raises(ConfigError, match=r"^`simulation.lanes`: expected an integer"):
        mc.parse_experiment(data)
