"""The slurm profile against a live SLURM controller (one node, started by the
slurm_cluster fixture as root; skipped elsewhere, with the reason).

1. The smoke DAG through `--profile profiles/slurm`: every job but the local
   rules (tables, index, learning curves, KD gathering) is a real SLURM job,
   GPU stages ask for GPUs in their own partition, the teacher runs under
   torchrun on its 2 GPUs, and the outputs equal a local run of the same config.
2. A training job whose work outlasts its 1-minute time limit gets SLURM's
   TERM warning, checkpoints, exits 75, is resubmitted by the profile's
   preemptible-retries and resumes where it stopped, ending with the weights
   of an uninterrupted run.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from slurm_run import ROOT, SLURM_PROFILES, snakemake, snakemake_background, slurm_jobs, submitted_job_ids
from slurm_cluster import GPU_PARTITION, PARTITION

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMOKE = ["--configfile", "config/smoke.yaml", "tests/slurm/smoke-slurm.yaml"]
# GPUs per job of the GPU stages in tests/slurm/smoke-slurm.yaml
GPU_RULES = {"train_teacher": 2, "train_nat": 1, "distill_shard": 1, "pretrain_sqs_encoder": 1,
             "pretrain_sqs": 1, "decode": 1}
# Work of the time-limited training, in seconds of this machine: the warning
# comes at most 45 s into a job, so at least one attempt is cut off even if the
# machine runs faster than measured; more work means more (slow) resubmissions.
WORK_SECONDS = 60
HEAVY_RULES = {"prepare", "bpe", "binarize", "train_teacher", "distill_shard", "pretrain_sqs", "train_nat",
               "decode", "evaluate"}


class Run:
    """A Snakemake run in the background; wait() returns its output."""

    def __init__(self, args, log: Path, slurm: bool, nice: bool = True):
        """slurm: through the slurm profile; else a local run (at low priority if nice)."""
        self.log, self.started = log, time.time()
        self.proc = (snakemake_background([*SLURM_PROFILES, *args], log, nice=False) if slurm
                     else snakemake_background(["--profile", "profiles/local", "--cores", "1", *args], log,
                                               nice=nice))
        self.elapsed = None

    def wait(self, timeout=1200) -> str:
        code = self.proc.wait(timeout=timeout)
        self.elapsed = self.log.stat().st_mtime - self.started  # its last output, not when we asked
        out = self.log.read_text(errors="replace")
        assert code == 0, f"{self.log}:\n{out[-8000:]}"
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class LiveRuns:
    """Both scenarios at once (most of a SLURM run is waiting for status polls):
    the smoke DAG through SLURM next to a local run of the same config, and the
    time-limited training through SLURM next to an uninterrupted local one (after
    a local run of the data stages it trains on)."""

    def __init__(self, base: Path):
        self.base = base
        self.smoke_results, self.local_results = base / "slurm" / "results", base / "local" / "results"
        self.smoke = Run([*SMOKE, "--config", f"results_dir={self.smoke_results}", "--printshellcmds",
                          "--slurm-logdir", str(base / "slurm" / "slurm_logs")], self.log("smoke-slurm"), slurm=True)
        self.local = Run([*SMOKE, "--config", f"results_dir={self.local_results}"], self.log("smoke-local"),
                         slurm=False)
        self.limit_results = base / "time-limit" / "results"
        self.limit_logs = base / "time-limit" / "slurm_logs"
        self.model_dir = self.limit_results / "smoke/models/smoke_ende/en-de/raw"
        self.watcher = LogWatcher(self.limit_results / "smoke/logs/train_nat/smoke_ende.en-de.raw.at_limit.log")
        self.limit = self.limit_ref = None
        self.updates = 0
        self.limit_thread = threading.Thread(target=self._time_limit, daemon=True)
        self.limit_thread.start()

    def log(self, name: str) -> Path:
        self.base.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
        return self.base / f"{name}.log"

    def _time_limit(self):
        template = ["--configfile", "config/smoke.yaml", "tests/slurm/time-limit.yaml",
                    "--config", f"results_dir={self.limit_results}"]
        data = Run([*template, "--until", "binarize"], self.log("time-limit-data"), slurm=False)
        if data.proc.wait(timeout=900):
            return  # the test reports it
        # How fast does this machine train? Size the work to ~WORK_SECONDS. (At the
        # priority the SLURM job gets: a niced measurement would undersize it.)
        calibrate = Run([*template, "--", str(self.model_dir / "at_cal/model.pt")], self.log("time-limit-calibrate"),
                        slurm=False, nice=False)
        if calibrate.proc.wait(timeout=900):
            return
        rate = updates_per_second(self.limit_results / "smoke/logs/train_nat/smoke_ende.en-de.raw.at_cal.log")
        spec = yaml.safe_load((ROOT / "tests/slurm/time-limit.yaml").read_text())
        self.updates = int(min(20000, max(1000, rate * WORK_SECONDS)))
        spec["models"]["at_limit"]["training"]["max_updates"] = self.updates  # at_ref is the same mapping
        overlay = self.base / "time-limit.yaml"
        overlay.write_text(yaml.safe_dump(spec))
        config = ["--configfile", "config/smoke.yaml", str(overlay), "--config", f"results_dir={self.limit_results}"]
        self.watcher.start()
        # More retries than the profile's 5 (train_nat is one of its preemptible-rules,
        # whose retries are preemptible-retries): how many time limits the work spans
        # depends on when slurmctld's 30 s timer fires.
        self.limit = Run([*config, "--preemptible-retries", "10", "--slurm-logdir", str(self.limit_logs), "--",
                          str(self.model_dir / "at_limit/model.pt")], self.log("time-limit-slurm"), slurm=True)
        self.limit_ref = Run([*config, "--", str(self.model_dir / "at_ref/model.pt")],
                             self.log("time-limit-local"), slurm=False)

    def stop(self):
        self.limit_thread.join(timeout=900)
        for run in (self.smoke, self.local, self.limit, self.limit_ref):
            if run is not None:
                run.stop()
        self.watcher.stop()


@pytest.fixture(scope="module")
def live_runs(slurm_cluster, tmp_path_factory):
    runs = LiveRuns(tmp_path_factory.mktemp("live"))
    yield runs
    runs.stop()


def updates_per_second(log: Path) -> float:
    """Training speed from the trainer's timestamped validation lines."""
    points = [(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(m.group(2)))
              for m in re.finditer(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) update (\d+):", log.read_text())]
    assert len(points) >= 2, log.read_text()[-3000:]
    (t0, u0), (t1, u1) = points[0], points[-1]
    return (u1 - u0) / max(t1 - t0, 1e-3)


def state_dict(path: Path) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return payload["state_dict"] if "state_dict" in payload else payload["model"]["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys(), (a, b)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{a} and {b} differ in {different[:5]}"


def dry_run_job_counts(tmp_path: Path) -> Counter:
    """Jobs per rule of the smoke DAG, from Snakemake's own dry-run job stats."""
    proc = snakemake(["-n", "--profile", "profiles/local", *SMOKE, "--config", f"results_dir={tmp_path / 'dry'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:")[1]
    counts = Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)})
    counts.pop("total", None)
    counts.pop("all", None)  # a target rule without a command: never submitted
    return counts


def is_local_rule(rule: str) -> bool:
    """Rules that run on the login node (localrule), never as SLURM jobs: the tables,
    figures, index and learning curves, and the KD gathering."""
    return rule.startswith("paper_") or rule in ("learning_curves", "distill_gather")


def test_smoke_dag_runs_as_slurm_jobs_and_matches_a_local_run(slurm_cluster, live_runs, tmp_path):
    counts = dry_run_job_counts(tmp_path)
    local = {rule for rule in counts if is_local_rule(rule)}
    assert {"distill_gather", "paper_index", "learning_curves"} <= local
    expected = Counter({rule: n for rule, n in counts.items() if rule not in local})
    out = live_runs.smoke.wait()
    print(f"smoke DAG through SLURM: {live_runs.smoke.elapsed:.0f} s")
    results = live_runs.smoke_results

    ids = submitted_job_ids(out)
    jobs = slurm_jobs()
    submitted = slurm_cluster.ctld_log()
    per_rule = Counter()
    for jid in ids:
        job = jobs[jid]
        assert f"_slurm_rpc_submit_batch_job: JobId={jid} " in submitted, jid
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        per_rule[job["rule"]] += 1
        gpus = GPU_RULES.get(job["rule"], 0)
        if gpus:  # GPU stages: --gpus from the config's resources, their own partition
            assert job.get("TresPerJob") == f"gres:gpu:{gpus}", job
            # one task per job (tasks_per_gpu=0), not one per GPU (2.6 plugin default)
            assert job.get("NumTasks", "1") in ("1", "N/A"), job
            assert job["Partition"] == GPU_PARTITION, job
        else:     # CPU stages: no GPU, the partition from AEQA_SLURM_PARTITION
            assert "gpu" not in job.get("TresPerJob", ""), job
            assert job["Partition"] == PARTITION, job
    assert per_rule == expected, f"SLURM jobs per rule {dict(per_rule)} != the DAG's {dict(expected)}"
    assert HEAVY_RULES <= set(per_rule)
    assert not local & set(per_rule), "local rules must not be submitted"  # they ran on this node:
    assert (results / "smoke/paper/README.md").exists() and (results / "smoke/paper/learning_curves.png").exists()

    # Multi-GPU: the teacher (2 GPUs) was started with torchrun, 1-GPU jobs without. Read
    # from each job's own SLURM log (its "Shell command:" lines): snakemake-executor-plugin-slurm
    # 2.6 does not echo the jobs' commands in the submitting process's output.
    job_logs = results.parent / "slurm_logs"
    for rule in GPU_RULES:
        logs = sorted((job_logs / f"rule_{rule}").glob("*/*.log"))
        assert len(logs) == per_rule[rule], (rule, logs)
        for log in logs:
            commands = [line for line in log.read_text(errors="replace").splitlines()
                        if line.startswith("Shell command:")]
            assert commands, f"{log}: no 'Shell command:' line"
            if rule == "train_teacher":
                assert all("torch.distributed.run --standalone --nproc-per-node 2" in c for c in commands), log
            else:
                assert not any("--nproc-per-node" in c for c in commands), f"{log}: only the 2-GPU teacher uses torchrun"

    # The same numbers as a local run of the same config.
    live_runs.local.wait()
    run, ref = results / "smoke", live_runs.local_results / "smoke"
    models = sorted(p.relative_to(run) for p in run.glob("models/**/model.pt"))
    assert len(models) == per_rule["train_teacher"] + per_rule["train_nat"]
    assert models == sorted(p.relative_to(ref) for p in ref.glob("models/**/model.pt"))
    for rel in models:
        assert_same_weights(run / rel, ref / rel)
    texts = sorted(p.relative_to(run) for pattern in ("decode/**/hyp.tok", "data/**/kd/**/train.tgt")
                   for p in run.glob(pattern))
    assert len(texts) >= per_rule["decode"]
    for rel in texts:
        assert (run / rel).read_bytes() == (ref / rel).read_bytes(), rel
    for path in run.glob("eval/**/metrics.json"):
        ours = json.loads(path.read_text())["metrics"]["bleu_tok"]["score"]
        theirs = json.loads((ref / path.relative_to(run)).read_text())["metrics"]["bleu_tok"]["score"]
        assert ours == theirs, path


class LogWatcher(threading.Thread):
    """Keeps every line a training log ever held: Snakemake deletes a job's log
    before it reruns the job, and the test wants the interrupted attempts' lines."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.lines, self.done = path, [], threading.Event()

    def poll(self):
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return
        for line in re.split(r"[\r\n]+", text):
            if ("received signal" in line or "resumed from" in line) and line not in self.lines:
                self.lines.append(line)

    def run(self):
        while not self.done.wait(0.2):
            self.poll()

    def stop(self):
        self.done.set()
        if self.ident is not None:  # started
            self.join()
        self.poll()


def test_time_limit_signal_checkpoints_and_the_resubmitted_job_resumes(slurm_cluster, live_runs):
    live_runs.limit_thread.join(timeout=900)
    assert live_runs.limit is not None, "\n".join(
        p.read_text()[-3000:] for p in sorted(live_runs.base.glob("time-limit-*.log")))
    out = live_runs.limit.wait()
    live_runs.limit_ref.wait()
    live_runs.watcher.stop()
    watcher, model_dir = live_runs.watcher, live_runs.model_dir
    print(f"time-limited training through SLURM: {live_runs.updates} updates, {live_runs.limit.elapsed:.0f} s, "
          f"{len(watcher.lines) // 2} interruptions")

    jobs = [slurm_jobs()[jid] for jid in submitted_job_ids(out)]
    assert len(jobs) >= 2, "the training was never interrupted: make tests/slurm/time-limit.yaml longer"
    for job in jobs:
        assert job["rule"] == "train_nat" and job["TimeLimit"] == "00:01:00", job
    assert [j["JobState"] for j in jobs] == ["FAILED"] * (len(jobs) - 1) + ["COMPLETED"], jobs

    # SLURM's warning (SIGTERM = 15, not a kill at the limit) reached the trainer,
    # which saved at update K and exited 75; the next attempt resumed at K.
    saved = [(int(m.group(1)), int(m.group(2))) for line in watcher.lines
             if (m := re.search(r"received signal (\d+)\D.*?saved at update (\d+)", line))]
    resumed = [int(m.group(1)) for line in watcher.lines if (m := re.search(r"resumed from .*? at update (\d+)", line))]
    assert saved and all(sig == 15 for sig, _ in saved), watcher.lines
    # (A warning that comes while the job is finishing makes Snakemake report the
    # job failed although the trainer wrote everything: the next attempt then
    # resumes from the final checkpoint, does no update and writes the model.)
    assert resumed in ([k for _, k in saved], [k for _, k in saved] + [live_runs.updates]), \
        f"saved at {saved}, resumed at {resumed}"
    logs = [p.read_text(errors="replace") for p in live_runs.limit_logs.rglob("*.log")]
    assert sum("exit status 75" in text for text in logs) == len(saved), "each interrupted attempt exited 75"

    # Every update ran once (the CSV log drops rows past the checkpoint it resumes
    # from), and the result is the uninterrupted run's, bit for bit.
    updates = [int(line.split(",")[0]) for line in
               (model_dir / "at_limit/train_log.csv").read_text().splitlines()[1:] if line]
    assert updates == list(range(1, live_runs.updates + 1))
    assert_same_weights(model_dir / "at_limit/model.pt", model_dir / "at_ref/model.pt")
