"""Normalizing-flow VI (docs/theory.md, §15): `_realnvp` (RealNVP), `_vi` (training under
annealing; the `OPTIMIZERS` registry) and `_pushforward` (the Lipschitz lower bound)."""
