"""Full-route validation of the phase diagrams (slow: run with `./scripts/test -m slow`).

At a 2×2 sub-grid of cells of each diagram, P(collapse) and P(mechanism) from the theory route
(2000 seeds, exact initial-law sampler) must have Wilson intervals overlapping those of the full
d-dimensional flow (300 seeds) at d = 1000.
"""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location(
        "phase_diagrams", os.path.join(ROOT, "scripts", "phase_diagrams.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_theory_and_full_route_agree(tmp_path, name):
    rows, _ = _script().validate(name, 2000, 300, str(tmp_path))
    assert len(rows) >= 4
    for row in rows:
        for what in ("p_collapse", "p_mechanism"):
            assert row[what]["overlap"], (row["cell"], what, row[what])
