"""The slurm profile without a controller (dry runs; no root needed): the paper
DAG with GPU resources, account/partition from the environment, the
~/.config/snakemake/slurm form, per-stage SLURM keys from the config."""
from __future__ import annotations

import re
import shutil
from importlib import metadata
import subprocess
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


class _Resources(dict):
    __getattr__ = dict.__getitem__


def test_gpu_job_sbatch_asks_for_one_task():
    """The pinned plugin's sbatch call for a paper training job (8 GPUs, 32 CPUs):
    with the workflow's tasks_per_gpu=0 it asks for 32 CPUs in one task, not
    --ntasks-per-gpu=1 (8 tasks x 32 CPUs), the 2.6 plugin's default for GPU jobs."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    params = {"run_uuid": "u", "slurm_logfile": "/tmp/x/%j.log", "comment_str": "rule_train_nat",
              "account": "", "partition": "", "workdir": "/w"}
    calls = {}
    for tasks_per_gpu in (0, None):
        res = _Resources(gpu=8, cpus_per_task=32, mem_mb=256000, runtime=2880)
        if tasks_per_gpu is not None:
            res["tasks_per_gpu"] = tasks_per_gpu
        job = SimpleNamespace(resources=res, threads=32, name="train_nat", is_group=lambda: False)
        calls[tasks_per_gpu] = get_submit_command(job, params)
    assert "--cpus-per-task=32" in calls[0] and "ntasks" not in calls[0], calls[0]
    # what the setting prevents: the 2.6 plugin's default (2.7 and later add no task flag)
    version = tuple(int(x) for x in metadata.version("snakemake-executor-plugin-slurm").split(".")[:2])
    if version < (2, 7):
        assert "--ntasks-per-gpu=1" in calls[None], calls[None]


def test_profile_commits_no_site_values():
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["preemptible-retries"] >= 1 and profile["rerun-incomplete"] is True
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
    for rule in ("train_teacher", "distill_shard", "pretrain_sqs", "train_nat", "decode"):
        # one SLURM task per job (see test_gpu_job_sbatch_asks_for_one_task)
        assert all(re.search(r"\btasks_per_gpu=0\b", line) for line in jobs[rule]), rule
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


RETRIED = {"train_teacher", "train_nat", "distill_shard", "pretrain_sqs_encoder", "pretrain_sqs", "pretrain_sqs_variant"}


def test_only_preemptible_or_time_limited_rules_are_retried(tmp_path):
    """Issue 16.7: training, distillation and pre-alignment are retried (time limits,
    preemption); a deterministic failure (e.g. a download of a missing licensed corpus)
    is not. Checked by running the profile's retry settings on stand-in rules of the same
    names with the local executor, and against the workflow's own rule names."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["retries"] == 0 and set(profile["preemptible-rules"]) == RETRIED
    listed = snakemake(["--list-rules", "--configfile", "config/config.yaml"], timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert RETRIED <= set(listed.stdout.split())
    retried, once = ("train_nat", "distill_shard", "pretrain_sqs"), ("download", "evaluate")
    rules = "\n".join(f"rule {name}:\n    output: '{name}.done'\n    shell: 'echo x >> {name}.tries; exit 75'\n"
                      for name in retried + once)
    (tmp_path / "Snakefile").write_text(f"rule all:\n    input: {[n + '.done' for n in retried + once]}\n\n" + rules)
    proc = snakemake(["-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "--profile",
                      str(ROOT / "profiles/slurm"), "--executor", "local", "--cores", "1", "--latency-wait", "1"],
                     timeout=300)
    assert proc.returncode != 0
    tries = {name: len((tmp_path / f"{name}.tries").read_text().split()) for name in retried + once}
    assert tries == {**{n: 1 + profile["preemptible-retries"] for n in retried}, **{n: 1 for n in once}}, tries


LOCAL_PROBE = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, OutputSettings, ResourceSettings, StorageSettings,
                                      WorkflowSettings)
root = Path(sys.argv[1])
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                      config_settings=ConfigSettings(configfiles=[root / "config/config.yaml"]),
                      workflow_settings=WorkflowSettings(), snakefile=root / "workflow/Snakefile", workdir=root)._workflow
    print(json.dumps({"local": sorted(wf._localrules), "rules": sorted(r.name for r in wf.rules),
                      "conda": sorted(r.name for r in wf.rules if r.conda_env)}))
"""


def test_paper_and_gather_jobs_are_local_and_no_rule_has_a_conda_env(tmp_path):
    """Issue 16.7: the tables, figures, index, learning curves and KD gathering run on the
    login node (localrule), not as SLURM jobs (Snakemake's own view of the parsed
    workflow; the live test checks that they are never submitted); and no rule declares a
    conda env its shell would never use (it runs the interpreter of Snakemake), so a dry
    run with --sdm conda works, without conda."""
    import json
    import sys

    probe = subprocess.run([sys.executable, "-c", LOCAL_PROBE, str(ROOT)], cwd=ROOT, env=snakemake_env(),
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    wf = json.loads(probe.stdout.strip().splitlines()[-1])
    tiny = {f"paper_table{i}" for i in range(1, 8)} | {f"paper_figure{i}" for i in (1, 4, 5, 6, 7)}
    tiny |= {"paper_index", "learning_curves", "distill_gather"}
    assert set(wf["local"]) == tiny, set(wf["local"]) ^ tiny
    assert wf["conda"] == []
    conda = snakemake(["-n", "--sdm", "conda", "--configfile", "config/smoke.yaml", "--config",
                       f"results_dir={tmp_path}"], timeout=120)
    assert conda.returncode == 0, (conda.stdout + conda.stderr)[-3000:]
