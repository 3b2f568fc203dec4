"""Experiments: `_config` (the jax-free TOML layer: parsing, validation, defaults, the step check
(ST1)–(ST4)), `_problem` (experiment -> models, schedule, estimator), `_sweep` (batched, sharded,
checkpointed sweeps, results.nc) and `_io` (atomic files, JSON, timing)."""
