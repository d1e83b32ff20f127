"""Running Snakemake against the test cluster, and reading what SLURM did."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from slurm_cluster import PARTITION

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the real profile, plus the test overlay (status via squeue, fast first poll)
SLURM_PROFILES = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-test"]


def snakemake_env(**extra) -> dict:
    """The environment a user of the slurm profile has: the partition in
    AEQA_SLURM_PARTITION, no account (the test cluster has no accounting)."""
    env = dict(os.environ)
    env.pop("AEQA_SLURM_ACCOUNT", None)
    env["AEQA_SLURM_PARTITION"] = PARTITION
    env.setdefault("AEQA_DATA_CACHE", str(ROOT / "results/.cache"))
    env.update(extra)
    return env


def snakemake(args, env=None, timeout=900, **kw):
    return subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, env=env or snakemake_env(), capture_output=True,
                          text=True, timeout=timeout, **kw)


def snakemake_background(args, log_path: Path, env=None, nice: bool = True) -> subprocess.Popen:
    """Snakemake in the background, output to log_path. Local reference runs go at
    low CPU priority (nice): the SLURM jobs' start-up is on the critical path."""
    with open(log_path, "w") as log:
        return subprocess.Popen([*(["nice", "-n", "10"] if nice else []), *SNAKEMAKE, *args], cwd=ROOT,
                                env=env or snakemake_env(), stdout=log, stderr=subprocess.STDOUT, text=True)


def slurm_jobs() -> dict[str, dict]:
    """Every job slurmctld still knows (MinJobAge=3600 s), as scontrol's fields,
    with the Snakemake rule parsed from the comment the plugin sets."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields:
            continue
        match = re.match(r"rule_(.+?)(?:_wildcards_(.*))?$", fields.get("Comment", ""))
        fields["rule"], fields["wildcards"] = (match.group(1), match.group(2) or "") if match else ("", "")
        jobs[fields["JobId"]] = fields
    return jobs


def submitted_job_ids(snakemake_output: str) -> list[str]:
    """SLURM job ids from the plugin's 'has been submitted with SLURM jobid N' lines."""
    return re.findall(r"has been submitted with SLURM jobid (\d+)", snakemake_output)
