"""Annealing as library code: `_schedules` (β(t) and the one `SCHEDULES` table, §6), `_formula`
(the sharp P(collapse) formula and its `FormulaSetting`, §13) and `_design` (schedule optimisation,
§14). The `design` CLI job is `_jobs/_design.py`."""
