"""Lane refill: a batch of N adaptive solves stepped by L lanes, a lane that finishes its
trajectory taking the next one (docs/theory.md, §10, "Lane refill").

`jax.vmap` of `diffeqsolve` runs its while loop until the slowest member is done, so a batch
costs max(steps) per member. Here L lanes step in lock-step inside one `jax.lax.while_loop`;
when a lane's trajectory reaches t1 (or fails), its final state, status and step count are
written into (N, ...) buffers by index and the lane loads the next trajectory of the queue.
A batch then costs about sum(steps)/L iterations plus one trajectory's tail.

Every step is diffrax's own: `solver.step`, the controller's `init`/`adapt_step_size` (built by
`adaptive_solver`, as `diffeqsolve` gets it), diffrax's clipping of the last step onto t1, and
saves by `solver.interpolation_cls(...).evaluate` of the accepted step at the requested times
that it covers. The accepted steps are therefore those of `diffeqsolve`, per trajectory.
"""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._summary import Trajectory
from ._solve import Breakpoints, SolverOptions, adaptive_solver, jump_times

# diffrax rounds a proposed step end within 100 ULP of t1 onto t1 (`_integrate._clip_to_end`).
_END_ULPS = 100
# The first step `diffeqsolve` takes with `dt0=None`: it hands the PID controller its wrapped
# (time-direction) term, for which the controller's initial-step rule returns 0.01. Passing it
# explicitly keeps the accepted steps identical (tests/test_refill.py checks the step counts).
_FIRST_STEP = 0.01


class _Start(eqx.Module):
    """What a lane loads when it takes a trajectory (one per trajectory, batched over N)."""

    y: Any
    tnext: Array
    solver_state: Any
    controller_state: Any
    t1: Array
    t1_floor: Array


class _Lane(eqx.Module):
    """The evolving state of one lane (batched over L); `index` = N marks an idle lane."""

    index: Array
    y: Any
    tprev: Array
    tnext: Array
    made_jump: Any
    solver_state: Any
    controller_state: Any
    result: dfx.RESULTS
    num_steps: Array
    save_index: Array


class _Out(eqx.Module):
    """The (N, ...) output buffers, written by trajectory index. `saved` is the pair (states,
    written): the interpolated state at every save time (N, T, ...) and which were reached."""

    saved: Any
    final: Any
    result: dfx.RESULTS
    num_steps: Array


def _take(tree: Any, i: Array | int) -> Any:
    return jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, tree)


def _select(pred: Array, a: Any, b: Any) -> Any:
    """`where(pred, a, b)` leaf by leaf; `pred` has the leading (lane) shape of the leaves."""

    def one(x, y):
        if not eqx.is_array(x) and not eqx.is_array(y) and x is y:
            return x
        x, y = jnp.asarray(x), jnp.asarray(y)
        return jnp.where(pred.reshape(pred.shape + (1,) * (jnp.ndim(x) - pred.ndim)), x, y)

    return jax.tree.map(one, a, b)


def _while(cond, body, init):
    """`jax.lax.while_loop` over the array leaves of `init`; other leaves stay as they are."""
    dynamic, static = eqx.partition(init, eqx.is_array)

    def _body(d):
        out_dynamic, out_static = eqx.partition(body(eqx.combine(d, static)), eqx.is_array)
        assert eqx.tree_equal(out_static, static) is True, "a static leaf changed in the loop"
        return out_dynamic

    out = jax.lax.while_loop(lambda d: cond(eqx.combine(d, static)), _body, dynamic)
    return eqx.combine(out, static)


def _primed_state(solver, terms, t0, t1, y0, args):
    """The solver state, with the first-same-as-last stage f(t0, y0) already evaluated.

    An FSAL Runge–Kutta state is `(first_step, f0)`; on a first step diffrax evaluates f(t0, y0)
    inside `step` for every lane of a vmap at once (`unvmap_any(first_step | made_jump)`), which
    with refills every few iterations would cost every lane one more stage per step. The value
    is the same f(t0, y0) either way.
    """
    state = solver.init(terms, t0, t1, y0, args)
    if (
        isinstance(solver, dfx.AbstractRungeKutta)
        and isinstance(state, tuple)
        and len(state) == 2
        and eqx.is_array(state[0])
        and state[0].dtype == jnp.bool_
    ):
        return jnp.asarray(False), solver.func(terms, t0, y0, args)
    return state


def _prev_floats(t: Array, n: int) -> Array:
    for _ in range(n):
        t = jnp.nextafter(t, jnp.asarray(-jnp.inf, t.dtype))
    return t


def integrate_lanes(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    args: Any,
    ts: Float[Array, "n t"],
    options: SolverOptions,
    save: Callable[[Any, Any, Any], Any],
    *,
    lanes: int,
    breakpoints: Breakpoints | Float[Array, "n b"] = (),
    final: Callable[[Any], Any] = lambda y: y,
) -> tuple[Trajectory, Int[Array, ""]]:
    """Integrate N independent ODEs dy/dt = vector_field(t, y, args) with L lanes that refill.

    The batched counterpart of `integrate` (adaptive solvers only): trajectory n starts from
    `y0[n]` with `args[n]`, saves `save(t, y, args[n])` at `ts[n]` and ends at `ts[n, -1]`. At
    most `lanes` trajectories are stepped at once; a lane whose trajectory is done takes the next
    one. The steps, saved records, `num_steps` and `result` of every trajectory are those of
    `integrate` (docs/theory.md, §10, "Lane refill"): a trajectory that needs more than
    `options.max_steps` steps is reported as `max_steps_reached`, and one whose step interval has
    collapsed (empty or NaN: the state went non-finite) is reported so at once, with the
    `num_steps` that `diffeqsolve` would reach by spinning to `max_steps`. Forward only (one
    `jax.lax.while_loop`: not reverse-differentiable).

    **Arguments:**

    - `vector_field`, `save`, `final`: as for `integrate` (unbatched functions).
    - `y0`, `args`: pytrees whose array leaves all have the leading batch axis N; other leaves
      are shared.
    - `ts`: (N, T) increasing save times per trajectory, from t0 to t1.
    - `options`: solver, tolerances and `max_steps`.
    - `lanes`: L, the trajectories stepped at once (min(L, N) are used).
    - `breakpoints`: kinks to step onto: a tuple shared by all (as `integrate` takes), or an
      (N, b) array of positive times per trajectory.

    **Returns:** `(trajectories, iterations)`: a `Trajectory` batched over N, and the number of
    lock-step iterations (L · iterations lane-steps were executed).

    **Example:**
    ```python
    # y0s, args, ts: batched over N trajectories; field and save as for `integrate`
    trajs, iterations = integrate_lanes(field, y0s, args, ts, SolverOptions(), save, lanes=64)
    ```
    """
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ValueError(f"`lanes` must be a positive integer, got {lanes!r}.")
    if jnp.ndim(ts) != 2:
        raise ValueError(f"`ts` must have shape (N, T), got {jnp.shape(ts)}.")
    n, n_saves = ts.shape
    width = min(lanes, n)
    terms = dfx.ODETerm(vector_field)
    shared = isinstance(breakpoints, tuple) or breakpoints is None
    jumps = jump_times(breakpoints) if shared else breakpoints
    solver, shared_controller = adaptive_solver(options, jumps if shared else ())
    error_order = solver.error_order(terms)
    assert error_order is not None  # every adaptive solver of the registry has one
    has_jumps = jumps is not None

    def controller(i):
        if shared or jumps is None:
            return shared_controller
        return adaptive_solver(options, jumps[i])[1]

    def start(i):
        y, a, t = _take(y0, i), _take(args, i), ts[i]
        tnext, controller_state = controller(i).init(
            terms, t[0], t[-1], y, _FIRST_STEP, a, solver.func, error_order
        )
        tnext = jnp.minimum(tnext, t[-1])
        solver_state = _primed_state(solver, terms, t[0], tnext, y, a)
        return _Start(
            y, tnext, solver_state, controller_state, t[-1], _prev_floats(t[-1], _END_ULPS)
        )

    starts = eqx.filter_vmap(start)(jnp.arange(n))

    def load(index):
        s = _take(starts, jnp.minimum(index, n - 1))
        return _Lane(
            index=index,
            y=s.y,
            tprev=ts[jnp.minimum(index, n - 1), 0],
            tnext=s.tnext,
            made_jump=jnp.zeros(index.shape, bool) if has_jumps else False,
            solver_state=s.solver_state,
            controller_state=s.controller_state,
            result=jax.tree.map(lambda r: jnp.broadcast_to(r, index.shape), dfx.RESULTS.successful),
            num_steps=jnp.zeros(index.shape, jnp.int32),
            save_index=jnp.zeros(index.shape, jnp.int32),
        )

    def lane_step(lane: _Lane):
        i = jnp.minimum(lane.index, n - 1)
        a = _take(args, i)
        y1, y_error, dense_info, solver_state, solver_result = solver.step(
            terms, lane.tprev, lane.tnext, lane.y, a, lane.solver_state, lane.made_jump
        )
        # as diffrax: a NaN error estimate rejects the step (diffrax issue #143)
        y_error = jax.tree.map(lambda x: jnp.where(jnp.isnan(x), jnp.inf, x), y_error)
        keep, tprev, tnext, made_jump, controller_state, controller_result = controller(
            i
        ).adapt_step_size(
            lane.tprev, lane.tnext, lane.y, y1, a, y_error, error_order, lane.controller_state
        )
        t1, floor = starts.t1[i], starts.t1_floor[i]
        tprev = jnp.minimum(tprev, t1)
        clip = tnext > floor
        tnext = jnp.where(clip, jnp.where(keep, t1, tprev + 0.5 * (t1 - tprev)), tnext)
        keep_ = lambda new, old: jnp.where(keep, new, old)  # noqa: E731
        solver_result = dfx.RESULTS.where(keep, solver_result, dfx.RESULTS.successful)
        result = dfx.RESULTS.where(dfx.is_okay(lane.result), solver_result, lane.result)
        result = dfx.RESULTS.where(dfx.is_okay(result), controller_result, result)
        new = _Lane(
            index=lane.index,
            y=jax.tree.map(keep_, y1, lane.y),
            tprev=tprev,
            tnext=tnext,
            made_jump=keep_(made_jump, lane.made_jump) if has_jumps else False,
            solver_state=jax.tree.map(keep_, solver_state, lane.solver_state),
            controller_state=controller_state,
            result=result,
            num_steps=lane.num_steps + 1,
            save_index=lane.save_index,
        )
        return new, keep, dense_info

    def record(lane: _Lane, dense_info, k):
        # the state at the save time; `save` runs once per save after the loop (`records`)
        i = jnp.minimum(lane.index, n - 1)
        t = ts[i, jnp.minimum(k, n_saves - 1)]
        interpolation = solver.interpolation_cls(t0=lane.tprev, t1=lane.tnext, **dense_info)
        return interpolation.evaluate(t), jnp.asarray(True)

    def save_step(old: _Lane, keep, dense_info, k, saved):
        """diffrax's saves of one accepted step: every ts[k] <= its end, in order."""
        rows = jnp.minimum(old.index, n - 1)

        def pending(k):
            due = ts[rows, jnp.minimum(k, n_saves - 1)] <= old.tnext
            return keep & (old.index < n) & (k < n_saves) & due

        def body(carry):
            k, saved = carry
            go = pending(k)
            records = eqx.filter_vmap(record)(old, dense_info, k)
            row = jnp.where(go, old.index, n)
            saved = jax.tree.map(lambda buf, r: buf.at[row, k].set(r, mode="drop"), saved, records)
            return k + go.astype(k.dtype), saved

        return jax.lax.while_loop(lambda c: jnp.any(pending(c[0])), body, (k, saved))

    def body(carry):
        lanes_, out, queue, iterations = carry
        new, keep, dense_info = eqx.filter_vmap(lane_step)(lanes_)
        save_index, saved = save_step(lanes_, keep, dense_info, lanes_.save_index, out.saved)
        new = eqx.tree_at(lambda s: s.save_index, new, save_index)

        i = jnp.minimum(new.index, n - 1)
        going = (new.tprev < starts.t1[i]) & dfx.is_successful(new.result)
        # An empty or NaN step interval short of the end never grows again (the controller
        # scales it): `diffeqsolve` would spin to `max_steps`, so report that now.
        stuck = going & ~(new.tnext > new.tprev) & ~(new.tnext > starts.t1_floor[i])
        done = (new.index < n) & (~going | (new.num_steps >= options.max_steps) | stuck)
        row = jnp.where(done, new.index, n)
        put = lambda buf, v: buf.at[row].set(v, mode="drop")  # noqa: E731
        result = jax.vmap(dfx.RESULTS.where, (0, None, 0))(
            going, dfx.RESULTS.max_steps_reached, new.result
        )
        out = _Out(
            saved=saved,
            final=jax.tree.map(put, out.final, new.y),
            result=jax.tree.map(put, out.result, result),
            num_steps=put(out.num_steps, jnp.where(stuck, options.max_steps, new.num_steps)),
        )
        # refill: the lanes that finished take the next trajectories of the queue, in lane order
        rank = jnp.cumsum(done, dtype=jnp.int32) - 1
        index = jnp.where(done, jnp.minimum(queue + rank, n), new.index)
        lanes_ = _select(done, load(index), new)
        return lanes_, out, queue + jnp.sum(done, dtype=jnp.int32), iterations + 1

    # the save buffers start at y0 (finite, so that `save` can run on every entry afterwards)
    states = jax.tree.map(lambda y: jnp.repeat(jnp.asarray(y)[:, None], n_saves, axis=1), y0)
    out = _Out(
        saved=(states, jnp.zeros((n, n_saves), bool)),
        final=jax.tree.map(lambda y: jnp.zeros_like(y), y0),
        result=jax.tree.map(lambda r: jnp.broadcast_to(r, (n,)), dfx.RESULTS.successful),
        num_steps=jnp.zeros(n, jnp.int32),
    )
    zero = jnp.zeros((), jnp.int32)
    init = (load(jnp.arange(width, dtype=jnp.int32)), out, zero + width, zero)
    _, out, _, iterations = _while(lambda c: jnp.any(c[0].index < n), body, init)

    # `save` once per saved state, vmapped over (N, T): inside the loop it would run on every lane
    # for every pending save of any lane (about three times per step here, docs/theory.md §10).
    # A save time that was never reached (a failed trajectory) stays inf, as diffrax leaves it.
    states, written = out.saved

    def records(t_row, y_row, i):
        a = _take(args, i)
        return jax.vmap(lambda t, y: save(t, y, a))(t_row, y_row)

    saved = jax.vmap(records)(ts, states, jnp.arange(n))
    saved = jax.tree.map(
        lambda r: jnp.where(written.reshape(written.shape + (1,) * (r.ndim - 2)), r, jnp.inf),
        saved,
    )
    traj = jax.vmap(
        lambda t, saved, result, steps, y: Trajectory(
            ts=t, **saved, result=result, num_steps=steps, final=final(y)
        )
    )(ts, saved, out.result, out.num_steps, out.final)
    return traj, iterations
