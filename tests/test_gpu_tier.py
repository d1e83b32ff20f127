"""The GPU tier (issue 26): its DAG, its one command's CPU rehearsal, and carried data.

The rehearsal is the same script a GPU machine runs (benchmarks/gpu_tier.sh): gpu_check,
the data stages, the whole GPU-tier DAG through Snakemake with profiles/gpu-local and GPU
slots, summary.md and one archive, at toy sizes on 2000 DDTP pairs and on the CPU.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["config/fidelity.yaml", "config/fidelity-gpu.yaml"]
REHEARSAL = [*CONFIGS, "config/fidelity-gpu-rehearse.yaml"]
DATA_RULES = {"download", "prepare", "bpe", "binarize"}


def snakemake(*args, cwd=ROOT, timeout=900):
    env = dict(os.environ)
    env.setdefault("AEQA_DATA_CACHE", str(ROOT / "results/.cache"))
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def grid_cells() -> set[tuple[str, str]]:
    """(data, model) of every cell the GPU tier's tables evaluate."""
    config = yaml.safe_load((ROOT / "config/fidelity-gpu.yaml").read_text(encoding="utf-8"))
    grid = yaml.safe_load((ROOT / config["paper_grid"]).read_text(encoding="utf-8"))
    return {(data, model) for output in grid["outputs"].values() for block in output["blocks"]
            for data in block["data"] for model in block["models"]}


def test_the_gpu_tier_trains_every_model_at_one_size_and_budget(tmp_path):
    # device cpu: this machine has no GPU, and the dry run is about the jobs, not the device
    proc = snakemake("-n", "-p", "--cores", "16", "--configfile", *CONFIGS, "--config", "device=cpu",
                     f"results_dir={tmp_path}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    commands = [line for line in out.splitlines() if "aeqa_model.train.cli" in line]
    assert len(commands) == len(grid_cells()) == 14
    sizes = {re.search(r"--sizes '([^']*)'", c).group(1) for c in commands}
    budgets = {json.loads(re.search(r"--train-spec '([^']*)'", c).group(1))["max_updates"] for c in commands}
    assert len(sizes) == 1 and json.loads(sizes.pop())["fid"]["embed_dim"] == 256
    assert budgets == {1500}
    schedules = set(re.findall(r'"glancing_schedule": "([^"]*)"', "\n".join(commands)))
    assert schedules == {"0.5:0.3@1500"}                      # GLAT anneals over the one budget
    for data, model in grid_cells():
        assert f"{tmp_path}/fidelity-gpu/models/ddtp_ende/en-de/{data}/{model}/model.pt" in out, (data, model)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("tier")
    proc = subprocess.run(["bash", "benchmarks/gpu_tier.sh", "--rehearse", "--out", str(out), "--slots", "2",
                           "--deadline-s", "1500"], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "AEQA_DATA_CACHE": os.environ.get("AEQA_DATA_CACHE",
                                                                               str(ROOT / "results/.cache"))})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return out / "gpu_tier.tgz"


def test_the_rehearsal_writes_one_archive_with_everything(rehearsal):
    with tarfile.open(rehearsal) as tar:
        names = set(tar.getnames())
        summary = tar.extractfile("gpu_tier/summary.md").read().decode()
    run = "gpu_tier/fidelity-gpu-rehearse"
    for data, model in grid_cells():
        decoding = "beam4" if model == "at" else "argmax"
        assert f"{run}/eval/ddtp_ende/en-de/{data}/{model}/{decoding}/metrics.json" in names, (data, model)
        assert f"{run}/models/ddtp_ende/en-de/{data}/{model}/train_log.csv" in names, (data, model)
    for name in ("paper/table1.md", "paper/table6.md", "paper/learning_curves.png"):
        assert f"{run}/{name}" in names
    assert any(n.startswith(f"{run}/logs/train_nat/") for n in names)
    assert "gpu_tier/gpu_check/summary.md" in names
    for section in ("## Phases", "## gpu_check", "## Calibration (table1)", "## AEQA-NAT's readings (table6)",
                    "## Every evaluated cell", "## Training progress", "## Learning curves"):
        assert section in summary, section
    assert "- commit: " in summary and "- device: cpu" in summary
    phases = dict(re.findall(r"^\| (gpu_check|data|dag) \| \d+ \| (\S+) \|$", summary, re.MULTILINE))
    assert phases == {"gpu_check": "0", "data": "0", "dag": "0"}
    assert "| raw | vanilla_nat_s2 | argmax | 2 |" in summary        # each number carries its seed


def test_every_job_of_the_rehearsal_held_a_gpu_slot(rehearsal):
    logs = sorted((ROOT / "results/fidelity-gpu-rehearse/logs/train_nat").glob("*.log"))
    assert len(logs) == 13
    slots = [re.search(r"GPU slot (\d+) of GPU (\S+) ", log.read_text()) for log in logs]
    assert all(slots) and {m.group(2) for m in slots} == {"0"} and {m.group(1) for m in slots} <= {"0", "1"}


def test_carried_data_with_new_file_times_is_not_redone(rehearsal, tmp_path):
    """What the GPU machine gets: results/<run>/data copied, every file with a new time in
    a random order, no .snakemake/. gpu_tier.sh's data phase (snakemake --touch of the
    binarized data) makes Snakemake see it as up to date: no download, no data stage."""
    data = ROOT / "results/fidelity-gpu-rehearse/data"
    carried = tmp_path / "results/fidelity-gpu-rehearse/data"
    shutil.copytree(data, carried, copy_function=shutil.copyfile)     # new times
    files = [p for p in carried.rglob("*") if p.is_file()]
    random.Random(0).shuffle(files)
    for i, path in enumerate(files):
        os.utime(path, (1_000_000_000 + i, 1_000_000_000 + i))
    configs = [str(ROOT / c) for c in REHEARSAL]
    common = ["--snakefile", str(ROOT / "workflow/Snakefile"), "--profile", str(ROOT / "profiles/gpu-local"),
              "--configfile", *configs]
    report = "results/fidelity-gpu-rehearse/data/ddtp_ende/bin/report.json"
    before = snakemake(report, "-n", *common, cwd=tmp_path)
    assert before.returncode == 0, before.stderr[-3000:]
    assert re.search(r"^rule (bpe|binarize):", before.stdout, re.MULTILINE), "the shuffled times were harmless?"
    touched = snakemake(report, "--touch", *common, cwd=tmp_path)
    assert touched.returncode == 0, touched.stderr[-3000:]
    after = snakemake("-n", *common, cwd=tmp_path)
    assert after.returncode == 0, after.stderr[-3000:]
    scheduled = set(re.findall(r"^(?:local)?rule (\w+):", after.stdout, re.MULTILINE))
    assert scheduled and not scheduled & DATA_RULES, scheduled
