"""The jobs behind the CLI commands, as functions: each returns its JSON-ready record and figure.

`modecollapse NAME` runs the job of the same name and writes what it returns; these are the same
computations for scripts and notebooks. Nothing here writes files except `sweep_experiment`
(a checkpointed sweep writes its own folder).
"""

from ._jobs._agreement import agreement as agreement, run_dimension as run_dimension
from ._jobs._compare import compare_experiment as compare_experiment
from ._jobs._design import (
    design_experiment as design_experiment,
    formula_arguments as formula_arguments,
    simulate_collapse as simulate_collapse,
)
from ._jobs._flow import (
    cells_csv as cells_csv,
    flow_sweep_plan as flow_sweep_plan,
    run_flow_experiment as run_flow_experiment,
    run_flow_sweep as run_flow_sweep,
)
from ._jobs._run import run_experiment as run_experiment
from ._jobs._show_config import builtin_experiment as builtin_experiment, show_config as show_config
from ._jobs._sweep import sweep_experiment as sweep_experiment
