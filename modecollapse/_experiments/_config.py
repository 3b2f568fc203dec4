"""The experiment file (TOML): parsing, validation and the built-in default.

Every problem raises `ConfigError` with a one-line message that names the offending key in
backticks. The CLI turns it into exit status 2, with nothing written.
"""

import dataclasses
import math
import tomllib
from typing import Any

ESTIMATORS = ("exact", "mc-fixed", "mc-fresh", "mc-fresh-projected")
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
PRECISIONS = ("float64", "float32")

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
    full: bool
    estimator: str
    rtol: float
    atol: float
    particles: int = 1024
    step: float = 0.01
    solver: str = "tsit5"
    max_steps: int = 100_000
    quadrature_nodes: int | None = None
    chunk: int | None = None
    precision: str = "float64"


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


FLOW_OPTIMIZERS = ("adam", "sgd")


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

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["annealing"] = {k: v for k, v in out["annealing"].items() if v is not None}
        if out["flow"] is None:
            del out["flow"]
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
    simulation = SimulationConfig(
        full=st.boolean("full"),
        estimator=st.string("estimator", ESTIMATORS),
        rtol=st.number("rtol", low=0.0, low_open=True),
        atol=st.number("atol", low=0.0, low_open=True),
        particles=st.integer("particles", 1024, low=1),
        step=st.number("step", 0.01, low=0.0, low_open=True),
        solver=st.string("solver", SOLVERS, "tsit5"),
        max_steps=st.integer("max_steps", 100_000, low=1),
        quadrature_nodes=(
            st.integer("quadrature_nodes", low=2) if "quadrature_nodes" in st.data else None
        ),
        chunk=st.integer("chunk", low=1) if "chunk" in st.data else None,
        precision=st.string("precision", PRECISIONS, "float64"),
    )
    st.done()
    sweep = _sweep_table(top.table("sweep")) if "sweep" in data else None
    flow = _flow_table(top.table("flow")) if "flow" in data else None
    top.done()
    return Experiment(
        dim, t_end, save_points, seed, target, variational, annealing, simulation, sweep, flow
    )


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
    """`[flow]`: layers, width, steps, learning_rate, particles, optimizer, seeds, records."""
    d = FlowConfig()
    steps = ft.integer("steps", d.steps, low=1)
    out = FlowConfig(
        layers=ft.integer("layers", d.layers, low=1),
        width=ft.integer("width", d.width, low=1),
        steps=steps,
        learning_rate=ft.number("learning_rate", d.learning_rate, low=0.0, low_open=True),
        particles=ft.integer("particles", d.particles, low=1),
        optimizer=ft.string("optimizer", FLOW_OPTIMIZERS, d.optimizer),
        seeds=ft.integer("seeds", d.seeds, low=1),
        # default: the largest divisor of `steps` up to 20
        records=ft.integer(
            "records", max(r for r in range(1, d.records + 1) if steps % r == 0), low=1
        ),
    )
    if out.steps % out.records:
        raise ConfigError(
            f"`{ft.key('records')}`: must divide `{ft.key('steps')}` ({out.steps}), "
            f"got {out.records}."
        )
    ft.done()
    return out


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
