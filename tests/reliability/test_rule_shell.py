"""What the rules hand to the shell (issue 18, items 8 and 9).

* item 8: a results directory whose path the shell would split or expand (a space,
  ``;``, ``'``, ``$``, ``&``) made jobs write their log, and read their inputs,
  somewhere else. Every path a rule hands to a shell is quoted now (Snakemake's
  ``{x:q}``): each rule's command, taken from a dry run (``-n -p``) of the paper and
  fidelity configs (together they use every rule) and run by bash as Snakemake would,
  gives its program every path whole and writes its log where the rule says. The
  smoke data stages then run for real in such a directory.
* item 9: SIGTERM to a job's shell (Snakemake cancelling a job does exactly that) left
  the Python program running on its own; its late outputs then made a later run say
  "Nothing to be done" over a job Snakemake had marked failed. Every rule ``exec``s its
  program now, so the signal reaches it; the pools of the data stages die with it.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.reliability.faultlib import PYTHON, ROOT, run_snakemake, snakemake_cmd, snakemake_env

pytestmark = pytest.mark.fault

#: A results directory with every character a shell treats specially in a word.
NASTY = "res dir;x'y$HOME&z"
RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk"))


def rule_names() -> list[str]:
    """Every named rule of the rule files (the paper rules, generated per output in a
    loop, as one family ``paper_<output>``)."""
    names = []
    for path in RULE_FILES:
        text = path.read_text()
        names += re.findall(r"^rule (\w+):", text, re.MULTILINE)
        names += re.findall(r"^use rule \w+ as (\w+)", text, re.MULTILINE)
        if re.search(r'^\s+name:\s*\n\s+f"paper_\{_name\}"', text, re.MULTILINE):
            names.append("paper_<output>")
    return sorted(set(names))


RULES = rule_names()


def family(rule: str) -> str:
    return "paper_<output>" if rule.startswith("paper_") and rule != "paper_index" else rule


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Jobs of dry runs of the paper and fidelity configs on a nasty results directory:
    {rule family: [(log path, shell command), ...]}, and the results directory."""
    base = tmp_path_factory.mktemp("dry")
    results = base / "out" / NASTY
    jobs: dict[str, list[tuple[Path, str]]] = {}
    for config in ("config/config.yaml", "config/fidelity.yaml"):
        workdir = base / Path(config).stem
        workdir.mkdir()
        proc = run_snakemake(workdir, ROOT / config, results, "--dry-run", "--printshellcmds", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        text = proc.stdout + proc.stderr
        for block in re.split(r"\n\s*\n", text):
            rule = re.search(r"^(?:local)?rule (\w+):", block, re.MULTILINE)
            cmd = re.search(r"^Shell command: (.*)$", block, re.MULTILINE)
            if rule and cmd and cmd.group(1) != "None":  # rule all has no command
                log = re.search(r"^    log: (.*)$", block, re.MULTILINE)
                assert log, f"rule {rule.group(1)} has a shell command but no log:\n{block}"
                jobs.setdefault(family(rule.group(1)), []).append((Path(log.group(1)), cmd.group(1)))
    # Together the two configs use every rule: a rule without a job here would go untested.
    assert "paper_<output>" in RULES and len(RULES) >= 18
    assert set(RULES) <= set(jobs), f"rules without a job in the dry runs: {sorted(set(RULES) - set(jobs))}"
    return jobs, results


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory):
    """Stands in for the rules' Python: prints its arguments one per line (item 8), or
    records its pid and sleeps (item 9)."""
    path = tmp_path_factory.mktemp("fakebin") / "python"
    path.write_text(f"#!{PYTHON}\n" + textwrap.dedent("""\
        import os, sys, time
        if os.environ.get("FAKE_MODE") == "sleep":
            with open(os.environ["FAKE_PID"] + ".tmp", "w") as handle:
                handle.write(str(os.getpid()))
            os.replace(os.environ["FAKE_PID"] + ".tmp", os.environ["FAKE_PID"])
            time.sleep(120)
        else:
            print("\\n".join(sys.argv[1:]))
        """))
    path.chmod(0o755)
    return path


def as_snakemake_runs(cmd: str, fake: Path) -> list[str]:
    """bash -c, with Snakemake's prefix, the rules' Python replaced by ``fake``."""
    assert shlex.quote(PYTHON) in cmd, cmd
    return ["bash", "-c", "set -euo pipefail; " + cmd.replace(shlex.quote(PYTHON), str(fake))]


# ------------------------------------------------- item 8: quoted paths --
@pytest.mark.parametrize("rule", RULES)
def test_every_path_reaches_the_program_whole_and_the_log_lands_in_results(dry_run, fake_python, tmp_path, rule):
    jobs, results = dry_run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for log, cmd in jobs[rule][:3]:
        assert log.is_relative_to(results), log
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(as_snakemake_runs(cmd, fake_python), cwd=cwd, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"{rule}: {proc.stderr}\n{cmd}"
        assert log.is_file(), f"{rule}: no log at {log}"
        args = log.read_text().splitlines()
        mentions = [a for a in args if "res dir" in a or "res" in a.split("/")]
        assert mentions, f"{rule}: no results path among the arguments {args}"
        split = [a for a in mentions if str(results) not in a]
        assert not split, f"{rule}: paths cut or expanded by the shell: {split}\n{cmd}"
    assert sorted(os.listdir(cwd)) == [], f"{rule} wrote into its working directory: {os.listdir(cwd)}"
    assert os.listdir(results.parent) == [NASTY], f"{rule} wrote beside the results: {os.listdir(results.parent)}"


@pytest.mark.slow
def test_smoke_data_stages_run_in_a_results_dir_the_shell_would_split(tmp_path, ledger):
    """download -> prepare -> bpe -> binarize for real, in results/<NASTY>: every output
    and log is inside it, nothing is written beside it or in the working directory."""
    results = tmp_path / "out" / NASTY
    workdir = tmp_path / "wd"
    workdir.mkdir()
    target = results / "smoke/data/smoke_ende/bin/report.json"
    cmd = snakemake_cmd(workdir, ROOT / "config/smoke.yaml", results)
    cmd[3:3] = [str(target)]  # a target before --config (which takes the rest of the line)
    proc = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert target.is_file()
    logs = sorted(p.relative_to(results / "smoke/logs").as_posix() for p in (results / "smoke/logs").rglob("*.log"))
    assert logs == ["binarize/smoke_ende.log", "bpe/smoke_ende.log", "download/smoke_ende.log",
                    "prepare/smoke_ende.log"]
    assert (results / "smoke/data/smoke_ende/bin/test.en.sum").is_file()
    assert os.listdir(results.parent) == [NASTY]
    assert sorted(os.listdir(workdir)) == [".snakemake"]
    ledger.protect(results / "smoke/data")
    rerun = subprocess.run(cmd + ["--dry-run"], cwd=workdir, env=snakemake_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stderr[-2000:]


# ----------------------------------------------------- item 9: exec ------
def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def _wait_for(path: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the program never started ({path} missing)"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.parametrize("rule", RULES)
def test_sigterm_to_the_job_shell_stops_its_program(dry_run, fake_python, tmp_path, rule):
    """As Snakemake cancels a job (Popen.terminate of the job's shell): the program
    must not outlive it."""
    jobs, _ = dry_run
    log, cmd = jobs[rule][0]
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file = tmp_path / "pid"
    env = {**os.environ, "FAKE_MODE": "sleep", "FAKE_PID": str(pid_file)}
    shell = subprocess.Popen(as_snakemake_runs(cmd, fake_python), cwd=tmp_path, env=env)
    program = None
    try:
        program = _wait_for(pid_file)
        shell.send_signal(signal.SIGTERM)
        shell.wait(timeout=20)
        deadline = time.monotonic() + 5
        while not _gone(program) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(program), f"{rule}: the program (pid {program}) outlived its job's shell:\n{cmd}"
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        if program is not None and not _gone(program):
            os.kill(program, signal.SIGKILL)


POOL_JOB = """
import os, sys, time
from pathlib import Path
stage, out = sys.argv[1], Path(sys.argv[2])

def slow(chunk):  # a chunk that takes long: the worker is busy when its job is killed
    (out / f"worker.{os.getpid()}").write_text("")
    time.sleep(60)
    return chunk

if stage == "bpe":
    from aeqa_model.data import bpe
    bpe._segment_chunk = slow
    (out / "codes").write_text("#version: 0.2\\na b\\n")
    (out / "in.txt").write_text("a b c\\n" * 400)
    bpe.apply(out / "codes", [out / "in.txt"], [out / "out.txt"], workers=2)
else:
    from aeqa_model.data import prepare
    prepare._tokenize_chunk = slow
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            (out / f"{split}.{lang}").write_text("a b c .\\n" * 400)
    spec = {"lowercase": False, "aggressive_dash_splits": True, "min_tokens": 1, "max_tokens": 80, "max_ratio": 3.0}
    prepare.prepare_dataset(spec, ["en", "de"], out, out / "tok",
                            workers=2, log=lambda m: None)
"""


@pytest.mark.parametrize("stage", ["bpe", "prepare"])
def test_pool_workers_of_the_data_stages_die_with_their_job(tmp_path, stage):
    """SIGTERM to the program (the exec'd job): its pool workers stop too, instead of
    finishing their chunks and the queued ones on their own."""
    job = subprocess.Popen([PYTHON, "-c", POOL_JOB, stage, str(tmp_path)], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(workers) < 2:
            assert time.monotonic() < deadline and job.poll() is None, "the pool never started"
            workers = [int(p.name.split(".")[1]) for p in tmp_path.glob("worker.*")]
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=20)
        deadline = time.monotonic() + 5
        while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(w) for w in workers), f"{stage}: pool workers {workers} outlived their job"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for w in workers:
            if not _gone(w):
                os.kill(w, signal.SIGKILL)
