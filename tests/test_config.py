"""The config layer and the CLI around it (issue 11, faults 1, 2, 6 and 8).

The experiment files here are built from the parsed built-in defaults and written back with
`experiment_toml`, so that an edit that no longer applies fails loudly instead of doing nothing.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys
import time
import tomllib

import jax
import jax.numpy as jnp
import pytest

import modecollapse as mc
from modecollapse._cli import COMMANDS, _parser, main
from modecollapse._dynamics._solve import SolverOptions
from modecollapse._experiments import _config
from modecollapse._experiments._config import (
    DEFAULT_FLOW_TOML,
    DEFAULT_TOML,
    SIMULATION_DEFAULTS,
    ConfigError,
    check_explicit_step,
    experiment_toml,
    explicit_step_rates,
)
from modecollapse._experiments._problem import NumericalFailure, solver_options
from modecollapse._jobs._design import DEFAULT_DESIGN_TOML
from modecollapse._jobs._show_config import BUILTIN_TOML

PACKAGE = pathlib.Path(mc.__file__).parent


def _write(tmp_path, data: dict, name: str = "exp.toml") -> str:
    path = tmp_path / name
    path.write_text(experiment_toml(mc.parse_experiment(data)))
    return str(path)


def _unstable() -> dict:
    """Issue 11, fault 1: `mc-fresh` at d = 10⁶, step 0.01, η_s = 0.02 (rate 2·η_s·d = 4·10⁴)."""
    data = tomllib.loads(DEFAULT_TOML)
    data["dim"] = 10**6
    data["variational"]["learning_rates"]["scale"] = 0.02
    data["simulation"].update(estimator="mc-fresh", step=0.01)
    return data


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- fault 1: an unstable explicit step is refused before anything compiles -------------------


def test_unstable_explicit_step_is_refused_quickly(tmp_path):
    config = _write(tmp_path, _unstable())
    out = tmp_path / "out"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "modecollapse", "run", "--config", config, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    err = _one_line(proc.stderr)
    assert "`simulation.step`" in err and "scale mode" in err, err
    assert f"{2 * 0.02 * 10**6:.3g}" in err  # the scale rate 2·η_s·d = 4e+04
    assert "`variational.learning_rates.scale`" in err and "1/d" in err
    assert elapsed < 30.0, elapsed
    assert not out.exists()


def test_unstable_step_is_refused_on_compare_and_every_sweep_point(tmp_path, capsys):
    data = _unstable()
    data["dim"] = 8  # stable at d = 8 (rate 0.32); compare also runs d = 10⁶
    config = _write(tmp_path, data)
    with pytest.raises(SystemExit) as e:
        main(["compare", "--config", config, "--dims", "8,1000000", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = _one_line(capsys.readouterr().err)
    assert "`simulation.step`" in err and "dim = 1000000" in err

    data = _unstable()
    data["sweep"] = {
        "seeds": 2,
        "chunk": 2,
        "parameters": {"variational.learning_rates.scale": [1e-7, 0.02]},
    }
    config = _write(tmp_path, data, "sweep.toml")
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", config, "--route", "full", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = _one_line(capsys.readouterr().err)
    assert "`simulation.step`" in err and "variational.learning_rates.scale = 0.02" in err
    assert not (tmp_path / "o").exists()


def test_the_step_is_only_checked_where_euler_runs(tmp_path):
    parse = _parser().parse_args
    data = _unstable()
    data["simulation"]["full"] = False  # `run` solves only the (adaptive) theory ODE
    config = _write(tmp_path, data)
    COMMANDS["run"].prepare(parse(["run", "--config", config, "--out", str(tmp_path / "o")]))
    data = _unstable()
    data["simulation"]["estimator"] = "exact"  # adaptive full flow: no fixed step
    check_explicit_step(mc.parse_experiment(data))
    data = _unstable()
    data["variational"]["learning_rates"]["scale"] = 0.02 / 10**6  # η_s ∝ 1/d
    check_explicit_step(mc.parse_experiment(data))


def test_step_rates_against_the_autodiff_hessian():
    """λ_s = 2η_s d matches η_s ∂²F/∂(log s)² at s² = σ²/β; λ_m bounds η_m ∂²F/∂m²."""
    exp = mc.parse_experiment(tomllib.loads(DEFAULT_TOML))
    rates = explicit_step_rates(exp)
    eta = exp.variational.learning_rates
    problem = mc.build_problem(exp)
    q, p = problem.family, problem.target
    for beta in (0.2, 1.0):
        u_star = 0.5 * jnp.log(exp.target.scale**2 / beta)

        def f(u, beta=beta):
            return mc.objective(mc.IsotropicMixture(q.means, q.logits, u), p, beta)

        curvature = float(jax.grad(jax.grad(f))(u_star))
        assert abs(rates["scale"][0] / (eta["scale"] * curvature) - 1.0) < 0.05

        def g(m, u_star=u_star, beta=beta):
            return mc.objective(mc.IsotropicMixture(m, q.logits, u_star), p, beta)

        n = q.means.size
        hess = jax.hessian(g)(q.means).reshape(n, n)
        assert eta["means"] * float(jnp.max(jnp.abs(jnp.diagonal(hess)))) <= rates["means"][0]


# -- fault 2: run-time checks stay on and become one-line errors -------------------------------


def _design_data(norm: float) -> dict:
    data = tomllib.loads(DEFAULT_DESIGN_TOML)
    data["variational"]["init"]["norm"] = norm
    return data


def test_design_refuses_what_the_formula_checks_before_compiling(tmp_path, capsys):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(["design", "--config", _write(tmp_path, _design_data(0.0)), "--out", str(out)])
    assert e.value.code == 2
    assert "`variational.init.norm`" in _one_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow  # two compilations of the design job (about 90 s)
def test_a_failed_runtime_check_is_a_one_line_error_not_nan(tmp_path, capsys, monkeypatch):
    """With the config check bypassed, the formula's `eqx.error_if` still stops `design`."""
    from modecollapse._jobs import _design as _design_command

    monkeypatch.setattr(_design_command, "check_formula_inputs", lambda exp: None)
    out = tmp_path / "o"
    argv = ["design", "--config", _write(tmp_path, _design_data(0.0)), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--steps", "1", "--seeds", "4", "--budget", "30", "--no-progress"])
    assert e.value.code == 2
    err = _one_line(capsys.readouterr().err)
    assert "run-time input check failed" in err and "`init_norm` must be > 0" in err, err
    assert not out.exists()


# -- fault 6: the failure message shows the experiment actually run ----------------------------


def test_failure_message_shows_the_builtin_experiment_and_precision(tmp_path, capsys, monkeypatch):
    from modecollapse._jobs import _flow

    def fail(exp, progress=False):
        raise NumericalFailure("the flow solve failed at dim = 2: test.")

    monkeypatch.setattr(_flow, "run_flow_experiment", fail)
    with pytest.raises(SystemExit) as e:
        main(["flow", "--out", str(tmp_path / "o"), "--precision", "float32"])
    assert e.value.code == 1
    err = _one_line(capsys.readouterr().err)
    shown = json.loads(err[err.index("Config: ") + 8 : err.index(" Precision: ")])
    builtin = mc.parse_experiment(tomllib.loads(DEFAULT_FLOW_TOML)).to_dict()
    assert shown == json.loads(json.dumps(builtin))
    assert "Precision: float32" in err


def test_failure_message_includes_the_precision_flag(tmp_path, capsys):
    data = tomllib.loads(DEFAULT_TOML)
    data.update(dim=3, t_end=4.0, save_points=5)
    data["simulation"].update(full=False, max_steps=3)
    out = tmp_path / "out"
    argv = ["run", "--config", _write(tmp_path, data), "--out", str(out), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--precision", "float32"])
    assert e.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("modecollapse: error: numerical failure")
    shown = json.loads(last[last.index("Config: ") + 8 : last.index(" Precision: ")])
    assert shown["simulation"]["precision"] == "float32" and shown["dim"] == 3
    assert not out.exists()


# -- fault 8: tuning keys have documented defaults; `config --show` ----------------------------


def test_tuning_defaults_are_the_solver_defaults():
    options = SolverOptions()
    for key in ("solver", "rtol", "atol", "max_steps", "kernel"):
        assert getattr(SIMULATION_DEFAULTS, key) == getattr(options, key), key
    data = tomllib.loads(DEFAULT_TOML)
    sim = data["simulation"]
    for key in ("rtol", "atol", "solver", "max_steps", "chunk", "precision"):
        sim.pop(key, None)
    exp = mc.parse_experiment(data)
    for key in ("rtol", "atol", "solver", "max_steps", "chunk", "precision"):
        assert getattr(exp.simulation, key) == getattr(SIMULATION_DEFAULTS, key), key


def test_flow_accepts_a_simulation_table_without_tolerances(tmp_path):
    data = tomllib.loads(DEFAULT_FLOW_TOML)
    for key in ("rtol", "atol"):
        del data["simulation"][key]
    data["flow"].update(layers=1, width=4, steps=4, particles=8, seeds=1, records=2)
    text = "\n".join(
        line
        for line in experiment_toml(mc.parse_experiment(data)).splitlines()
        if not line.startswith(("rtol", "atol"))
    )
    assert "rtol" not in text.split("[simulation]")[1].split("[flow]")[0].split("#")[0]
    path = tmp_path / "flow.toml"
    path.write_text(text)
    out = tmp_path / "out"
    main(["flow", "--config", str(path), "--out", str(out), "--no-progress"])
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["simulation"]["rtol"] == SIMULATION_DEFAULTS.rtol
    assert result["flow"]["steps"] == 4


@pytest.mark.parametrize("command", sorted(BUILTIN_TOML))
def test_config_show_round_trips(tmp_path, capsys, command):
    parse = _parser().parse_args
    main(["config", "--show", command])
    text = capsys.readouterr().out
    builtin = COMMANDS[command].prepare(parse([command, "--out", str(tmp_path / "o")]))
    assert mc.parse_experiment(tomllib.loads(text)) == builtin.experiment
    path = tmp_path / "shown.toml"
    path.write_text(text)
    args = parse([command, "--config", str(path), "--out", str(tmp_path / "o")])
    assert COMMANDS[command].prepare(args).experiment == builtin.experiment
    for line in text.splitlines():  # every key is documented in a comment
        if line and not line.startswith(("#", "[", '"')):
            assert "  # " in line, line
    assert "(default 1e-7)" in text and "(default 100000)" in text


def test_config_without_show_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config"])
    assert e.value.code == 2
    assert "--show" in _one_line(capsys.readouterr().err)


# -- layout ------------------------------------------------------------------------------------


def test_the_config_layer_is_jax_free():
    """`_config.py` imports the standard library only: load it alone and look at sys.modules."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cfg', {str(_config.__file__)!r})\n"
        "cfg = importlib.util.module_from_spec(spec); spec.loader.exec_module(cfg)\n"
        "exp = cfg.load_experiment(None); cfg.check_explicit_step(exp)\n"
        "cfg.parse_experiment(__import__('tomllib').loads(cfg.experiment_toml(exp)))\n"
        "heavy = [m for m in ('jax', 'numpy', 'equinox', 'modecollapse') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_one_command_table_and_jobs_never_import_the_cli():
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)  # pyright: ignore
    for path in (PACKAGE / "_jobs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "_cli" not in (node.module or ""), path.name
            elif isinstance(node, ast.Import):
                assert not any("_cli" in a.name for a in node.names), path.name


def test_sweep_merge_timeout_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--out", str(tmp_path / "o"), "--merge-timeout", "0"])
    assert e.value.code == 2
    err = _one_line(capsys.readouterr().err)
    assert "`--merge-timeout`" in err and "> 0" in err, err
    assert not (tmp_path / "o").exists()


def test_jobs_run_fast_then_once_more_with_checks_raising_on_failure(tmp_path, monkeypatch):
    """Fault 2: the first attempt traces checks as NaN (cacheable); a NumericalFailure reruns the
    job with every check raising, so a tripped check names itself; the mode is then restored."""
    import dataclasses

    import equinox._errors

    from modecollapse import _cli

    before = equinox._errors.EQX_ON_ERROR  # pyright: ignore
    modes = []

    def execute(args, prepared):
        modes.append(equinox._errors.EQX_ON_ERROR)  # pyright: ignore
        if len(modes) == 1:
            raise NumericalFailure("first attempt")
        return _cli.Output()

    monkeypatch.delenv("EQX_ON_ERROR", raising=False)
    run = dataclasses.replace(COMMANDS["run"], execute=execute)
    monkeypatch.setitem(COMMANDS, "run", run)
    main(["run", "--out", str(tmp_path / "o")])
    assert modes == ["nan", before]
    assert equinox._errors.EQX_ON_ERROR == before  # pyright: ignore


def _with_simulation(extra: str, full: bool = False) -> dict:
    text = DEFAULT_TOML.replace("full = true", f"full = {str(full).lower()}")
    return tomllib.loads(text.replace("atol = 1e-9", "atol = 1e-9\n" + extra))


def test_kernel_key_selects_the_rule():
    exp = mc.parse_experiment(_with_simulation(""))
    assert exp.simulation.kernel == SIMULATION_DEFAULTS.kernel == SolverOptions().kernel
    fast = mc.parse_experiment(_with_simulation('kernel = "fast"'))
    assert mc.parse_experiment(tomllib.loads(experiment_toml(fast))) == fast
    assert 'kernel = "fast"' in experiment_toml(fast)
    assert solver_options(fast).kernel == "fast"


@pytest.mark.parametrize(
    "extra, full, match",
    [
        ('kernel = "fastest"', False, r"^`simulation.kernel`: unknown value .fastest."),
        ('kernel = "fast"', True, r"^`simulation.kernel`: the 'fast' kernel is for the theory"),
        ('kernel = "fast"\n[objective]\nkind = "renyi"\nalpha = 0.5', False, r"reverse-KL"),
    ],
)
def test_kernel_key_refusals_are_one_line(extra, full, match):
    with pytest.raises(ConfigError, match=match) as info:
        mc.parse_experiment(_with_simulation(extra, full))
    assert "\n" not in str(info.value)


def test_compare_refuses_the_fast_kernel():
    from modecollapse.jobs import compare_experiment

    fast = mc.parse_experiment(_with_simulation('kernel = "fast"'))
    with pytest.raises(ConfigError, match=r"^`simulation.kernel`: compare runs both routes"):
        compare_experiment(fast, [8])
