"""slurm_cluster.machine_lock: test sessions on one machine (parallel clones) take
turns with the machine-wide test cluster instead of finding another session's
cluster running and refusing. Runs anywhere (a lock file under tmp_path, no SLURM)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import machine_lock

HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from slurm_cluster import machine_lock
with machine_lock(Path({lock!r})):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
    Path({lock!r} + ".released").touch()  # still holding it
"""


def hold(lock: Path, seconds: float) -> subprocess.Popen:
    """Another session: a process that holds the lock for ``seconds``."""
    script = HOLDER.format(here=str(Path(__file__).parent), lock=str(lock))
    proc = subprocess.Popen([sys.executable, "-c", script, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_session_waits_for_the_first_then_gets_the_lock(tmp_path):
    lock = tmp_path / "slurm-tests.lock"
    first = hold(lock, 1.5)
    said = []
    start = time.monotonic()
    try:
        with machine_lock(lock, wait=60, poll=0.05, say=said.append):
            waited = time.monotonic() - start
            assert Path(f"{lock}.released").exists(), "got the lock while the other session held it"
            assert f"pid {os.getpid()}" in lock.read_text()
    finally:
        first.kill()
        first.wait()
    assert waited > 0.5 and len(said) == 1 and f"pid {first.pid}" in said[0], (waited, said)


def test_a_session_that_waits_too_long_says_who_holds_the_lock_and_a_killed_holder_frees_it(tmp_path):
    lock = tmp_path / "slurm-tests.lock"
    holder = hold(lock, 120)
    try:
        with pytest.raises(TimeoutError, match=f"pid {holder.pid}.*AEQA_SLURM_LOCK_WAIT"):
            with machine_lock(lock, wait=0.3, poll=0.05):
                pass
    finally:
        holder.kill()  # as a session killed mid-run: the lock must not stay taken
        holder.wait()
    start = time.monotonic()
    with machine_lock(lock, wait=5, poll=0.05):
        assert time.monotonic() - start < 1
