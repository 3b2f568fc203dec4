"""modecollapse: variational inference on Gaussian-mixture targets, and when it collapses.

Layout (each private module names the equations of docs/theory.md it implements):

- targets and families: `_mixtures` (GaussianMixture, IsotropicMixture);
- Gaussian integrals: `_integrals` (1-D, exact), `_expectations` (logit statistics);
- objectives and estimators: `_objective`;
- full flow: `_flow`; theory (summary statistics): `_summary`, `_theory`;
- schedules: `_schedules`; metrics: `metrics` (`_metrics`);
- experiments and CLI: `_config`, `_experiment`, `_run`, `_cli`.
"""

import importlib.metadata

from . import metrics as metrics
from ._config import (
    ConfigError as ConfigError,
    Experiment as Experiment,
    load_experiment as load_experiment,
    parse_experiment as parse_experiment,
)
from ._expectations import (
    expected_lse as expected_lse,
    expected_softmax_stats as expected_softmax_stats,
    gaussian_expectation as gaussian_expectation,
)
from ._experiment import (
    NumericalFailure as NumericalFailure,
    build_problem as build_problem,
)
from ._flow import LearningRates as LearningRates, solve_full as solve_full
from ._initial import (
    initial_state as initial_state,
    sample_initial_overlaps as sample_initial_overlaps,
    sample_initial_states as sample_initial_states,
)
from ._integrals import sigmoid_moment as sigmoid_moment
from ._limit import (
    extensive_rates as extensive_rates,
    limit_vector_field as limit_vector_field,
    normalise as normalise,
    solve_limit as solve_limit,
)
from ._mixtures import (
    AbstractIsotropicMixture as AbstractIsotropicMixture,
    GaussianMixture as GaussianMixture,
    IsotropicMixture as IsotropicMixture,
    TemperedTarget as TemperedTarget,
)
from ._noise import (
    gradient_noise_trace as gradient_noise_trace,
    sgd_noise_correction as sgd_noise_correction,
    solve_theory_sgd as solve_theory_sgd,
)
from ._objective import (
    AbstractEstimator as AbstractEstimator,
    ExactEstimator as ExactEstimator,
    FixedParticles as FixedParticles,
    FreshParticles as FreshParticles,
    gram_objective as gram_objective,
    mc_objective as mc_objective,
    objective as objective,
)
from ._schedules import (
    AbstractSchedule as AbstractSchedule,
    ExponentialSchedule as ExponentialSchedule,
    GeometricSchedule as GeometricSchedule,
    LinearSchedule as LinearSchedule,
    NoAnnealing as NoAnnealing,
)
from ._solve import SolverOptions as SolverOptions
from ._summary import (
    GramState as GramState,
    TargetStatistics as TargetStatistics,
    Trajectory as Trajectory,
)
from ._sweep import plan_sweep as plan_sweep, run_sweep as run_sweep, summarise as summarise
from ._theory import solve_theory as solve_theory, theory_vector_field as theory_vector_field

__version__ = importlib.metadata.version("modecollapse")
