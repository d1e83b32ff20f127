#!/usr/bin/env bash
# The GPU tier of the fidelity testbed (issue 26), one command on a fresh, offline GPU machine:
# install the carried wheels, run gpu_check, run the GPU-tier DAG through Snakemake with the
# jobs sharing the GPUs, and write ONE archive with everything that finished.
#
#   benchmarks/gpu_tier.sh --out DIR [--deadline-s S] [--slots N] [--gpus 0,1] [--rehearse]
#
#   --out DIR        where gpu_tier.tgz goes (written even when the DAG fails or runs out of time)
#   --deadline-s S   stop the DAG cleanly so that the script ends within S seconds of its start
#                    (training jobs checkpoint and exit 75; what finished is archived); default 570
#   --slots N        jobs per GPU (AEQA_GPU_SLOTS; default 7)
#   --gpus IDS       the GPUs to share (default: every GPU nvidia-smi lists; 0 without nvidia-smi)
#   --rehearse       the CPU rehearsal CI runs: toy sizes on 2000 DDTP pairs, --device cpu,
#                    the same phases, archive and checks (config/fidelity-gpu-rehearse.yaml)
#
# Carry to the GPU machine: the project, .whl (bash ../shared/device/wheelhouse.sh .venv/bin/python
# .whl) and results/fidelity-gpu/data, made here by the data stages:
#   snakemake --cores 2 --configfile config/fidelity.yaml config/fidelity-gpu.yaml --config device=cpu \
#       --until binarize
# Carried files get new times; the data phase below re-marks them up to date (snakemake --touch),
# so nothing is downloaded or redone there. PYTHON selects the interpreter (default: .venv/bin/python
# when it exists, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out="" deadline=570 slots=7 gpus="" rehearse=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2;;
        --deadline-s) deadline=$2; shift 2;;
        --slots) slots=$2; shift 2;;
        --gpus) gpus=$2; shift 2;;
        --rehearse) rehearse=1; shift;;
        *) echo "gpu_tier: unknown argument $1 (see the header of $0)" >&2; exit 2;;
    esac
done
[ -n "$out" ] || { echo "gpu_tier: --out DIR is required (where gpu_tier.tgz goes)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_tier.XXXXXX")
phases="$work/phases.tsv"
phase() {  # phase NAME COMMAND...: run it, record its wall time and exit code, never stop the script
    local name=$1; shift
    local t0; t0=$(date +%s)
    echo "gpu_tier: $name ..." >&2
    set +e; "$@"; local code=$?; set -e
    printf '%s\t%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" "$code" >> "$phases"
    return 0
}
left() { echo $(( deadline - ($(date +%s) - start) )); }
until_deadline() {  # until_deadline SECONDS COMMAND...: in a process group of its own; at the deadline
    # SIGTERM goes to every process of it (Snakemake and each job: training checkpoints, exits 75),
    # SIGKILL 30 s later to what is left. Exit code 124 when the deadline was reached.
    local limit=$1; shift
    setsid "$@" & local pid=$! t0; t0=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        if [ $(( $(date +%s) - t0 )) -ge "$limit" ]; then
            echo "gpu_tier: deadline reached: SIGTERM to the DAG and its jobs" >&2
            kill -TERM -- "-$pid" 2>/dev/null
            for _ in $(seq 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
            kill -KILL -- "-$pid" 2>/dev/null
            wait "$pid"
            return 124
        fi
        sleep 1
    done
    wait "$pid"
}

if [ "$rehearse" = 1 ]; then
    configs=(config/fidelity.yaml config/fidelity-gpu.yaml config/fidelity-gpu-rehearse.yaml)
    device=cpu; check_args=(--quick --device cpu)
else
    configs=(config/fidelity.yaml config/fidelity-gpu.yaml)
    device=cuda; check_args=()
fi
# 1. the wheels carried in .whl, when this interpreter lacks the project's packages
if ! "$PYTHON" -c 'import snakemake, sacremoses, subword_nmt' 2>/dev/null; then
    [ -d .whl ] || { echo "gpu_tier: $PYTHON lacks snakemake and there is no .whl to install (see the header)" >&2; exit 2; }
    site="$work/site"
    phase wheels "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
read -r run bin_reports < <("$PYTHON" benchmarks/gpu_tier.py info "${configs[@]}")
if [ -z "$gpus" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)
    fi
    gpus=${gpus:-0}
fi
ngpus=$(echo "$gpus" | tr ',' '\n' | grep -c .)
export AEQA_GPU_SLOTS=$slots AEQA_GPU_IDS=$gpus AEQA_GPU_LOCK_DIR="$work/gpu-slots"
smk=("$PYTHON" -m snakemake --profile profiles/gpu-local --configfile "${configs[@]}")  # the configs set device

# 2. gpu_check: the device, the versions, throughput and host-sync checks
phase gpu_check bash benchmarks/gpu_check.sh "${check_args[@]}" --out "$work/gpu_check"
# 3. the data stages: carried ones re-marked up to date; in the rehearsal (or when not carried) made here
missing=0
for report in ${bin_reports//,/ }; do [ -f "$report" ] || missing=1; done
if [ "$missing" = 0 ]; then
    phase data "${smk[@]}" --touch ${bin_reports//,/ }
elif [ "$rehearse" = 1 ]; then
    phase data "${smk[@]}" --cores 2 ${bin_reports//,/ }
else
    echo "gpu_tier: results/$run/data is missing: carry it (see the header of $0); nothing can be downloaded here" >&2
    printf 'data\t0\t2\n' >> "$phases"
fi
# 4. the DAG, the jobs sharing the GPUs; stopped (SIGTERM: checkpoints, exit 75) 45 s before the deadline,
#    which leaves 30 s for the jobs to checkpoint and the rest for the archive
budget=$(( $(left) - 45 ))
if [ "$budget" -gt 0 ] && ! grep -q $'^data\t[0-9]*\t[^0]' "$phases"; then
    phase dag until_deadline "$budget" "${smk[@]}" --resources "gpu=$(( ngpus * slots ))"
else
    printf 'dag\t0\tskipped\n' >> "$phases"
fi
# 5. summary.md and the one archive (always)
"$PYTHON" benchmarks/gpu_tier.py archive --run "results/$run" --phases "$phases" --gpu-check "$work/gpu_check" \
    --started "$start" --device "$device" --gpus "$gpus" --slots "$slots" --out "$out/gpu_tier.tgz"
code=$(awk -F'\t' '$3 != "0" {bad = 1} END {print bad ? 1 : 0}' "$phases")
rm -rf "$work"
exit "$code"
