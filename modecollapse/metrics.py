"""Mode-collapse metrics (docs/theory.md, §9): masses, coverage, EMC, mode score, KL, outcome."""

from ._metrics import (
    LABELS as LABELS,
    Label as Label,
    Outcome as Outcome,
    OutcomeField as OutcomeField,
    Thresholds as Thresholds,
    classify as classify,
    collapse_crossing as collapse_crossing,
    component_mode_masses as component_mode_masses,
    entropic_mode_coverage as entropic_mode_coverage,
    label_index as label_index,
    mode_masses as mode_masses,
    mode_score as mode_score,
    outcome_fields as outcome_fields,
    sample_entropic_mode_coverage as sample_entropic_mode_coverage,
    sample_mode_masses as sample_mode_masses,
    sample_mode_score as sample_mode_score,
    trajectory_outcome as trajectory_outcome,
    wilson_interval as wilson_interval,
)
