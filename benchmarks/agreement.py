"""Agreement benchmark (committed run): writes benchmarks/results/agreement.{json,png}.

python benchmarks/agreement.py            # d = 16 ... 16384, 20 seeds
modecollapse agreement --out DIR --quick  # the same, quickly
"""

import json
import os

import jax

jax.config.update("jax_enable_x64", True)

from modecollapse.jobs import agreement  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    report, png = agreement(progress=True)
    out = os.path.join(ROOT, "benchmarks", "results")
    with open(os.path.join(out, "agreement.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "agreement.png"), "wb") as f:
        f.write(png)
    print("wrote benchmarks/results/agreement.json and agreement.png")
