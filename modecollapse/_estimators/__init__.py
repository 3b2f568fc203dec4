"""Gradient estimators of the full flow (docs/theory.md, §4, §4b): `_estimators` holds the
abstract-or-final estimator classes and the `ESTIMATORS` registry (name -> builder); `_particles`
holds the memory-lean chunked particle kernels and the exact-law projected gradient."""
