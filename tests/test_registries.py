"""Each registry is written once in the library; the jax-free config checks the same names."""

from modecollapse._dynamics._solve import SOLVERS
from modecollapse._experiments import _config
from modecollapse._flows._vi import OPTIMIZERS


def test_solver_names_match_the_solver_registry():
    assert tuple(_config.SOLVERS) == tuple(SOLVERS)


def test_flow_optimizer_names_match_the_optimizer_registry():
    assert tuple(_config.FLOW_OPTIMIZERS) == tuple(OPTIMIZERS)
