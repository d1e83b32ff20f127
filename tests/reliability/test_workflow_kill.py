"""Kill the workflow: SIGKILL the whole `snakemake` process group (controller and running
jobs, as when a login node dies) in the middle of the smoke DAG, then rerun. The stale
lock is named with its fix; the rerun redoes only the jobs that had not finished, every
output of a finished job keeps its bytes and mtime, and a second workflow started on the
same results directory while the rerun works is refused by the lock and changes nothing."""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.faultlib import ROOT, run_snakemake, sha256, snakemake_cmd, snakemake_env

pytestmark = [pytest.mark.fault, pytest.mark.slow]

CONFIG = ROOT / "config/smoke.yaml"
TEACHER = "smoke/models/smoke_ende/en-de/raw/at/model.pt"


def job_total(log: str) -> int:
    """The 'total' row of Snakemake's 'Job stats' table."""
    match = re.search(r"^total\s+(\d+)\s*$", log, re.MULTILINE)
    assert match, log[-3000:]
    return int(match.group(1))


def summary(workdir: Path, results: Path) -> dict[tuple[str, str], list[Path]]:
    """Output files of the DAG grouped as (rule, log file) -> outputs, from `snakemake --summary`.

    The log column is known only for outputs Snakemake recorded as finished; all the
    others share the log "-"."""
    proc = run_snakemake(workdir, CONFIG, results, "--summary", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs: dict[tuple[str, str], list[Path]] = {}
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 4 and cols[0].startswith("/"):
            jobs.setdefault((cols[2], cols[3]), []).append(Path(cols[0]))
    assert jobs, proc.stdout[-3000:]
    return jobs


def jobs_run(log: str) -> list[list[Path]]:
    """Output files of every job a Snakemake log shows starting."""
    blocks = re.findall(r"^(?:local)?rule \w+:\n((?:    .*\n)+)", log, re.MULTILINE)
    out = []
    for block in blocks:
        match = re.search(r"^    output: (.*)$", block, re.MULTILINE)
        out.append([Path(p) for p in match.group(1).split(", ")] if match else [])
    return out


def incomplete_markers(workdir: Path) -> set[Path]:
    """Outputs Snakemake marked as being written by a job that has not finished."""
    marker_dir = workdir / ".snakemake/incomplete"
    out = set()
    for marker in marker_dir.iterdir() if marker_dir.is_dir() else []:
        try:
            out.add(Path(base64.urlsafe_b64decode(marker.name).decode()))
        except ValueError:
            pass
    return out


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """Run the smoke DAG, SIGKILL it mid-way, then rerun it (with a concurrent intruder)."""
    work = tmp_path_factory.mktemp("workflow")
    results = work / "results"
    facts: dict = {}

    # 1. The first run, killed once the teacher is trained (other jobs are running then).
    first = subprocess.Popen(snakemake_cmd(work, CONFIG, results), cwd=work, env=snakemake_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (results / TEACHER).exists():
        time.sleep(0.1)
    time.sleep(1.0)
    assert first.poll() is None, "the smoke DAG finished (or failed) before it could be killed:\n" + \
        first.communicate()[0][-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first_log = first.communicate()[0]
    facts["full_dag_jobs"] = job_total(first_log)

    # 2. What the kill left: finished jobs (all outputs there, none marked incomplete).
    in_flight = incomplete_markers(work)
    jobs = summary(work, results)
    finished = {job: outs for job, outs in jobs.items()
                if job[1] != "-" and all(p.is_file() for p in outs) and not in_flight & set(outs)}
    protected = [p for (rule, log), outs in finished.items() for p in outs + [Path(log)]]
    facts.update(in_flight=in_flight, jobs=jobs, finished=finished,
                 before={p: (p.stat().st_mtime_ns, sha256(p)) for p in protected if p.is_file()})

    # 3. A plain rerun meets the stale lock.
    facts["stale_lock"] = run_snakemake(work, CONFIG, results, timeout=120)
    facts["unlock"] = run_snakemake(work, CONFIG, results, "--unlock", timeout=120)

    # 4. The rerun; while it works, a second workflow on the same results directory.
    rerun = subprocess.Popen(snakemake_cmd(work, CONFIG, results), cwd=work, env=snakemake_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    locks = work / ".snakemake/locks"
    deadline = time.time() + 120
    while time.time() < deadline and rerun.poll() is None and not (locks.is_dir() and any(locks.iterdir())):
        time.sleep(0.05)
    facts["rerun_was_running"] = rerun.poll() is None
    facts["intruder"] = run_snakemake(work, CONFIG, results, timeout=120)
    facts["rerun_running_after_intruder"] = rerun.poll() is None
    try:
        facts["rerun_log"] = rerun.communicate(timeout=600)[0]
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    facts["rerun_code"] = rerun.returncode
    facts["after"] = run_snakemake(work, CONFIG, results, "--dry-run", timeout=120)
    facts["results"] = results
    facts["work"] = work
    return facts


def test_sigkill_mid_dag_rerun_redoes_only_unfinished_jobs(killed_and_rerun, ledger):
    f = killed_and_rerun
    assert f["in_flight"], "no job was running when the workflow was killed"
    assert f["finished"] and len(f["finished"]) < len(f["jobs"]), "the kill did not happen mid-DAG"
    # Every file of a finished job (outputs and log) must come through the rerun untouched.
    ledger.protected.update({p: (digest, mtime) for p, (mtime, digest) in f["before"].items()})
    assert f["rerun_code"] == 0, f["rerun_log"][-4000:]
    finished = {p for outs in f["finished"].values() for p in outs}
    everything = {p for outs in f["jobs"].values() for p in outs}
    redone = jobs_run(f["rerun_log"])
    assert len(redone) == job_total(f["rerun_log"]) < f["full_dag_jobs"]
    redone_outputs = {p for outs in redone for p in outs}
    assert not redone_outputs & finished, f"finished jobs ran again: {sorted(redone_outputs & finished)}"
    assert everything - finished <= redone_outputs, f"not redone: {sorted(everything - finished - redone_outputs)}"
    assert all(p.is_file() for p in everything), "outputs missing after the rerun"
    assert (f["results"] / "smoke/paper/table2.md").is_file()
    after = f["after"]
    assert after.returncode == 0 and "Nothing to be done" in after.stdout + after.stderr


def test_stale_lock_after_kill_is_named_with_its_fix(killed_and_rerun, ledger):
    stale = killed_and_rerun["stale_lock"]
    output = stale.stdout + stale.stderr
    assert stale.returncode != 0
    assert "jobid:" not in output, "a job ran despite the lock"
    message = output[output.index("Directory cannot be locked"):]
    ledger.message(message, names=[killed_and_rerun["work"], "--unlock"])
    assert killed_and_rerun["unlock"].returncode == 0


def test_concurrent_run_on_the_same_results_is_refused_without_damage(killed_and_rerun, ledger):
    f = killed_and_rerun
    assert f["rerun_was_running"], "the rerun ended before the second workflow could start"
    intruder = f["intruder"]
    output = intruder.stdout + intruder.stderr
    assert intruder.returncode != 0, output[-3000:]
    assert "jobid:" not in output, "the second workflow started a job"
    ledger.message(output[output.index("Directory cannot be locked"):], names=[f["work"]])
    # The first workflow went on and finished, and nothing it had written was lost.
    assert f["rerun_running_after_intruder"] and f["rerun_code"] == 0
    ledger.protected.update({p: (digest, mtime) for p, (mtime, digest) in f["before"].items()})
