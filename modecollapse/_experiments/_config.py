"""The experiment file (TOML): parsing, validation and the built-in default.

Every problem raises `ConfigError` with a one-line message that names the offending key in
backticks. The CLI turns it into exit status 2, with nothing written.
"""

import dataclasses
import math
import tomllib
from typing import Any

ESTIMATORS = ("exact", "mc-fixed", "mc-fresh", "mc-fresh-projected")
# The schedule kinds and their parameters, jax-free: the same names as the one schedule table
# `_annealing._schedules.SCHEDULES` (tests/test_schedules.py keeps them equal).
ANNEALING_KINDS = {
    "none": (),
    "linear": ("beta0", "duration"),
    "geometric": ("beta0", "duration"),
    "exponential": ("beta0", "rate"),
}
TARGET_MEANS_KINDS = {
    "antipodal": ("norm",),
    "orthogonal": ("norms",),
    "gram": ("T",),
    "random": ("norm",),
}
INIT_KINDS = {"random": ("norm",), "overlaps": ("R", "Q")}
SOLVERS = ("tsit5", "dopri5", "dopri8", "heun", "kvaerno5")
# The objective kinds, jax-free: the same names as the divergence registry
# `_objective.DIVERGENCES` (tests/test_registries.py keeps them equal).
OBJECTIVE_KINDS = ("reverse-kl", "renyi", "forward-kl")
RENYI_QUADRATURES = ("accurate", "fast")  # `_numerics._tilted.RULES`
PRECISIONS = ("float64", "float32")
KERNELS = ("accurate", "fast")  # `_numerics._integrals.KERNELS`

DEFAULT_TOML = """\
# modecollapse built-in default experiment: a bimodal target, trainable means, weights and scale,
# linear annealing.
dim = 64
t_end = 40.0
save_points = 41
seed = 0

[target]
weights = [0.6, 0.4]
scale = 1.0
means = { kind = "antipodal", norm = 3.0 }

[variational]
components = 2
weights = [0.5, 0.5]
scale = 1.0
init = { kind = "random", norm = 1.0 }
learning_rates = { means = 1.0, weights = 1.0, scale = 0.01 }

[annealing]
kind = "linear"
beta0 = 0.2
duration = 20.0

[simulation]
full = true
estimator = "exact"
particles = 1024
step = 0.01
rtol = 1e-7
atol = 1e-9
"""


DEFAULT_SWEEP_TOML = (
    DEFAULT_TOML.replace("dim = 64", "dim = 256")
    .replace('kind = "linear"\nbeta0 = 0.2\nduration = 20.0', 'kind = "none"')
    .replace("scale = 0.01 }", "scale = 0.0 }")
    + """
# Built-in sweep: mean alignment against the initial norm and the target weight (scale frozen,
# no annealing), 200 seeds per cell on the theory route.
[sweep]
seeds = 200
chunk = 1000
[sweep.parameters]
"variational.init.norm" = [0.5, 1.0, 2.0, 4.0, 8.0]
"target.weights" = [[0.5, 0.5], [0.7, 0.3], [0.9, 0.1]]
"""
)


DEFAULT_FLOW_TOML = (
    DEFAULT_TOML.replace("dim = 64", "dim = 2").replace("duration = 20.0", "duration = 10.0")
    + """
# Built-in flow experiment (`modecollapse flow`): RealNVP reverse-KL VI on the same target, with
# linear annealing over the first half of training; time t_i = i * learning_rate, so the
# annealing duration is in those units (t_end = steps * learning_rate = 20).
[flow]
layers = 6
width = 32
steps = 2000
learning_rate = 0.01
particles = 128
optimizer = "adam"
seeds = 8
records = 20
"""
)


class ConfigError(ValueError):
    """A malformed experiment file or argument; the message is one line and names the key."""


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    weights: tuple[float, ...]
    scale: float
    means: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class VariationalConfig:
    components: int
    weights: tuple[float, ...]
    scale: float
    init: dict[str, Any]
    learning_rates: dict[str, float]


@dataclasses.dataclass(frozen=True)
class AnnealingConfig:
    kind: str
    beta0: float | None = None
    duration: float | None = None
    rate: float | None = None
    scale: str = "trainable"


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """`[simulation]`: which routes run and how they are integrated.

    `full` and `estimator` define the experiment and are required. The tuning keys have
    documented defaults (`SIMULATION_DEFAULTS`): `rtol` 1e-7, `atol` 1e-9 (the PID controller of
    the adaptive solvers), `solver` "tsit5", `max_steps` 100 000, `particles` 1024, `step` 0.01
    (the Euler step of the fixed-step `mc-fresh` routes), `chunk` none (one chunk),
    `quadrature_nodes` none (the rule's default), `precision` "float64", `lanes` 128 (the
    theory sweep's lane refill, docs/theory.md §10: trajectories stepped together on each device;
    0 steps a chunk as one plain vmap) and `kernel` "accurate" (the 1-D Gaussian kernel's rule in
    the theory route, eq. (I7); "fast", eq. (I6), needs `full = false` and reverse KL).
    """

    full: bool
    estimator: str
    rtol: float = 1e-7
    atol: float = 1e-9
    particles: int = 1024
    step: float = 0.01
    solver: str = "tsit5"
    max_steps: int = 100_000
    quadrature_nodes: int | None = None
    chunk: int | None = None
    precision: str = "float64"
    lanes: int = 128
    kernel: str = "accurate"


SIMULATION_DEFAULTS = SimulationConfig(full=False, estimator="exact")
"""The documented defaults of the `[simulation]` tuning keys (`full`, `estimator`: dummies)."""


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """`[flow]`: RealNVP flow VI (docs/theory.md, §15); time t_i = i·learning_rate (NF6)."""

    layers: int = 8
    width: int = 32
    steps: int = 2000
    learning_rate: float = 0.01
    particles: int = 256
    optimizer: str = "adam"
    seeds: int = 1
    records: int = 20
    settle: float | None = None
    precision: str | None = None


FLOW_OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """`[objective]`: what the flow minimises (docs/theory.md, §16); default reverse KL.

    `kind` is "reverse-kl" (F = E_q[log q − β log p]), "renyi" (F_α, with `alpha` > 0) or
    "forward-kl" (KL(p‖q), without annealing). `quadrature` ("accurate", the default, or
    "fast") is the rule of the Rényi integral (eqs. (RY5)–(RY7)).
    """

    kind: str = "reverse-kl"
    alpha: float | None = None
    quadrature: str = "accurate"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    parameters: dict[str, tuple[Any, ...]]
    seeds: int
    chunk: int


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed, validated experiment. Build one with `load_experiment` or `parse_experiment`."""

    dim: int
    t_end: float
    save_points: int
    seed: int
    target: TargetConfig
    variational: VariationalConfig
    annealing: AnnealingConfig
    simulation: SimulationConfig
    sweep: SweepConfig | None = None
    flow: FlowConfig | None = None
    objective: ObjectiveConfig = ObjectiveConfig()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["objective"] = {k: v for k, v in out["objective"].items() if v is not None}
        if self.objective.kind != "renyi":
            del out["objective"]["quadrature"]
        out["annealing"] = {k: v for k, v in out["annealing"].items() if v is not None}
        if out["flow"] is None:
            del out["flow"]
        else:  # `settle` replaces `steps`; unset optional keys are left out
            out["flow"] = {k: v for k, v in out["flow"].items() if v is not None}
            if "settle" in out["flow"]:
                del out["flow"]["steps"]
        if out["sweep"] is None:
            del out["sweep"]
        elif self.sweep is not None:
            out["sweep"]["parameters"] = {k: list(v) for k, v in self.sweep.parameters.items()}
        return out

    def with_dim(self, dim: int) -> "Experiment":
        return dataclasses.replace(self, dim=dim)


class _Table:
    """A TOML table under validation: tracks its dotted path and which keys were read."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ConfigError(f"`{path}`: expected a table, got {_typename(data)}.")
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(
        self,
        name: str,
        default: Any = ...,
    ) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(f"`{self.key(name)}`: missing key.")
            return default
        return self.data[name]

    def table(self, name: str) -> "_Table":
        return _Table(self.get(name), self.key(name))

    def number(self, name: str, default: Any = ..., *, low=None, low_open=False, high=None):
        value = self.get(name, default)
        return _number(value, self.key(name), low=low, low_open=low_open, high=high)

    def integer(self, name: str, default: Any = ..., *, low=None) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{self.key(name)}`: expected an integer, got {_typename(value)}.")
        if low is not None and value < low:
            raise ConfigError(f"`{self.key(name)}`: must be >= {low}, got {value}.")
        return value

    def string(self, name: str, choices: tuple[str, ...] | None = None, default: Any = ...) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise ConfigError(f"`{self.key(name)}`: expected a string, got {_typename(value)}.")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"`{self.key(name)}`: unknown value {value!r}; choose one of {', '.join(choices)}."
            )
        return value

    def boolean(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise ConfigError(
                f"`{self.key(name)}`: expected true or false, got {_typename(value)}."
            )
        return value

    def vector(self, name: str, *, length: int | None = None, positive=False) -> tuple[float, ...]:
        value = self.get(name)
        key = self.key(name)
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"`{key}`: expected a non-empty list of numbers, got {_typename(value)}."
            )
        out = tuple(
            _number(v, key, low=0.0 if positive else None, low_open=positive) for v in value
        )
        if length is not None and len(out) != length:
            raise ConfigError(f"`{key}`: expected {length} entries, got {len(out)}.")
        return out

    def matrix(self, name: str, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
        value = self.get(name)
        key = self.key(name)
        if not isinstance(value, list) or any(not isinstance(r, list) for r in value):
            raise ConfigError(f"`{key}`: expected a {rows}x{cols} matrix (a list of lists).")
        if len(value) != rows or any(len(r) != cols for r in value):
            shape = f"{len(value)}x{'/'.join(str(len(r)) for r in value) or 0}"
            raise ConfigError(f"`{key}`: expected a {rows}x{cols} matrix, got {shape}.")
        return tuple(tuple(_number(v, key) for v in r) for r in value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"`{self.key(unknown[0])}`: unknown key.")


def _typename(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _number(value: Any, key: str, *, low=None, low_open=False, high=None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"`{key}`: expected a number, got {_typename(value)}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"`{key}`: must be finite, got {value}.")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"`{key}`: must be {'>' if low_open else '>='} {low:g}, got {value:g}.")
    if high is not None and value > high:
        raise ConfigError(f"`{key}`: must be <= {high:g}, got {value:g}.")
    return value


def _weights(table: _Table, name: str, length: int | None = None) -> tuple[float, ...]:
    w = table.vector(name, length=length, positive=True)
    if abs(sum(w) - 1.0) > 1e-9:
        raise ConfigError(f"`{table.key(name)}`: must sum to 1, got {sum(w):.12g}.")
    return w


def _kind_table(table: _Table, name: str, kinds: dict[str, tuple[str, ...]]) -> tuple[_Table, str]:
    sub = table.table(name)
    kind = sub.string("kind", tuple(kinds))
    return sub, kind


def parse_experiment(data: dict[str, Any]) -> Experiment:
    """Validate a decoded TOML document (see `DEFAULT_TOML` for the keys).

    **Arguments:**

    - `data`: the dictionary from `tomllib`.

    **Returns:** an `Experiment`. Raises `ConfigError` naming the first offending key.

    **Example:**
    ```python
    exp = parse_experiment(tomllib.loads(DEFAULT_TOML))
    exp.dim  # 64
    ```
    """
    top = _Table(data, "")
    dim = top.integer("dim", low=1)
    t_end = top.number("t_end", low=0.0, low_open=True)
    save_points = top.integer("save_points", low=2)
    seed = top.integer("seed", low=0)

    tt = top.table("target")
    weights = _weights(tt, "weights")
    J = len(weights)
    tscale = tt.number("scale", low=0.0, low_open=True)
    mt, kind = _kind_table(tt, "means", TARGET_MEANS_KINDS)
    means: dict[str, Any] = {"kind": kind}
    if kind == "antipodal":
        if J != 2:
            raise ConfigError(
                f"`{mt.key('kind')}`: antipodal means need 2 target weights, got {J}."
            )
        means["norm"] = mt.number("norm", low=0.0, low_open=True)
    elif kind == "orthogonal":
        means["norms"] = list(mt.vector("norms", length=J, positive=True))
    elif kind == "gram":
        means["T"] = [list(r) for r in mt.matrix("T", J, J)]
    else:
        means["norm"] = mt.number("norm", low=0.0, low_open=True)
    mt.done()
    tt.done()
    target = TargetConfig(weights, tscale, means)

    vt = top.table("variational")
    K = vt.integer("components", low=1)
    vweights = _weights(vt, "weights", length=K)
    vscale = vt.number("scale", low=0.0, low_open=True)
    it, ikind = _kind_table(vt, "init", INIT_KINDS)
    init: dict[str, Any] = {"kind": ikind}
    if ikind == "random":
        init["norm"] = it.number("norm", low=0.0)
    else:
        init["R"] = [list(r) for r in it.matrix("R", K, J)]
        init["Q"] = [list(r) for r in it.matrix("Q", K, K)]
    it.done()
    lt = vt.table("learning_rates")
    rates = {g: lt.number(g, low=0.0) for g in ("means", "weights", "scale")}
    lt.done()
    vt.done()
    variational = VariationalConfig(K, vweights, vscale, init, rates)

    at = top.table("annealing")
    akind = at.string("kind", tuple(ANNEALING_KINDS))
    params: dict[str, float] = {}
    for name in ANNEALING_KINDS[akind]:
        if name == "beta0":
            params[name] = at.number(name, low=0.0, low_open=True, high=1.0)
        else:
            params[name] = at.number(name, low=0.0, low_open=True)
    scale_coupling = at.string("scale", ("trainable", "adiabatic"), "trainable")
    at.done()
    annealing = AnnealingConfig(akind, **params, scale=scale_coupling)

    st = top.table("simulation")
    d = SIMULATION_DEFAULTS
    simulation = SimulationConfig(
        full=st.boolean("full"),
        estimator=st.string("estimator", ESTIMATORS),
        rtol=st.number("rtol", d.rtol, low=0.0, low_open=True),
        atol=st.number("atol", d.atol, low=0.0, low_open=True),
        particles=st.integer("particles", d.particles, low=1),
        step=st.number("step", d.step, low=0.0, low_open=True),
        solver=st.string("solver", SOLVERS, d.solver),
        max_steps=st.integer("max_steps", d.max_steps, low=1),
        quadrature_nodes=(
            st.integer("quadrature_nodes", low=2) if "quadrature_nodes" in st.data else None
        ),
        chunk=st.integer("chunk", low=1) if "chunk" in st.data else None,
        precision=st.string("precision", PRECISIONS, d.precision),
        lanes=st.integer("lanes", d.lanes, low=0),
        kernel=st.string("kernel", KERNELS, d.kernel),
    )
    if simulation.kernel != "accurate" and simulation.full:
        raise ConfigError(
            f"`{st.key('kernel')}`: the {simulation.kernel!r} kernel is for the theory route "
            'alone; set `full = false` or `kernel = "accurate"`.'
        )
    st.done()
    sweep = _sweep_table(top.table("sweep")) if "sweep" in data else None
    flow = _flow_table(top.table("flow")) if "flow" in data else None
    objective = (
        _objective_table(top.table("objective"), annealing, simulation, target, variational)
        if "objective" in data
        else ObjectiveConfig()
    )
    top.done()
    return Experiment(
        dim,
        t_end,
        save_points,
        seed,
        target,
        variational,
        annealing,
        simulation,
        sweep,
        flow,
        objective,
    )


def _objective_table(
    ot: _Table,
    annealing: AnnealingConfig,
    simulation: SimulationConfig,
    target: TargetConfig,
    variational: VariationalConfig,
) -> ObjectiveConfig:
    """`[objective]`: kind and (renyi) alpha, with the checks that need the other tables."""
    kind = ot.string("kind", OBJECTIVE_KINDS, "reverse-kl")
    alpha = None
    quadrature = "accurate"
    if kind == "renyi":
        quadrature = ot.string("quadrature", RENYI_QUADRATURES, "accurate")
        alpha = ot.number("alpha", low=0.0, low_open=True)
        if alpha > 1.0:
            # F_α is finite iff a = α + (1 − α) β s²/σ² > 0 (eq. (RY2)); check it at t = 0.
            beta0 = annealing.beta0 if annealing.beta0 is not None else 1.0
            if annealing.scale == "adiabatic":
                s2 = target.scale**2 / beta0
            else:
                s2 = variational.scale**2
            a = alpha + (1.0 - alpha) * beta0 * s2 / target.scale**2
            if not a > 0:
                limit = alpha / (alpha - 1.0)
                raise ConfigError(
                    f"`{ot.key('alpha')}`: F_α is infinite at t = 0 (α > 1 needs "
                    f"β s²/σ² < α/(α − 1) = {limit:.4g}, here {beta0 * s2 / target.scale**2:.4g});"
                    " lower alpha or the initial scale."
                )
    elif kind == "forward-kl" and annealing.kind != "none":
        raise ConfigError(
            f"`{ot.key('kind')}`: forward-kl is defined at β = 1 only (no tempered version); "
            'set [annealing] kind = "none".'
        )
    if kind != "reverse-kl" and simulation.kernel != "accurate":
        raise ConfigError(
            f"`simulation.kernel`: the {simulation.kernel!r} kernel is for the reverse-KL theory "
            'only; use `kernel = "accurate"` with this objective.'
        )
    if kind != "reverse-kl" and simulation.estimator == "mc-fresh-projected":
        raise ConfigError(
            f"`simulation.estimator`: mc-fresh-projected estimates reverse KL only; use mc-fresh "
            f"for objective {kind!r}."
        )
    ot.done()
    return ObjectiveConfig(kind, alpha, quadrature)


def _sweep_table(sw: _Table) -> SweepConfig:
    """`[sweep]`: parameters {dotted key: [values]}, seeds, chunk (validated per point later)."""
    params = sw.table("parameters")
    parameters: dict[str, tuple[Any, ...]] = {}

    def collect(node: dict, prefix: str) -> None:
        # Quoted dotted keys ("a.b" = [...]) and nested tables (a.b = [...]) mean the same.
        for name, values in node.items():
            if isinstance(values, dict):
                collect(values, f"{prefix}{name}.")
            elif not isinstance(values, list) or not values:
                raise ConfigError(
                    f"`{params.key(prefix + name)}`: expected a non-empty list of values."
                )
            else:
                parameters[prefix + name] = tuple(values)

    collect(params.data, "")
    out = SweepConfig(parameters, sw.integer("seeds", low=1), sw.integer("chunk", low=1))
    sw.done()
    return out


def _flow_table(ft: _Table) -> FlowConfig:
    """`[flow]`: layers, width, steps or settle, learning_rate, particles, optimizer, seeds,
    records, precision."""
    d = FlowConfig()
    settle = ft.number("settle", low=0.0, low_open=True) if "settle" in ft.data else None
    if settle is not None and "steps" in ft.data:
        raise ConfigError(
            f"`{ft.key('settle')}`: give either `steps` or `settle` (which sets the steps of each "
            "cell to (τ + settle) / learning_rate), not both."
        )
    steps = ft.integer("steps", d.steps, low=1)
    records_default = (
        d.records
        if settle is not None
        else max(r for r in range(1, d.records + 1) if steps % r == 0)  # largest divisor ≤ 20
    )
    out = FlowConfig(
        layers=ft.integer("layers", d.layers, low=1),
        width=ft.integer("width", d.width, low=1),
        steps=steps,
        learning_rate=ft.number("learning_rate", d.learning_rate, low=0.0, low_open=True),
        particles=ft.integer("particles", d.particles, low=1),
        optimizer=ft.string("optimizer", FLOW_OPTIMIZERS, d.optimizer),
        seeds=ft.integer("seeds", d.seeds, low=1),
        records=ft.integer("records", records_default, low=1),
        settle=settle,
        precision=ft.string("precision", PRECISIONS) if "precision" in ft.data else None,
    )
    if settle is None and out.steps % out.records:
        raise ConfigError(
            f"`{ft.key('records')}`: must divide `{ft.key('steps')}` ({out.steps}), "
            f"got {out.records}."
        )
    ft.done()
    return out


def flow_annealing_time(exp: Experiment) -> float:
    """The annealing time τ of the experiment's schedule in flow time (eq. (NF6)); 0 without
    annealing (kind "none" or β0 = 1). τ is `duration`, or 3/rate for "exponential" (eq. (A2)).

    **Example:** `flow_annealing_time(load_experiment(None))  # 20.0`
    """
    a = exp.annealing
    if a.kind == "none" or a.beta0 == 1.0:
        return 0.0
    if a.rate is not None:  # the factor 3 of `_annealing._schedules.EXP_FACTOR` (jax-free here)
        return 3.0 / a.rate
    assert a.duration is not None  # parse_experiment requires one of the two
    return float(a.duration)


def flow_steps(exp: Experiment) -> int:
    """The optimiser steps of the experiment's flows: `[flow] steps`, or with `settle`,
    (τ + settle) / learning_rate rounded up to a multiple of `records` (τ from
    `flow_annealing_time`). Jax-free.

    **Example:** `flow_steps(exp) * exp.flow.learning_rate  # the flows' t_end`
    """
    fc = exp.flow or FlowConfig()
    if fc.settle is None:
        return fc.steps
    per = (flow_annealing_time(exp) + fc.settle) / (fc.learning_rate * fc.records)
    return fc.records * max(1, math.ceil(per - 1e-9))


FIXED_STEP_ESTIMATORS = ("mc-fresh", "mc-fresh-projected")
"""The estimators whose full flow is integrated by explicit Euler with `simulation.step` (SGD)."""


def _beta_range(a: AnnealingConfig, t_end: float) -> tuple[float, float]:
    """β(0) and max β on [0, t_end] (every schedule increases; eqs. (S1)–(S4))."""
    if a.kind == "none":
        return 1.0, 1.0
    beta0 = float(a.beta0)  # type: ignore[arg-type]
    if a.kind == "linear":
        end = beta0 + (1.0 - beta0) * min(1.0, t_end / a.duration)  # type: ignore[operator]
    elif a.kind == "geometric":
        end = beta0 ** (1.0 - min(1.0, t_end / a.duration))  # type: ignore[operator]
    else:
        end = 1.0 - (1.0 - beta0) * math.exp(-a.rate * t_end)  # type: ignore[operator]
    return beta0, end


def explicit_step_rates(exp: Experiment) -> dict[str, tuple[float, str]]:
    """Relaxation rates of the full flow's stiff modes, from the config alone (no jax).

    docs/theory.md, §5b: the Euler limit (ST1) and the rates (ST2)–(ST4).

    Explicit Euler with step h is stable on a mode of rate λ iff λ·h < 2. Each rate is a
    diagonal entry Λ_ii ∂²F/∂θ_i² of the preconditioned Hessian Λ^½ H Λ^½ of eq. (F1) under flow
    (D1). Its largest eigenvalue, the stiffest rate, is at least any diagonal entry, so an
    accurate diagonal entry is a lower bound on it:

    - `scale`: the O(d) part of eq. (T5) is η_s·d·(1 − β s²/σ²), so ∂²F/∂(log s)² ≈ 2d·β s²/σ²
      (the d log s entropy of q against the β|x|²/2σ² of log p; the mixture terms are O(1)).
      It is 2d at the fixed point s² = σ²/β, which the scale reaches within 1/(2η_s d) (less
      than a step whenever the step is unstable), and 2d·β(0)s(0)²/σ² at the start:
      λ_s = 2·η_s·d·max(1, β(0)s(0)²/σ²), a lower bound up to O(1/d) (tests/test_config.py
      checks it against the autodiff Hessian). Absent when the scale is frozen or adiabatic.
    - `means`: ∇²_{m_k}F ≈ w_k·β/σ² (eq. (T1) with s² = σ²/β, separated components), so
      λ_m = η_m·w_max·β_max/σ², with β_max = β(t_end) and w_max = 1 if the weights are trained
      (a collapsed component holds all the mass) or the largest weight if they are frozen.
      Overlapping components have smaller curvature, so this is the largest value along a run.
    - `weights`: for separated components the entropy part Σ w log w of F has the logit Hessian
      diag(w) − wwᵀ (eq. (T3)), whose largest diagonal entry at the initial weights gives
      λ_a = η_a·max_k w_k(1 − w_k). Overlapping components have less; the energy differences
      between components add terms the config does not bound.

    The scale rate is O(d) and is the one that matters at large d; the others are O(η).

    **Arguments:**

    - `exp`: a validated experiment (its `dim` is the one the flow runs at).

    **Returns:** `{mode: (rate, formula)}` for each trained mode; the formula is for messages.

    **Example:**
    ```python
    rates = explicit_step_rates(load_experiment(None))
    rates["scale"]  # (1.28, "2·η_s·d"): η_s = 0.01, d = 64
    ```
    """
    v, a = exp.variational, exp.annealing
    eta = v.learning_rates
    beta0, beta_max = _beta_range(a, exp.t_end)
    sigma2 = exp.target.scale**2
    out: dict[str, tuple[float, str]] = {}
    if eta["scale"] > 0 and a.scale != "adiabatic":
        start = beta0 * v.scale**2 / sigma2
        formula = "2·η_s·d" if start <= 1.0 else "2·η_s·d·β(0)s(0)²/σ²"
        out["scale"] = (2.0 * eta["scale"] * exp.dim * max(1.0, start), formula)
    if eta["means"] > 0:
        w_max = 1.0 if eta["weights"] > 0 else max(v.weights)
        out["means"] = (eta["means"] * w_max * beta_max / sigma2, "η_m·w_max·β_max/σ²")
    if eta["weights"] > 0 and v.components > 1:
        out["weights"] = (eta["weights"] * max(w * (1 - w) for w in v.weights), "η_a·w(1 − w)")
    return out


_RATE_KEYS = {
    "scale": "variational.learning_rates.scale",
    "means": "variational.learning_rates.means",
    "weights": "variational.learning_rates.weights",
}


def check_explicit_step(exp: Experiment) -> None:
    """Refuse a fixed explicit step beyond the Euler limit of a mode (before anything compiles).

    Applies when the full flow runs with a fixed-step estimator (`FIXED_STEP_ESTIMATORS`): Euler
    with step h diverges on a mode of rate λ once λ·h ≥ 2 (rates: `explicit_step_rates`).

    **Arguments:**

    - `exp`: a validated experiment, at the dimension the full flow runs at.

    **Returns:** None; raises `ConfigError` naming `simulation.step`, the mode and its rate, with
    a stable step (1/λ) and, for the scale, the η_s ∝ 1/d that makes the given step stable.

    **Example:**
    ```python
    check_explicit_step(load_experiment(None))  # exact estimator: adaptive, nothing to check
    ```
    """
    sim = exp.simulation
    if sim.estimator not in FIXED_STEP_ESTIMATORS:
        return
    rates = explicit_step_rates(exp)
    if not rates:
        return
    mode = max(rates, key=lambda m: rates[m][0])
    rate, formula = rates[mode]
    if rate * sim.step < 2.0:
        return
    eta = exp.variational.learning_rates[mode]
    fix = f"use `simulation.step` <= {1.0 / rate:.3g} (1/rate)"
    if mode == "scale":
        fix += (
            f" or `{_RATE_KEYS[mode]}` <= {eta / (rate * sim.step):.3g} "
            f"(η_s ∝ 1/d, so that rate·step = 1)"
        )
    else:
        fix += f" or a smaller `{_RATE_KEYS[mode]}`"
    raise ConfigError(
        f"`simulation.step`: {sim.step:g} is beyond the explicit Euler limit of the {mode} mode "
        f"at dim = {exp.dim}: rate {formula} = {rate:.3g}, and Euler is stable only for "
        f"rate·step < 2 (here {rate * sim.step:.3g}); {fix}."
    )


def check_formula_inputs(exp: Experiment) -> None:
    """Check what the collapse formula (eqs. (P1)–(P6)) checks at run time, before it compiles.

    The formula's own `eqx.error_if` checks (ρ in (0, 1), c > 0, d ≥ 2) stay as the library's
    guard; this names the experiment key instead of the formula argument.

    **Arguments:**

    - `exp`: a parsed experiment (that `formula_arguments` accepts).

    **Returns:** None; raises `ConfigError` naming the key.

    **Example:**
    ```python
    check_formula_inputs(load_experiment(None))
    ```
    """
    if exp.dim < 2:
        raise ConfigError(f"`dim`: the collapse formula needs dim >= 2, got {exp.dim}.")
    init = exp.variational.init
    if init["kind"] == "random" and not init["norm"] > 0:
        raise ConfigError(
            f"`variational.init.norm`: the collapse formula needs a norm > 0, got {init['norm']:g}."
        )
    for w in exp.target.weights:
        if not 0.0 < w < 1.0:
            raise ConfigError(
                f"`target.weights`: the collapse formula needs weights in (0, 1), got {w:g}."
            )


def load_experiment(path: str | None) -> Experiment:
    """Read and validate an experiment file; `None` gives the built-in default.

    **Arguments:**

    - `path`: a TOML file, or None.

    **Returns:** an `Experiment`; raises `ConfigError` on any problem.

    **Example:**
    ```python
    exp = load_experiment(None)          # the built-in default
    exp = load_experiment("exp.toml")
    ```
    """
    if path is None:
        return parse_experiment(tomllib.loads(DEFAULT_TOML))
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"`--config`: cannot read {path!r}: {e.strerror or e}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"`--config`: {path!r} is not valid TOML: {e}.") from None
    return parse_experiment(data)


KEY_DOCS = {
    "dim": "dimension d of the space",
    "t_end": "end time of the flow",
    "save_points": "saved times, evenly spaced on [0, t_end]",
    "seed": "seed of the target, the initial state and the particles",
    "target": "the target mixture p: weights ρ_j, one scale σ, the means μ_j",
    "target.weights": "ρ_j > 0, summing to 1 (J = its length)",
    "target.scale": "σ > 0",
    "target.means": "kind = antipodal (norm) | orthogonal (norms) | gram (T) | random (norm)",
    "variational": "the family q: K components, weights, one shared scale s, initial means",
    "variational.components": "K",
    "variational.weights": "initial w_k > 0, summing to 1",
    "variational.scale": "initial s > 0 (ignored if annealing.scale = adiabatic)",
    "variational.init": "kind = random (norm: |m_k| ≈ norm) | overlaps (R = M Uᵀ, Q = M Mᵀ)",
    "variational.learning_rates": "η_m, η_a, η_s of flow (D1); 0 freezes a group",
    "annealing": "β(t): kind = none | linear | geometric (beta0, duration) | exponential (beta0, "
    "rate)",
    "annealing.kind": "none | linear | geometric | exponential (docs/theory.md, §6)",
    "annealing.beta0": "β(0) in (0, 1]",
    "annealing.duration": "time at which β reaches 1",
    "annealing.rate": "relaxation rate of β",
    "annealing.scale": "trainable (default) | adiabatic: s(t)² = σ²/β(t) (eq. (S5))",
    "simulation": "routes and integration; only full and estimator are required",
    "simulation.full": "also run the full d-dimensional flow (theory always runs)",
    "simulation.estimator": "exact | mc-fixed | mc-fresh | mc-fresh-projected",
    "simulation.rtol": "relative tolerance of the adaptive solvers (default 1e-7)",
    "simulation.atol": "absolute tolerance of the adaptive solvers (default 1e-9)",
    "simulation.particles": "Monte Carlo particles of the mc-* estimators (default 1024)",
    "simulation.step": "Euler step of mc-fresh routes (default 0.01); stable iff rate·step < 2",
    "simulation.solver": "tsit5 (default) | dopri5 | dopri8 | heun | kvaerno5",
    "simulation.max_steps": "the solve fails beyond this many steps (default 100000)",
    "simulation.quadrature_nodes": "K or J ≥ 3 only: use the previous tensor Gauss–Hermite rule "
    "with this many nodes per dimension (default: the accurate rule, eqs. (G5)–(G8))",
    "simulation.chunk": "particles per chunk (default: all in one)",
    "simulation.precision": "float64 (default) | float32; --precision overrides",
    "simulation.lanes": "theory sweeps: trajectories stepped together per device, a finished "
    "lane taking the next (default 128, for CPUs; on a GPU about half the chunk; 0: one plain "
    "vmap per chunk)",
    "simulation.kernel": "the theory's 1-D kernel: accurate (default, eq. (I7)) | fast (I6: "
    "a probit mixture, error ≤ 1e-9, faster sweeps; full = false, reverse KL)",
    "objective": "what the flow minimises (docs/theory.md, §16); default reverse-kl",
    "objective.kind": "reverse-kl | renyi (alpha) | forward-kl (no annealing)",
    "objective.alpha": "Rényi order α > 0; α → 1 is reverse KL, α < 1 mass-covering",
    "objective.quadrature": "renyi only: accurate (default, ≤ 1e-9) | fast (≤ 1e-4, for sweeps)",
    "sweep": "grid of parameters × seeds (modecollapse sweep)",
    "sweep.seeds": "trajectories per grid point",
    "sweep.chunk": "trajectories per compiled batch (checkpointed after each)",
    "sweep.parameters": "dotted key = [values]: the grid is their product",
    "flow": "RealNVP flow VI (modecollapse flow, docs/theory.md §15); t_i = i·learning_rate",
    "flow.layers": "coupling layers",
    "flow.width": "hidden width of the conditioners",
    "flow.steps": "optimiser steps",
    "flow.learning_rate": "optimiser step size (also the time unit)",
    "flow.particles": "samples per loss estimate",
    "flow.optimizer": "adam | sgd",
    "flow.seeds": "independent flows trained",
    "flow.records": "recorded points (must divide steps)",
    "flow.settle": "instead of steps: train each cell to t_end = τ + settle (flows and theory)",
    "flow.precision": "float32 | float64 of the flows (default: the experiment's precision)",
}
"""One comment per experiment key, for `experiment_toml` (`modecollapse config --show`)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_lines(table: dict[str, Any], path: str) -> list[str]:
    lines = []
    for name, value in table.items():
        if isinstance(value, dict) and path + name not in KEY_DOCS_INLINE:
            continue
        doc = KEY_DOCS.get(path + name, "")
        if value is None:
            lines.append(f"# {name} = ...  # {doc}")
        else:
            lines.append(f"{name} = {_toml_value(value)}" + (f"  # {doc}" if doc else ""))
    return lines


KEY_DOCS_INLINE = ("target.means", "variational.init", "variational.learning_rates")


def experiment_toml(exp: Experiment, header: str = "") -> str:
    """The experiment as a commented TOML file that `parse_experiment` reads back to `exp`.

    Every key is written, tuning keys with their defaults, and each carries a comment
    (`KEY_DOCS`); an unset optional key is shown commented out.

    **Arguments:**

    - `exp`: an experiment.
    - `header`: comment lines for the top of the file (without the leading `#`).

    **Returns:** the TOML text.

    **Example:**
    ```python
    text = experiment_toml(load_experiment(None), "my experiment")
    parse_experiment(tomllib.loads(text)) == load_experiment(None)  # True
    ```
    """
    data = exp.to_dict()
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    out += _toml_lines({k: v for k, v in data.items() if not isinstance(v, dict)}, "")
    for name in ("target", "variational", "annealing", "objective", "simulation", "flow"):
        if name in data:
            out += ["", f"# {KEY_DOCS[name]}", f"[{name}]", *_toml_lines(data[name], name + ".")]
    if "sweep" in data:
        sweep = data["sweep"]
        out += ["", f"# {KEY_DOCS['sweep']}", "[sweep]"]
        out += _toml_lines({k: v for k, v in sweep.items() if k != "parameters"}, "sweep.")
        out += [f"# {KEY_DOCS['sweep.parameters']}", "[sweep.parameters]"]
        out += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in sweep["parameters"].items()]
    return "\n".join(out) + "\n"
