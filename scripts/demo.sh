#!/usr/bin/env bash
# Command 1: set up the environment and run the whole DAG on the embedded demo
# corpus (CPU only), ending in every table and figure plus the HTML report.
#   bash scripts/demo.sh                 # the demo (config/demo.yaml)
#   bash scripts/demo.sh --configfile config/smoke.yaml   # any extra snakemake arguments
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
start=$(date +%s)
.venv/bin/snakemake --profile profiles/local "$@"
run=$(.venv/bin/python - "$@" <<'PY'
import sys, yaml
args = sys.argv[1:]
cfg = "config/demo.yaml"
if "--configfile" in args:
    cfg = args[args.index("--configfile") + 1]
print(yaml.safe_load(open(cfg))["run_name"])
PY
)
.venv/bin/snakemake --profile profiles/local "$@" --report "results/$run/report.html" >/dev/null 2>&1 \
    || echo "[demo] note: the HTML report could not be built (see snakemake --report)"
echo
echo "[demo] finished in $(( $(date +%s) - start )) s"
echo "[demo] tables and figures: results/$run/paper/ (index: results/$run/paper/README.md)"
echo "[demo] HTML report:        results/$run/report.html"
