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
