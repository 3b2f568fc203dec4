"""The one place where diffrax is called: both routes integrate through `integrate`."""

from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

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


class SolverOptions(eqx.Module):
    """How to integrate: an adaptive solver by name with tolerances, or fixed Euler steps.

    **Arguments:**

    - `solver`: one of "tsit5" (default), "dopri5", "dopri8", "heun", "kvaerno5" (implicit, for
      stiff scale dynamics at large d and η_s).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `max_steps`: the solve fails (reported, never silent) beyond this many steps.
    - `progress`: show a tqdm progress bar.
    - `quadrature`: Gauss–Hermite nodes per dimension for K or J ≥ 3 in the theory (None: the
      accurate default rule; see `gaussian_expectation`).

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

    def __check_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {', '.join(SOLVERS)}, got {self.solver!r}.")


def integrate(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    args: Any,
    ts: Float[Array, " t"],
    options: SolverOptions,
    save: Callable[[Any, Any, Any], Any],
    *,
    fixed_step: float | None = None,
    breakpoints: tuple[float, ...] = (),
    final: Callable[[Any], Any] = lambda y: y,
) -> Trajectory:
    """Integrate dy/dt = vector_field(t, y, args) over [ts[0], ts[-1]] into a `Trajectory`.

    Saves the record `save(t, y, args)` at `ts`, and `final(y)` of the state at the final time.
    With `fixed_step`, uses explicit Euler with that step (the SGD route); otherwise the adaptive
    solver of `options`, stepping exactly onto the schedule's kinks `breakpoints`. Never raises on a
    failed solve: see `Trajectory.failure`.
    """
    if fixed_step is not None:
        solver: dfx.AbstractSolver = dfx.Euler()
        controller: dfx.AbstractStepSizeController = dfx.ConstantStepSize()
        dt0 = fixed_step
    else:
        solver = SOLVERS[options.solver]()
        jumps = [b for b in breakpoints if b > 0]
        controller = dfx.PIDController(rtol=options.rtol, atol=options.atol)
        if jumps:
            controller = dfx.ClipStepSizeController(controller, jump_ts=jnp.asarray(jumps))
        dt0 = None
    saveat = dfx.SaveAt(subs=[dfx.SubSaveAt(ts=ts, fn=save), dfx.SubSaveAt(t1=True)])
    meter = dfx.TqdmProgressMeter() if options.progress else dfx.NoProgressMeter()
    sol = dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        solver,
        ts[0],
        ts[-1],
        dt0,
        y0,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        max_steps=options.max_steps,
        throw=False,
        progress_meter=meter,
    )
    saved, last = sol.ys  # pyright: ignore
    return Trajectory(
        ts=ts,
        **saved,
        result=sol.result,
        num_steps=jnp.asarray(sol.stats["num_steps"]),
        final=final(jax.tree.map(lambda x: x[-1], last)),
    )
