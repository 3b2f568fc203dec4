import json
import math
import tomllib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from modecollapse._annealing._schedules import LinearSchedule, NoAnnealing, annealing_time
from modecollapse._cli import main
from modecollapse._experiments._config import (
    DEFAULT_FLOW_TOML,
    ConfigError,
    experiment_toml,
    flow_annealing_time,
    flow_steps,
    parse_experiment,
)
from modecollapse._flows._realnvp import RealNVP
from modecollapse._flows._vi import classify_flow, flow_objective, label_stable, train_flows
from modecollapse._metrics import LABELS
from modecollapse._mixtures import GaussianMixture

SMALL_FLOW = (
    DEFAULT_FLOW_TOML.replace("layers = 6", "layers = 2")
    .replace("width = 32", "width = 8")
    .replace("steps = 2000", "steps = 60")
    .replace("particles = 128", "particles = 32")
    .replace("seeds = 8", "seeds = 2")
    .replace("records = 20", "records = 3")
)


def _bimodal(norm=3.0, dim=2, weights=(0.6, 0.4)):
    means = jnp.zeros((2, dim)).at[0, 0].set(norm).at[1, 0].set(-norm)
    return GaussianMixture(means, jnp.array(weights))


def test_objective_is_kl_at_beta_one(getkey):
    # p = N(0, I) written as a mixture with coincident means; the identity flow has KL = 0, and
    # at β the objective is (1 − β) E_q log N exactly, particle by particle
    p = GaussianMixture(jnp.zeros((2, 3)), jnp.array([0.5, 0.5]))
    flow = RealNVP(getkey(), 3, layers=2, width=8, init_scale=0.0)
    z = jr.normal(getkey(), (50, 3))
    objective = eqx.filter_jit(flow_objective)
    assert abs(float(objective(flow, p, 1.0, z))) < 1e-12
    log_n = -0.5 * jnp.sum(z**2, -1) - 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(objective(flow, p, 0.3, z), 0.7 * jnp.mean(log_n), rtol=1e-12)


def test_classifier_on_synthetic_trajectories():
    times = jnp.linspace(0.0, 10.0, 11)
    rho = jnp.array([0.6, 0.4])
    ok = jnp.array(True)
    flat = jnp.stack([jnp.full(11, 0.6), jnp.full(11, 0.4)], -1)
    # covered
    assert LABELS[int(classify_flow(flat, times, rho, ok))] == "covered"
    # mode 2 drops below 0.1·0.4 at t = 1 (inside the early phase up to t = 1) and stays there
    early = flat.at[1:, 1].set(0.01).at[1:, 0].set(0.99)
    assert LABELS[int(classify_flow(early, times, rho, ok))] == "mean_alignment"
    # mode 2 covered until t = 6, then lost
    late = flat.at[7:, 1].set(0.01).at[7:, 0].set(0.99)
    assert LABELS[int(classify_flow(late, times, rho, ok))] == "vanishing_weight"
    # a larger early phase turns the late loss into "never covered after the early phase"
    assert LABELS[int(classify_flow(late, times, rho, ok, early=0.8))] == "mean_alignment"
    assert LABELS[int(classify_flow(flat, times, rho, jnp.array(False)))] == "failed"
    # J = 3: one missed mode never covered, another lost late → other
    rho3 = jnp.array([0.4, 0.3, 0.3])
    m3 = jnp.tile(jnp.array([0.4, 0.3, 0.3]), (11, 1))
    m3 = m3.at[1:, 1].set(0.0).at[8:, 2].set(0.0).at[1:, 0].set(1.0)
    assert LABELS[int(classify_flow(m3, times, rho3, ok))] == "other"


# The settings of SMALL_FLOW's [flow] table with `train_flows`' defaults: the CLI test reuses the
# compilation of these runs (same static arguments and shapes).
_SMALL = dict(seeds=2, layers=2, width=8, steps=60, learning_rate=0.01, particles=32, records=3)


def test_train_flows_records_and_seed_independence(getkey):
    p = _bimodal()
    sched = LinearSchedule(0.2, 0.5)
    key = getkey()
    run = train_flows(key, p, sched, **_SMALL)
    swapped = train_flows(key, p, LinearSchedule(0.2, 0.5), seed_ids=jnp.array([1, 0]), **_SMALL)
    np.testing.assert_allclose(run.times, jnp.arange(4.0) * 20 * 0.01)  # t_i = i·η (NF6)
    np.testing.assert_allclose(run.beta, jax.vmap(sched)(run.times))
    assert run.masses.shape == (2, 4, 2) and run.loss.shape == (2, 4)
    np.testing.assert_allclose(run.masses.sum(-1), 1.0, atol=1e-12)
    # a seed's run does not depend on its position in the batch
    np.testing.assert_allclose(swapped.masses[::-1], run.masses, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(swapped.kl[::-1], run.kl, rtol=1e-10)
    # different seeds differ, and training moved the flows (Lipschitz estimates leave 1)
    assert not np.allclose(run.masses[0], run.masses[1])
    assert jnp.all(run.lipschitz_lower[:, 0] < 1.2) and jnp.all(run.lipschitz_lower[:, -1] > 1.0)
    assert jnp.all(run.lipschitz_lower <= run.lipschitz_upper)
    out = run.outcome()
    assert sum(out["labels"].values()) == 2 and len(out["per_seed"]) == 2
    with pytest.raises(ValueError, match="`records`"):
        train_flows(key, p, sched, **{**_SMALL, "records": 7})
    with pytest.raises(ValueError, match="`optimizer`"):
        train_flows(key, p, sched, **{**_SMALL, "optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="`seed_ids`"):
        train_flows(key, p, sched, seed_ids=jnp.arange(3), **_SMALL)


def test_training_reduces_kl_on_a_unimodal_target(getkey):
    # a shifted, narrower Gaussian, β ≡ 1: the objective (NF5) is the KL, and it must drop
    p = GaussianMixture(jnp.array([[1.0, -1.0], [1.0, -1.0]]), jnp.array([0.5, 0.5]), 0.7)
    run = train_flows(getkey(), p, LinearSchedule(1.0, 1.0), **_SMALL)
    initial_kl = run.loss[:, 0]
    assert jnp.all(initial_kl > 1.5)
    assert jnp.all(run.kl < 0.1 * initial_kl), (run.kl, initial_kl)
    assert jnp.all(run.loss[:, 1:] < 0.2 * initial_kl[:, None])


def test_sgd_is_plain_gradient_descent():
    from modecollapse._flows._vi import _optimizer

    grads = {"w": jnp.array([1.0, -2.0])}
    updates, _ = _optimizer("sgd", 0.1).update(grads, _optimizer("sgd", 0.1).init(grads))
    np.testing.assert_allclose(updates["w"], [-0.1, 0.2])
    assert _optimizer("adam", 0.1) is _optimizer("adam", 0.1)  # cached: compilations reused


@pytest.mark.parametrize(
    "edit,key",
    [
        (("layers = 2", "layers = 0"), "flow.layers"),
        (('optimizer = "adam"', 'optimizer = "rmsprop"'), "flow.optimizer"),
        (("learning_rate = 0.01", "learning_rate = -1.0"), "flow.learning_rate"),
        (("records = 3", "records = 7"), "flow.records"),
        (("seeds = 2", "seeds = 2\ncolour = 1"), "flow.colour"),
        (("width = 8", 'width = "wide"'), "flow.width"),
    ],
)
def test_bad_flow_table(tmp_path, capsys, edit, key):
    path = tmp_path / "exp.toml"
    assert edit[0] in SMALL_FLOW
    path.write_text(SMALL_FLOW.replace(edit[0], edit[1]))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["flow", "--config", str(path), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`{key}`" in err, err
    assert not out.exists()


def test_flow_table_is_optional_and_parsed():
    exp = parse_experiment(tomllib.loads(SMALL_FLOW))
    assert exp.flow is not None and exp.flow.layers == 2 and exp.flow.optimizer == "adam"
    assert exp.to_dict()["flow"]["steps"] == 60
    no_flow = SMALL_FLOW[: SMALL_FLOW.index("\n# Built-in flow")]
    assert parse_experiment(tomllib.loads(no_flow)).flow is None
    assert "flow" not in parse_experiment(tomllib.loads(no_flow)).to_dict()


def test_cli_flow(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text(SMALL_FLOW)
    out = tmp_path / "out"
    main(["flow", "--config", str(path), "--out", str(out), "--no-progress"])
    assert sorted(p.name for p in out.iterdir()) == ["flow.png", "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert set(result["outcome"]["labels"]) == set(LABELS)
    assert len(result["masses"]) == 2 and len(result["masses"][0]) == 4
    assert result["config"]["flow"]["steps"] == 60
    assert "learning_rate" in result["time_convention"]
    assert all(s["L_lower"] <= s["L_upper"] for s in result["pushforward"])
    assert (out / "flow.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_annealing_lowers_collapse_on_the_same_seeds():
    # 2-D bimodal target, modes ±5σ apart from the origin; 32 seeds, identical initialisations
    # and particles with and without annealing
    p = _bimodal(norm=5.0)
    kw = dict(
        seeds=32,
        layers=6,
        width=32,
        steps=1500,
        learning_rate=0.01,
        particles=128,
        records=15,
        lipschitz=False,
        dtype=jnp.float32,
    )
    plain = train_flows(jr.key(0), p, NoAnnealing(), **kw)
    annealed = train_flows(jr.key(0), p, LinearSchedule(0.1, 10.0), **kw)
    covered = LABELS.index("covered")
    frac = lambda run: float(jnp.mean(run.label != covered))  # noqa: E731
    assert frac(annealed) < frac(plain) - 0.15, (frac(annealed), frac(plain))


def test_label_stable_on_synthetic_trajectories():
    rho = jnp.array([0.6, 0.4])
    times = jnp.linspace(0.0, 10.0, 11)  # the last 20%: t = 8, 9, 10
    covered = jnp.tile(jnp.array([0.6, 0.4]), (11, 1))
    assert bool(label_stable(covered, times, rho))
    lost_early = covered.at[5:, 1].set(0.0)  # lost at t = 5: missed at every late record
    assert bool(label_stable(lost_early, times, rho))
    lost_late = covered.at[9:, 1].set(0.0)  # lost at t = 9, inside the window
    assert not bool(label_stable(lost_late, times, rho))
    assert bool(label_stable(lost_late, times, rho, window=0.1))  # window t ≥ 9 only
    regained = lost_early.at[8, 1].set(0.3)  # back above 0.1·0.4 at t = 8, then lost again
    assert not bool(label_stable(regained, times, rho))


def test_flow_steps_from_settle():
    raw = tomllib.loads(SMALL_FLOW.replace("steps = 60\n", "settle = 5.0\n"))
    exp = parse_experiment(raw)  # linear, duration 10, learning rate 0.01, 3 records
    assert flow_annealing_time(exp) == 10.0
    assert flow_steps(exp) == 1500 and flow_steps(exp) % exp.flow.records == 0
    raw["annealing"]["beta0"] = 1.0  # no annealing: only the settle time
    assert flow_annealing_time(parse_experiment(raw)) == 0.0
    assert flow_steps(parse_experiment(raw)) == 501  # 5 / 0.01 rounded up to a multiple of 3
    raw["annealing"] = {"kind": "exponential", "beta0": 0.1, "rate": 0.5}
    assert flow_annealing_time(parse_experiment(raw)) == pytest.approx(6.0)  # 3 / rate (A2)
    # the same τ as the schedules' own rule (A2), which the jax-free config cannot import
    assert flow_annealing_time(parse_experiment(raw)) == pytest.approx(
        annealing_time("exponential", {"beta0": 0.1, "rate": 0.5})
    )
    # the file written back (`config --show`, result.json) parses to the same experiment
    assert parse_experiment(tomllib.loads(experiment_toml(exp))) == exp
    assert "steps" not in exp.to_dict()["flow"]
    both = SMALL_FLOW.replace("steps = 60\n", "steps = 60\nsettle = 5.0\n")
    with pytest.raises(ConfigError, match="`flow.settle`"):
        parse_experiment(tomllib.loads(both))


def _flow_sweep_toml(tmp_path, extra_parameters=""):
    text = SMALL_FLOW.replace("steps = 60\n", "settle = 0.3\n").replace(
        "seeds = 2\n", 'seeds = 2\nprecision = "float32"\n'
    )
    text += f"""
[sweep]
seeds = 3
chunk = 64

[sweep.parameters]
"annealing.beta0" = [0.2, 1.0]
"annealing.duration" = [0.2, 0.21]
{extra_parameters}
"""
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_flow_sweep_cells(tmp_path, capsys):
    path = _flow_sweep_toml(tmp_path)
    out = tmp_path / "out"
    main(["flow", "--config", str(path), "--out", str(out), "--no-progress"])
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "flow_sweep.png", "result.json"]
    result = json.loads((out / "result.json").read_text())
    cells = result["cells"]
    assert [(c["beta0"], c["tau"]) for c in cells] == [
        (0.2, 0.2),
        (0.2, 0.21),
        (1.0, 0.0),
        (1.0, 0.0),
    ]
    # each cell trains to τ + settle, in whole record intervals: both τ round to 51 steps (one
    # compiled batch of two schedules), β0 = 1 to 30
    assert [c["steps"] for c in cells] == [51, 51, 30, 30]
    assert all(c["t_end"] == pytest.approx(c["steps"] * 0.01) for c in cells)
    for c in cells:
        assert c["seeds"] == 3 and sum(c["labels"].values()) == 3
        assert 0.0 <= c["stable_fraction"] <= 1.0 and 0.0 <= c["p_collapse_theory"] <= 1.0
        assert c["ci"][0] <= (c["p_collapse"] or 0.0) <= c["ci"][1]
        assert len(c["mean_masses"]) == len(c["times"]) == 4
    # β0 = 1 at two τ: one shared run (identical flows), so identical records
    assert cells[2]["mean_masses"] == cells[3]["mean_masses"]
    # common random numbers: the cells' flows start from the same seeds (same t = 0 masses)
    assert cells[0]["mean_masses"][0] == cells[1]["mean_masses"][0] == cells[2]["mean_masses"][0]
    rows = (out / "cells.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("d,target,schedule,optimizer")
    assert "learning_rate" in result["time_convention"] and result["flow_steps"] > 0


def test_flow_sweep_refuses_flow_parameters(tmp_path, capsys):
    path = _flow_sweep_toml(tmp_path, '"flow.learning_rate" = [0.01, 0.02]')
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["flow", "--config", str(path), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`sweep.parameters.flow.learning_rate`" in err, err
    assert not out.exists()


def test_flow_law_and_covered_figures():
    from modecollapse.figures import flow_covered_figure, flow_law_figure

    law = [
        {
            "d": d,
            "target": [0.6, 0.4],
            "schedule": "linear",
            "optimizer": opt,
            "beta0": 0.1,
            "taus": [4.0, 16.0, 64.0],
            "p_collapse": [0.9, 0.5, None],
            "p_collapse_theory": [0.4, 0.2, 0.1],
            "p_unannealed": 0.95,
            "p_unannealed_theory": 0.45,
        }
        for d in (2, 8)
        for opt in ("sgd", "adam")
    ]
    assert flow_law_figure(law)[:4] == b"\x89PNG"
    line = {"label": "d = 2", "times": [0, 1, 2], "covered_fraction": [1, 0.9, 0.8]}
    panels = [{"title": "t", "lines": [{**line, "minor_mass": [0.4, 0.3, 0.2], "tau": 1.0}]}]
    assert flow_covered_figure(panels + [{"title": "empty", "lines": []}])[:4] == b"\x89PNG"
