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


def test_gpu_check_quick_runs_every_step_on_cpu_and_prints_one_summary():
    """benchmarks/gpu_check.sh in its quick CPU mode (toy sizes): every step exits 0 and
    the summary has the device line and one table per benchmark."""
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=900,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("# gpu_check --quick") and "torch " in out.splitlines()[0]
    for section in ("## Training target tokens/s", "## AEQA-NAT overhead", "## Batch-1 decoding",
                    "## Host syncs in one training step", "## Steps"):
        assert section in out, section
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for arch in ("at", "vanilla_nat", "ctc", "glat", "cmlm", "dat", "aeqa_nat", "aeqa_dat"):
        assert arch in rows, arch                                     # every architecture measured
    assert "| aeqa_nat/glat |" in out
    sync_rows = out.split("## Host syncs")[1].split("## Steps")[0]
    assert "| aeqa_nat | yes | yes |" in sync_rows and "| glat | yes | yes |" in sync_rows


def test_counted_flops_of_a_linear_training_step_by_hand():
    """The FLOPs behind the TFLOP/s and MFU columns: one linear layer, forward and
    backward, is 2 B I O (forward) + 4 B I O (gradients of the input and the weight)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import BF16_PEAK_TFLOPS, bf16_peak_tflops, counted_flops

    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(5, 16, requires_grad=True)
    assert counted_flops(lambda: layer(x).sum().backward()) == 6 * 5 * 16 * 8
    assert bf16_peak_tflops(torch.device("cpu")) is None                 # no share of peak on a CPU
    assert list(BF16_PEAK_TFLOPS).index("H100 PCIe") < list(BF16_PEAK_TFLOPS).index("H100")


def test_train_throughput_reports_flops_and_tflops_per_architecture():
    info, *rows = run_benchmark("train_throughput.py", "--arch", "at,aeqa_nat", "--sizes", "demo", "--amp", "fp32",
                                "--vocab", "300", "--sentences", "4", "--rounds", "1", "--repeat", "1")
    measured = {row["arch"]: row for row in rows if "tokens_per_s" in row}
    assert set(measured) == {"at", "aeqa_nat"}
    for row in measured.values():
        assert row["gflops_per_step"] > 0 and row["tflops_per_s"] > 0 and row["mfu_bf16_peak"] is None
    # AEQA-NAT's step does more matrix products than the AT's (glancing's first pass, H_y, the SQS)
    assert measured["aeqa_nat"]["gflops_per_step"] > measured["at"]["gflops_per_step"]


def test_gpu_check_times_the_compiled_step_only_when_asked_and_tables_it():
    """--compiled adds train_throughput --compile both (minutes of compiling: the GPU tier
    runs the check without it); its rows become one table per architecture."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    assert "train_compiled" not in [name for name, *_ in gpu_check.plan("cuda", quick=False)]
    (step,) = [s for s in gpu_check.plan("cuda", quick=False, compiled=True) if s[0] == "train_compiled"]
    assert step[1][step[1].index("--compile") + 1] == "both" and "bf16" in step[1]
    rows = [{"arch": "glat", "config": "base/bf16", "tokens_per_s": 100.0},
            {"arch": "glat", "config": "base/bf16+compile", "tokens_per_s": 250.0, "compile_s": 61.5},
            {"ratio": "base/bf16+compile / base/bf16", "arch": "glat", "speedup": 2.5}]
    out = "\n".join(gpu_check.summary({"train_compiled": {"rows": rows, "info": [], "code": 0, "seconds": 1.0}},
                                      "cpu", quick=False))
    assert "## Compiled training step" in out and "| glat | 100.0 | 250.0 | 2.5 | 61.5 |" in out
