"""Figures (PNG bytes) of runs, sweeps, the agreement benchmark, schedule design and flow VI.

Each figure function takes the JSON-ready record a job returns and gives the PNG file's bytes;
`png` encodes any matplotlib figure the same way, and `heatmap` draws a P(collapse) grid with its
Wilson intervals. The research scripts under `scripts/` build their figures from these.
"""

from ._figures._base import heatmap as heatmap, png as png
from ._figures._flows import (
    flow_covered_figure as flow_covered_figure,
    flow_figure as flow_figure,
    flow_law_figure as flow_law_figure,
    flow_sweep_figure as flow_sweep_figure,
    lipschitz_figure as lipschitz_figure,
    mode_mass_figure as mode_mass_figure,
    phase_comparison_figure as phase_comparison_figure,
)
from ._figures._runs import (
    agreement_figure as agreement_figure,
    compare_figure as compare_figure,
    design_figure as design_figure,
    overlaps_figure as overlaps_figure,
    phase_figure as phase_figure,
)
