#!/usr/bin/env python
"""GPU-hours of the training runs each table and figure needs, from a config alone.

    python scripts/gpu_hours.py [--configfile config/config.yaml] [--format md|json]

Every training run an output needs is counted: its own cells, the AT teacher of
each (dataset, direction) it uses (distillation and the speed reference) and the
significance baseline (evaluate.significance_baseline) of each (dataset,
direction, data). A run's cost is the runtime formula of docs/cluster.md
(aeqa_model.cluster.training_budget, the same function that sets the SLURM
runtimes): expected GPU-hours = max_updates x tokens per update / tokens/s per
GPU, and the SLURM reservation, x the safety factor. Runs shared by several
outputs are counted once in the total. Distillation, SQS pre-alignment and
decoding are not included (see docs/cluster.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aeqa_model import cluster  # noqa: E402
from aeqa_model.config import load_config  # noqa: E402
from aeqa_model.paper.grid import training_runs  # noqa: E402


def run_stage(config: dict, data: str, model: str) -> str:
    return "train_teacher" if model == config["distill"]["teacher"] and data == "raw" else "train_nat"


def costs(config: dict) -> dict:
    """{output: {runs, gpu_hours, reserved_gpu_hours, longest_hours}}, plus 'total'."""
    teacher = config["distill"]["teacher"]
    baseline = config["evaluate"].get("significance_baseline")
    budgets = {}

    def cost(runs) -> dict:
        out = {"runs": len(runs), "gpu_hours": 0.0, "reserved_gpu_hours": 0.0, "longest_hours": 0.0,
               "slurm_jobs": 0}
        for ds, di, data, model in sorted(runs):
            key = (ds, data, model)
            if key not in budgets:
                budgets[key] = cluster.training_budget(config, run_stage(config, data, model), ds, model)
            b = budgets[key]
            out["gpu_hours"] += b["gpu_hours"]
            out["reserved_gpu_hours"] += b["reserved_gpu_hours"]
            out["longest_hours"] = max(out["longest_hours"], b["hours"])
            out["slurm_jobs"] += b["jobs"]
        return out

    result, every = {}, set()
    for name, spec in config.get("outputs", {}).items():
        runs = training_runs({"outputs": {name: spec}}, teacher=teacher, significance_baseline=baseline)
        every |= runs
        result[name] = cost(runs)
    result["total"] = cost(every)
    return result


def markdown(config: dict, table: dict) -> str:
    throughput = config.get("throughput") or {}
    lines = [f"| output | training runs | GPU-hours (expected) | GPU-hours reserved (x{throughput.get('safety_factor', 1)}) "
             f"| longest run, hours on its GPUs |",
             "|---|---|---|---|---|"]
    for name, row in table.items():
        label = "**full reproduction** (every output, shared runs once)" if name == "total" else name
        lines.append(f"| {label} | {row['runs']} | {row['gpu_hours']:,.0f} | {row['reserved_gpu_hours']:,.0f} "
                     f"| {row['longest_hours']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default=str(ROOT / "config/config.yaml"))
    p.add_argument("--format", choices=["md", "json"], default="md")
    args = p.parse_args(argv)
    config = load_config(args.configfile, ROOT)
    if not (config.get("throughput") or {}).get("tokens_per_s"):
        p.error(f"{args.configfile} has no throughput.tokens_per_s section")
    table = costs(config)
    print(json.dumps(table, indent=1, sort_keys=True) if args.format == "json" else markdown(config, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
