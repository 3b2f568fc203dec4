"""Dynamics: `_solve` (the one `diffeqsolve` call, the `SOLVERS` registry), `_rates` (Λ), `_full`
(the full flow (D1)), `_theory` (the closed ODE (T1)–(T5)), `_noise` (SGD correction, §12), `_limit`
(the d → ∞ route, §11) and `_initial` (the exact initial law, §9)."""
