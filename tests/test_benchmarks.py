"""The benchmarks run end to end at toy scale and print what they promise (no timing
is asserted: speed is measured by running them, not by tests)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, script, *args], cwd=ROOT / "benchmarks", capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# ")
    return [json.loads(line) for line in lines[1:]]


def test_aeqa_overhead_prints_side_by_side_ratios():
    info, *rows = run_benchmark("aeqa_overhead.py", "--vocab", "300", "--sentences", "4", "--steps", "1",
                                "--rounds", "1", "--decode-sentences", "2")
    assert info["device"] == "cpu" and "torch" in info
    models = {row["model"]: row for row in rows if "model" in row}
    assert set(models) == {"vanilla_nat", "glat", "aeqa_nat", "aeqa_nat_uniform"}
    assert all(row["train_tokens_per_s"] > 0 for row in models.values())
    ratios = {row["ratio"]: row for row in rows if "ratio" in row}
    assert ratios["aeqa_nat/vanilla_nat"]["training_throughput"] > 0
    assert ratios["aeqa_nat/vanilla_nat"]["decoding_speed"] > 0


def test_decode_speed_reports_speedups_over_the_at():
    info, *rows = run_benchmark("decode_speed.py", "--vocab", "300", "--sentences", "2", "--rounds", "1")
    speedups = {row["model"]: row["speedup_over_AT"] for row in rows}
    assert speedups["AT (beam 4)"] == 1.0 and len(speedups) == 6
    assert all(value > 0 for value in speedups.values())
