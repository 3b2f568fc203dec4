"""Each registry is written once in the library; the jax-free config checks the same names."""

import dataclasses

from modecollapse._dynamics._solve import SOLVERS
from modecollapse._estimators._estimators import ESTIMATORS, AbstractEstimator
from modecollapse._experiments import _config
from modecollapse._flows._vi import OPTIMIZERS


def test_solver_names_match_the_solver_registry():
    assert tuple(_config.SOLVERS) == tuple(SOLVERS)


def test_flow_optimizer_names_match_the_optimizer_registry():
    assert tuple(_config.FLOW_OPTIMIZERS) == tuple(OPTIMIZERS)


def test_kernel_names_match_the_kernel_rules():
    from modecollapse._numerics._integrals import KERNELS

    assert tuple(_config.KERNELS) == KERNELS


def test_estimator_names_match_the_estimator_registry():
    assert tuple(_config.ESTIMATORS) == tuple(ESTIMATORS)


def test_make_estimator_builds_each_registered_estimator():
    import jax.random as jr

    from modecollapse._experiments._config import load_experiment
    from modecollapse._experiments._problem import make_estimator

    sim = load_experiment(None).simulation
    built = [make_estimator(dataclasses.replace(sim, estimator=n), jr.key(0)) for n in ESTIMATORS]
    assert all(isinstance(est, AbstractEstimator) for est in built)
    assert len({type(est) for est in built}) == len(ESTIMATORS)  # one class per name


def test_objective_kinds_match_the_divergence_registry():
    from modecollapse._objective import DIVERGENCES

    assert tuple(_config.OBJECTIVE_KINDS) == tuple(DIVERGENCES)
    assert all(cls.kind == name for name, cls in DIVERGENCES.items())
