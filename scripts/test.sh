#!/usr/bin/env bash
# Command 2: set up the environment and run the whole test suite (unit tests,
# the smoke DAG through Snakemake, the live SLURM controller tests when root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# As root (CI): install slurm-wlm and munge for the live SLURM tests (tests/slurm/).
# Once installed, the live tests must run: a skip there would hide a broken SLURM path.
if [ "$(id -u)" -eq 0 ]; then bash scripts/setup_slurm.sh; export AEQA_REQUIRE_SLURM="${AEQA_REQUIRE_SLURM:-1}"; fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$code"
