#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv from the pinned
# CPU requirements. Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON_BIN --version)"
    "$PYTHON_BIN" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat envs/requirements-cpu.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing pinned requirements (envs/requirements-cpu.txt)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r envs/requirements-cpu.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
fi
.venv/bin/python -c "import torch, snakemake, sacrebleu; print('[setup] torch', torch.__version__, '| snakemake', snakemake.__version__, '| sacrebleu', sacrebleu.__version__)"
