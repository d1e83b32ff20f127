#!/usr/bin/env bash
# One GPU check (issue 15): decode_speed and aeqa_overhead at base size,
# train_throughput of every architecture in fp32 and bf16, and one training step
# of every architecture under torch.cuda.set_sync_debug_mode("error"); then one
# summary table with the device and the versions. Needs only torch and this
# repository (no Snakemake); about 2-3 minutes on one H100-class GPU.
#
#   benchmarks/gpu_check.sh                  # on the GPU torch sees
#   benchmarks/gpu_check.sh --out gpucheck/  # also keep every step's output
#   benchmarks/gpu_check.sh --quick --device cpu   # toy-size self-check, also on a CPU
#
# PYTHON selects the interpreter (default: python3); AEQA_GPU_CHECK_QUICK=1 is --quick.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
