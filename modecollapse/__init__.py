"""modecollapse: variational inference on Gaussian-mixture targets, and when it collapses.

The public API is this namespace plus `modecollapse.metrics`, `modecollapse.figures` and
`modecollapse.jobs`. The implementation lives in private rooms, one per layer; each module names
the equations of docs/theory.md it implements (README, "Architecture"):

- `_numerics/`: 1-D Gaussian integrals, softmax expectations, the Rényi integral, the PSD factor
  and rank rule, dtypes;
- `_mixtures`, `_summary`, `_objective`: models, summary statistics (G1), the objectives (F,
  Rényi-α, forward KL);
- `_estimators/`: exact, fixed, fresh and projected particle gradients, with one registry;
- `_dynamics/`: the one solve entry, rates, the full flow, the theory ODE, SGD noise, the
  d → ∞ limit and the exact initial law;
- `_annealing/`: schedules (one table), the P(collapse) formula and schedule design;
- `_metrics` (`metrics`): collapse metrics, the outcome classifier and its labels;
- `_flows/`: RealNVP, flow VI and the push-forward bound;
- `_experiments/`: the jax-free config, problem building, sweeps, records and atomic IO;
- `_figures/` (`figures`): PNG figures of every record;
- `_jobs/` (`jobs`): one module per CLI command; `_cli`: argparse and one command table.
"""

import importlib.metadata

from . import metrics as metrics  # figures and jobs import matplotlib: imported when asked for
from ._annealing._design import optimise_schedule as optimise_schedule
from ._annealing._formula import (
    CollapseFormula as CollapseFormula,
    FormulaRegimeWarning as FormulaRegimeWarning,
    FormulaSetting as FormulaSetting,
    collapse_formula_terms as collapse_formula_terms,
    formula_regime as formula_regime,
    p_collapse_formula as p_collapse_formula,
)
from ._annealing._schedules import (
    SCHEDULES as SCHEDULES,
    AbstractSchedule as AbstractSchedule,
    ExponentialSchedule as ExponentialSchedule,
    GeometricSchedule as GeometricSchedule,
    LinearSchedule as LinearSchedule,
    NoAnnealing as NoAnnealing,
    annealing_time as annealing_time,
    design_parameters as design_parameters,
    make_schedule as make_schedule,
    schedule_from_kind as schedule_from_kind,
    schedule_parameters as schedule_parameters,
)
from ._dynamics._full import full_vector_field as full_vector_field, solve_full as solve_full
from ._dynamics._initial import (
    initial_state as initial_state,
    sample_initial_overlaps as sample_initial_overlaps,
    sample_initial_states as sample_initial_states,
)
from ._dynamics._limit import (
    extensive_rates as extensive_rates,
    limit_vector_field as limit_vector_field,
    normalise as normalise,
    solve_limit as solve_limit,
)
from ._dynamics._noise import (
    gradient_noise_trace as gradient_noise_trace,
    sgd_noise_correction as sgd_noise_correction,
    solve_theory_sgd as solve_theory_sgd,
)
from ._dynamics._rates import LearningRates as LearningRates
from ._dynamics._solve import SolverOptions as SolverOptions
from ._dynamics._theory import (
    pullback_vector_field as pullback_vector_field,
    solve_theory as solve_theory,
    solve_theory_lanes as solve_theory_lanes,
    theory_vector_field as theory_vector_field,
)
from ._estimators._estimators import (
    AbstractEstimator as AbstractEstimator,
    ExactEstimator as ExactEstimator,
    FixedParticles as FixedParticles,
    FreshParticles as FreshParticles,
    ProjectedFreshParticles as ProjectedFreshParticles,
)
from ._estimators._particles import (
    chunk_noise as chunk_noise,
    default_chunk as default_chunk,
    particle_noise as particle_noise,
    particle_objective as particle_objective,
    particle_value_and_grad as particle_value_and_grad,
    projected_value_and_grad as projected_value_and_grad,
)
from ._experiments._config import (
    ConfigError as ConfigError,
    Experiment as Experiment,
    FlowConfig as FlowConfig,
    flow_annealing_time as flow_annealing_time,
    flow_steps as flow_steps,
    load_experiment as load_experiment,
    parse_experiment as parse_experiment,
)
from ._experiments._io import write_file as write_file
from ._experiments._problem import (
    STATISTICS as STATISTICS,
    NumericalFailure as NumericalFailure,
    Problem as Problem,
    build_problem as build_problem,
    run_full as run_full,
    run_theory as run_theory,
)
from ._experiments._sweep import (
    one_cpu_device_per_core as one_cpu_device_per_core,
    plan_sweep as plan_sweep,
    prefer_wide_cpu_vectors as prefer_wide_cpu_vectors,
    run_sweep as run_sweep,
    summarise as summarise,
    sweep_chunk as sweep_chunk,
    sweep_inputs as sweep_inputs,
    sweep_solver_options as sweep_solver_options,
    sweep_theory_solves as sweep_theory_solves,
)
from ._flows._pushforward import (
    halfspace_masses as halfspace_masses,
    lipschitz_lower as lipschitz_lower,
    lipschitz_upper as lipschitz_upper,
    mixture_tv_bound as mixture_tv_bound,
    pushforward_tv_bound as pushforward_tv_bound,
    required_lipschitz as required_lipschitz,
    tv_estimate as tv_estimate,
    tv_threshold as tv_threshold,
)
from ._flows._realnvp import AffineCoupling as AffineCoupling, RealNVP as RealNVP
from ._flows._vi import (
    LIPSCHITZ_TAIL as LIPSCHITZ_TAIL,
    FlowTraining as FlowTraining,
    classify_flow as classify_flow,
    example_seeds as example_seeds,
    flow_objective as flow_objective,
    init_flows as init_flows,
    label_stable as label_stable,
    train_flows as train_flows,
)
from ._jobs._design import design_experiment as design_experiment
from ._mixtures import (
    AbstractIsotropicMixture as AbstractIsotropicMixture,
    GaussianMixture as GaussianMixture,
    IsotropicMixture as IsotropicMixture,
    TemperedTarget as TemperedTarget,
)
from ._numerics._cells import qmc_softmax_stats as qmc_softmax_stats
from ._numerics._expectations import (
    SoftmaxAccuracyWarning as SoftmaxAccuracyWarning,
    default_softmax_rule as default_softmax_rule,
    expected_lse as expected_lse,
    expected_softmax_stats as expected_softmax_stats,
    gaussian_expectation as gaussian_expectation,
    refined_softmax_stats as refined_softmax_stats,
    softmax_stats_error as softmax_stats_error,
)
from ._numerics._integrals import (
    sigmoid_moment as sigmoid_moment,
    sigmoid_moments as sigmoid_moments,
)
from ._numerics._tilted import log_expected_exp_lse as log_expected_exp_lse
from ._objective import (
    DIVERGENCES as DIVERGENCES,
    AbstractDivergence as AbstractDivergence,
    ForwardKL as ForwardKL,
    Renyi as Renyi,
    ReverseKL as ReverseKL,
    forward_kl_gram_objective as forward_kl_gram_objective,
    gram_objective as gram_objective,
    mc_objective as mc_objective,
    objective as objective,
    renyi_finite as renyi_finite,
    renyi_gram_objective as renyi_gram_objective,
)
from ._summary import (
    GramState as GramState,
    TargetStatistics as TargetStatistics,
    Trajectory as Trajectory,
)

__version__ = importlib.metadata.version("modecollapse")
