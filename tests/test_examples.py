"""Every committed figure's experiment file under examples/ is a valid experiment and sweep."""

import dataclasses
import pathlib
import tomllib

import pytest

import modecollapse as mc

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.toml"))


def test_there_is_an_example_per_figure_family():
    names = {p.stem for p in EXAMPLES}
    assert {"phase_a", "phase_b", "phase_c", "flow_phase_theory"} <= names
    assert sum(n.startswith("annealing_") for n in names) == 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parses_as_a_sweep(path):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    plan = mc.plan_sweep(raw, "theory")
    assert plan.points and all(len(v) >= 1 for v in plan.values)
    base = dict(raw)
    base.pop("sweep")
    assert mc.parse_experiment(base) == dataclasses.replace(plan.base, sweep=None)


FLOW_THEORY = sorted(
    (pathlib.Path(__file__).parent.parent / "examples" / "flow_theory").glob("*.toml")
)


def test_flow_theory_files_cover_the_grid():
    # every d, schedule and optimizer of scripts/flow_theory.py, one file each
    names = {p.stem for p in FLOW_THEORY}
    assert names == {
        f"d{d}_{s}_{o}"
        for d in (2, 8, 32, 128)
        for s in ("linear", "exponential")
        for o in ("sgd", "adam")
    }


@pytest.mark.parametrize("path", FLOW_THEORY, ids=lambda p: p.stem)
def test_flow_theory_file_is_a_flow_sweep(path):
    from modecollapse.jobs import flow_sweep_plan

    with open(path, "rb") as f:
        plan = flow_sweep_plan(tomllib.load(f))
    d, schedule, optimizer = path.stem.split("_")
    base = plan.base
    assert base.dim == int(d[1:]) and base.annealing.kind == schedule
    assert base.flow is not None and base.flow.optimizer == optimizer and base.flow.settle
    assert plan.seeds >= (64 if base.dim == 128 else 128)
    taus = {mc.flow_annealing_time(p) for p in plan.points}
    assert {0.0, 4.0, 64.0} <= taus  # τ = 0: the unannealed cells (β0 = 1)
    # the theory runs to each cell's flow t_end, τ + settle
    for p in plan.points:
        assert p.t_end == pytest.approx(p.flow.learning_rate * mc.flow_steps(p))
        assert p.t_end >= mc.flow_annealing_time(p) + base.flow.settle - 1e-9


CHECKS = sorted(
    (pathlib.Path(__file__).parent.parent / "examples" / "flow_theory_checks").glob("*.toml")
)


@pytest.mark.parametrize("path", CHECKS, ids=lambda p: p.stem)
def test_flow_theory_check_is_a_flow_sweep(path):
    from modecollapse.jobs import flow_sweep_plan

    with open(path, "rb") as f:
        plan = flow_sweep_plan(tomllib.load(f))
    assert plan.base.flow is not None and plan.base.flow.settle and plan.points
