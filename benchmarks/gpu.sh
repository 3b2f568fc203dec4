#!/usr/bin/env bash
# One-command GPU benchmark: the sweep throughput (benchmarks/sweep_speed.py) and the full-flow
# particle gradient (benchmarks/full_flow.py) on the accelerator, each writing JSON into
# benchmarks/results/ with the device named. Finishes in under 5 minutes (each part has a limit).
#
#     bash benchmarks/gpu.sh            # from the repository root, on the GPU machine
#
# Needs jax with GPU support, diffrax and equinox (the GPU machine has them); installs the
# package's remaining dependencies into the current Python if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -c "import modecollapse" 2>/dev/null || "$PY" -m pip install -q --no-deps -e . >/dev/null
"$PY" -c "import jaxtyping, tqdm" 2>/dev/null || "$PY" -m pip install -q jaxtyping tqdm >/dev/null
mkdir -p benchmarks/results
DEVICE="$("$PY" -c 'import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)')"
echo "device: $DEVICE"
export MODECOLLAPSE_DEVICE="$DEVICE"
# sweep: one large chunk, one round (the baseline in a fresh process on the same device, and in
# this one). Lane refill keeps half the chunk in flight (the CPU default of 128 lanes per device
# would starve a GPU).
timeout 200 "$PY" benchmarks/sweep_speed.py --devices --batch "${GPU_BATCH:-131072}" --repeats 1 \
  --lanes "${GPU_LANES:-65536}" --solvers "" --waste-seeds 0 \
  --out benchmarks/results/sweep_speed_gpu.json
# full flow: the particle gradient at large d (no CPU-only parts)
timeout 80 "$PY" benchmarks/full_flow.py --dims 10000,1000000 --ns 4096 --dtypes float32 \
  --skip memory,torch,cli --out benchmarks/results/full_flow_gpu.json
echo "wrote benchmarks/results/sweep_speed_gpu.json and full_flow_gpu.json ($DEVICE)"
