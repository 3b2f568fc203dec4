"""Numerics: exact 1-D Gaussian integrals (`_integrals`, §8), Gaussian expectations of softmax
statistics (`_expectations`, (G2)–(G8)) and their randomized cross-check (`_cells`, (G9)), the
PSD factor and the one rank rule (`_linalg`, (RK1)), and dtype-keeping converters (`_dtypes`).
Nothing here knows about mixtures or flows."""
