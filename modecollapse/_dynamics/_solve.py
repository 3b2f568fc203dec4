"""The one place where diffrax is called: the routes integrate through `integrate`, the collapse
formula through `integrate_final`; both share one `diffeqsolve` call (`_diffeqsolve`)."""

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._numerics._integrals import check_kernel
from .._summary import Trajectory

# The solver registry: one line per solver. The jax-free config validates `simulation.solver`
# against the same names (`_config.SOLVERS`; tests/test_registries.py keeps them equal).
SOLVERS: dict[str, Callable[[], dfx.AbstractSolver]] = {
    "tsit5": dfx.Tsit5,
    "dopri5": dfx.Dopri5,
    "dopri8": dfx.Dopri8,
    "heun": dfx.Heun,
    "kvaerno5": dfx.Kvaerno5,
}


# The adjoint registry: how gradients pass through a solve (diffrax's adjoints).
ADJOINTS: dict[str, Callable[[], dfx.AbstractAdjoint]] = {
    "recursive-checkpoint": dfx.RecursiveCheckpointAdjoint,
    "direct": dfx.DirectAdjoint,
}


class StepCountingEuler(dfx.AbstractSolver):
    """Explicit Euler that counts its steps: with `args = (inner, n0)`, the vector field is
    called with `(inner, n)`.

    `n` is the int32 index of the step (0 for the step from t0), carried in the solver state, so
    it is exact at any number of steps and in any float precision. The SGD route (eq. (E3)) keys
    its fresh particles by it: deriving the index from the float time instead can repeat an
    index (docs/theory.md, §4; issue 11, fault 7).

    **Example:**
    ```python
    field = lambda t, y, a: jnp.asarray(a[1], float)  # dy/dt = n on step n
    sol = dfx.diffeqsolve(dfx.ODETerm(field), StepCountingEuler(), 0.0, 1.0, 0.1, 0.0,
                          args=(None, jnp.zeros((), jnp.int32)))  # y(1) = 0.1 · (0 + … + 9)
    ```
    """

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., dfx.LocalLinearInterpolation]] = (
        dfx.LocalLinearInterpolation
    )

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return jnp.zeros((), jnp.int32)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        control = terms.contr(t0, t1)
        delta = terms.vf_prod(t0, y0, (args[0], solver_state), control)
        y1 = jax.tree.map(jnp.add, y0, delta)
        return y1, None, dict(y0=y0, y1=y1), solver_state + 1, dfx.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class SolverOptions(eqx.Module):
    """How to integrate: an adaptive solver by name with tolerances, or fixed Euler steps.

    **Arguments:**

    - `solver`: one of "tsit5" (default), "dopri5", "dopri8", "heun", "kvaerno5" (implicit, for
      stiff scale dynamics at large d and η_s).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `max_steps`: the solve fails (reported, never silent) beyond this many steps.
    - `progress`: show a tqdm progress bar.
    - `quadrature`: for K or J ≥ 3, an int selects the previous tensor Gauss–Hermite rule with
      that many nodes per dimension (None, the default: the accurate rule; see
      `expected_softmax_stats`).
    - `kernel`: the rule of the 1-D Gaussian kernel in the theory's right-hand side: "accurate"
      (default, eq. (I7)) or "fast" (eq. (I6): a 10-term probit mixture, error ≤ 1e-9 for
      orders ≤ 2 at every (m, v); reverse-KL theory route only).
    - `adjoint`: how `jax.grad` passes through the solve: "recursive-checkpoint" (default,
      diffrax's discretise-then-optimise) or "direct".
    - `throw`: raise on a failed solve (diffrax's `throw`). False (default) for the simulation
      routes, which report failures in `Trajectory.result`; the formula (eq. (P9)) raises.

    **Example:**
    ```python
    opts = SolverOptions(solver="tsit5", rtol=1e-8, atol=1e-10)
    ```
    """

    solver: str = eqx.field(static=True, default="tsit5")
    rtol: float = eqx.field(static=True, default=1e-7)
    atol: float = eqx.field(static=True, default=1e-9)
    max_steps: int = eqx.field(static=True, default=100_000)
    progress: bool = eqx.field(static=True, default=False)
    quadrature: int | None = eqx.field(static=True, default=None)
    adjoint: str = eqx.field(static=True, default="recursive-checkpoint")
    throw: bool = eqx.field(static=True, default=False)
    kernel: str = eqx.field(static=True, default="accurate")

    def __check_init__(self):
        check_kernel(self.kernel)
        if self.solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {', '.join(SOLVERS)}, got {self.solver!r}.")
        if self.adjoint not in ADJOINTS:
            raise ValueError(
                f"`adjoint` must be one of {', '.join(ADJOINTS)}, got {self.adjoint!r}."
            )


Breakpoints = tuple[float, ...] | Float[Array, " b"] | None


def jump_times(breakpoints: Breakpoints) -> Float[Array, " b"] | None:
    """The kinks an adaptive solve steps onto: the positive entries of a tuple (as
    `AbstractSchedule.breakpoints` gives), an array as it is, or None when there are none.

    **Example:** `jump_times((0.0, 20.0))  # Array([20.])`
    """
    if isinstance(breakpoints, tuple):
        jumps = [b for b in breakpoints if b > 0]
        return jnp.asarray(jumps) if jumps else None
    return breakpoints


def adaptive_solver(
    options: SolverOptions, breakpoints: Breakpoints = ()
) -> tuple[dfx.AbstractSolver, dfx.AbstractStepSizeController]:
    """The adaptive solver and step-size controller of `options`: the solver by name and a
    PID controller at (rtol, atol), clipped onto the kinks `breakpoints` (`jump_times`) when
    there are any. The one construction that `integrate`, `integrate_final` and the lane loop
    (`integrate_lanes`) share.

    **Arguments:**

    - `options`: solver name and tolerances.
    - `breakpoints`: as for `integrate`.

    **Returns:** `(solver, controller)`.

    **Example:**
    ```python
    solver, controller = adaptive_solver(SolverOptions(), (20.0,))
    ```
    """
    solver = SOLVERS[options.solver]()
    controller: dfx.AbstractStepSizeController = dfx.PIDController(
        rtol=options.rtol, atol=options.atol
    )
    jumps = jump_times(breakpoints)
    if jumps is not None:
        controller = dfx.ClipStepSizeController(controller, jump_ts=jumps)
    return solver, controller


def _diffeqsolve(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    args: Any,
    t0: Any,
    t1: Any,
    options: SolverOptions,
    saveat: dfx.SaveAt,
    fixed_step: float | None,
    breakpoints: Breakpoints,
) -> dfx.Solution:
    """The one `diffrax.diffeqsolve` call: solver, controller, adjoint and meter from `options`."""
    if fixed_step is not None:
        solver: dfx.AbstractSolver = StepCountingEuler()
        controller: dfx.AbstractStepSizeController = dfx.ConstantStepSize()
        dt0 = fixed_step
    else:
        solver, controller = adaptive_solver(options, breakpoints)
        dt0 = None
    meter = dfx.TqdmProgressMeter() if options.progress else dfx.NoProgressMeter()
    return dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=ADJOINTS[options.adjoint](),
        max_steps=options.max_steps,
        throw=options.throw,
        progress_meter=meter,
    )


def _without_counter(save, t, y, args):
    return save(t, y, args[0])


def integrate(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    args: Any,
    ts: Float[Array, " t"],
    options: SolverOptions,
    save: Callable[[Any, Any, Any], Any],
    *,
    fixed_step: float | None = None,
    breakpoints: Breakpoints = (),
    final: Callable[[Any], Any] = lambda y: y,
) -> Trajectory:
    """Integrate dy/dt = vector_field(t, y, args) over [ts[0], ts[-1]] into a `Trajectory`.

    Saves the record `save(t, y, args)` at `ts`, and `final(y)` of the state at the final time.
    With `fixed_step`, uses explicit Euler with that step (the SGD route), calling
    `vector_field(t, y, (args, n))` with the integer step index n (`StepCountingEuler`, fault 7
    of the house review: an index derived from the float time can repeat); otherwise the adaptive
    solver of `options`, stepping exactly onto the schedule's kinks `breakpoints` (a tuple, as
    `AbstractSchedule.breakpoints` gives, of which the positive ones count; or an array of
    positive times, traced or not). Never raises on a failed solve (unless `options.throw`): see
    `Trajectory.failure`.

    **Returns:** a `Trajectory`.

    **Example:**
    ```python
    traj = integrate(field, y0, args, jnp.linspace(0.0, 10.0, 11), SolverOptions(), save)
    ```
    """
    if fixed_step is not None:
        # the solver swaps the placeholder 0 for its step counter; `save` sees the plain args
        args = (args, jnp.zeros((), jnp.int32))
        save = functools.partial(_without_counter, save)
    saveat = dfx.SaveAt(subs=[dfx.SubSaveAt(ts=ts, fn=save), dfx.SubSaveAt(t1=True)])
    sol = _diffeqsolve(
        vector_field, y0, args, ts[0], ts[-1], options, saveat, fixed_step, breakpoints
    )
    saved, last = sol.ys  # pyright: ignore
    return Trajectory(
        ts=ts,
        **saved,
        result=sol.result,
        num_steps=jnp.asarray(sol.stats["num_steps"]),
        final=final(jax.tree.map(lambda x: x[-1], last)),
    )


class FinalState(eqx.Module):
    """The state at the end of a solve (`integrate_final`).

    **Fields:** `y`, the state at t1; `result`, diffrax's `RESULTS` item; `num_steps`.
    """

    y: Any
    result: dfx.RESULTS
    num_steps: Array


def integrate_final(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    args: Any,
    t0: Any,
    t1: Any,
    options: SolverOptions,
    *,
    breakpoints: Breakpoints = (),
) -> FinalState:
    """Integrate dy/dt = vector_field(t, y, args) from t0 to t1, saving only the final state.

    The same entry as `integrate` (one solver, controller and adjoint choice from `options`), for
    computations that need y(t1) alone, such as the collapse formula (eqs. (P4)–(P7)).

    **Arguments:**

    - `vector_field`, `y0`, `args`: the ODE, its initial state and its arguments.
    - `t0`, `t1`: the interval (arrays or numbers; traced is fine).
    - `options`: solver, tolerances, `max_steps`, `adjoint`, `throw`.
    - `breakpoints`: kinks to step onto exactly, as for `integrate`.

    **Returns:** a `FinalState`.

    **Example:**
    ```python
    y1 = integrate_final(lambda t, y, a: -y, 1.0, None, 0.0, 1.0, SolverOptions()).y  # e^{-1}
    ```
    """
    sol = _diffeqsolve(
        vector_field, y0, args, t0, t1, options, dfx.SaveAt(t1=True), None, breakpoints
    )
    return FinalState(
        y=jax.tree.map(lambda x: x[-1], sol.ys),
        result=sol.result,
        num_steps=jnp.asarray(sol.stats["num_steps"]),
    )
