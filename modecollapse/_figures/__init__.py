"""Figures as PNG bytes: `_base` (backend, encoding, heatmap), `_runs` (run, compare, sweep,
agreement, design) and `_flows` (flow VI). Public through `modecollapse.figures`."""
