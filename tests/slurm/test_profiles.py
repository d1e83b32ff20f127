"""The slurm profile without a controller (dry runs; no root needed): the paper
DAG with GPU resources, account/partition from the environment, the
~/.config/snakemake/slurm form, per-stage SLURM keys from the config."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from slurm_run import ROOT, snakemake, snakemake_env


def job_resources(dry_run_output: str) -> dict[str, list[str]]:
    """rule name -> the resources line of each of its jobs in a dry run (followed by
    its wildcards, when it has any: `resources | wildcards`)."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", dry_run_output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if rule and resources:
            line = resources.group(1) + (f" | {wildcards.group(1)}" if wildcards else "")
            found.setdefault(rule.group(1), []).append(line)
    return found


def test_profile_commits_no_site_values():
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    defaults = profile["default-resources"]
    assert "AEQA_SLURM_ACCOUNT" in defaults["slurm_account"]
    assert "AEQA_SLURM_PARTITION" in defaults["slurm_partition"]


def test_paper_dag_dry_run_through_the_slurm_profile_has_gpu_resources():
    env = snakemake_env(AEQA_SLURM_ACCOUNT="proj123", AEQA_SLURM_PARTITION="gpu-a100")
    proc = snakemake(["-n", "--profile", "profiles/slurm", "--configfile", "config/config.yaml"], env=env,
                     timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = job_resources(proc.stdout)
    for rule in ("train_teacher", "distill_shard", "pretrain_sqs", "train_nat", "decode"):
        assert rule in jobs, f"no {rule} job in the paper DAG"
        for line in jobs[rule]:
            assert re.search(r"\bgpu=[1-9]", line), (rule, line)
            assert "slurm_account=proj123" in line and "slurm_partition=gpu-a100" in line, line
            assert re.search(r"\bruntime=\d+", line) and re.search(r"\bmem_mb=\d+", line), line
    for rule in ("train_teacher", "train_nat"):  # the time-limit warning
        assert all("slurm_extra=--signal=TERM@600" in line for line in jobs[rule])
        # 8 GPUs (-> torchrun --nproc-per-node 8) but IWSLT's jobs: 1 GPU, its 8K tokens per update
        assert all(("gpu=1" if "iwslt14_deen" in line else "gpu=8") in line for line in jobs[rule])
        assert any("iwslt14_deen" in line for line in jobs[rule])
    for rule in ("prepare", "bpe", "binarize"):
        assert rule in jobs and not any(re.search(r"\bgpu=[1-9]", line) for line in jobs[rule]), rule
    # stages the config does not size get resources.default's CPUs (2), not SLURM's 1
    for rule in ("evaluate", "binarize", "binarize_kd", "distill_gather"):
        assert rule in jobs and all(re.search(r"\bcpus_per_task=2\b", line) for line in jobs[rule]), rule


def test_profile_copied_to_the_user_config_dir_works_by_name(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(ROOT / "profiles/slurm", home / ".config/snakemake/slurm")
    env = snakemake_env(HOME=str(home), AEQA_SLURM_PARTITION="short")
    env.pop("XDG_CONFIG_HOME", None)
    proc = snakemake(["-n", "--profile", "slurm", "--configfile", "config/smoke.yaml",
                      "--config", f"results_dir={tmp_path / 'results'}"], env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for group in job_resources(proc.stdout).values() for line in group]
    assert lines and all("slurm_partition=short" in line for line in lines)
    # unset variables give empty values (no -A / -p), never a literal "$AEQA_..."
    assert all("slurm_account=," in line for line in lines)


def test_stage_partition_constraint_and_gpu_model_come_from_the_config(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"resources": {
        "default": {"slurm_partition": "cpu"},
        "train_nat": {"gpu": 2, "slurm_partition": "gpu-long", "gpu_model": "a100", "constraint": "ib",
                      "runtime": 30, "signal_before_s": 120}}}))
    proc = snakemake(["-n", "--profile", "profiles/slurm", "--configfile", "config/smoke.yaml", str(overlay),
                      "--config", f"results_dir={tmp_path / 'results'}"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = job_resources(proc.stdout)
    for line in jobs["train_nat"]:
        for part in ("slurm_partition=gpu-long", "gpu=2", "gpu_model=a100", "constraint=ib",
                     "slurm_extra=--signal=TERM@120"):
            assert part in line, (part, line)
    assert all("slurm_partition=cpu" in line and "gpu_model" not in line for line in jobs["prepare"])


def test_a_signal_not_before_the_time_limit_is_a_config_error(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"resources": {"train_nat": {"runtime": 5, "signal_before_s": 300}}}))
    proc = snakemake(["-n", "--configfile", "config/smoke.yaml", str(overlay),
                      "--config", f"results_dir={tmp_path / 'results'}"], timeout=120)
    assert proc.returncode != 0
    assert "resources.train_nat.signal_before_s" in proc.stdout + proc.stderr
