"""The bad-config fixture under threads (issue 19).

test_bad_config runs its Snakemake dry runs from two threads. pytest's
TempPathFactory is not thread-safe: when that module ran first in a session, both
threads could create the session's base temporary directory (pytest-N and pytest-N+1)
and every case then failed at set-up with "... is not a normalized and relative path".
Here the fixture's logic runs against a fresh factory that has no base directory yet
(as at the start of such a session; its base goes under this test's tmp_path, not
/tmp), with Snakemake stubbed: every use of the factory must come from the calling
thread, before any thread starts, and all cases must share one base directory."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest
import yaml

from tests.reliability import test_bad_config as bad_config


def test_bad_config_dirs_are_made_before_any_thread_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(tmp_path))
    factory = pytest.TempPathFactory(None, 3, "all", trace=lambda *args: None, _ispytest=True)
    main = threading.current_thread()
    events: list[tuple[str, threading.Thread]] = []
    lock = threading.Lock()

    def recorded(name, call):
        def wrapper(*args, **kwargs):
            with lock:
                events.append((name, threading.current_thread()))
            return call(*args, **kwargs)
        return wrapper

    # mktemp calls self.getbasetemp(): the instance attribute, so both are seen.
    monkeypatch.setattr(factory, "mktemp", recorded("mktemp", factory.mktemp))
    monkeypatch.setattr(factory, "getbasetemp", recorded("getbasetemp", factory.getbasetemp))

    def snakemake(workdir, configfile, results, *extra, timeout):
        with lock:
            events.append(("snakemake", threading.current_thread()))
        assert workdir.is_dir() and configfile.is_file(), "a thread got a case that was not set up"
        assert "--dry-run" in extra
        time.sleep(0.01)  # keep both workers busy
        return subprocess.CompletedProcess([], 1, "", f"invalid config {configfile}")

    outcomes = bad_config.bad_config_outcomes(factory, snakemake=snakemake)

    runs = [i for i, (name, _) in enumerate(events) if name == "snakemake"]
    uses = [(i, name, thread) for i, (name, thread) in enumerate(events) if name != "snakemake"]
    assert len(runs) == len(bad_config.CASES) and uses
    off_main = sorted({f"{name} in {thread.name}" for _, name, thread in uses if thread is not main})
    assert not off_main, f"TempPathFactory used from worker threads: {off_main}"
    assert max(i for i, _, _ in uses) < min(runs), "a directory was made after the first Snakemake run started"
    assert all(events[i][1] is not main for i in runs), "the dry runs no longer run in worker threads"

    assert set(outcomes) == set(bad_config.CASES)
    base = factory.getbasetemp()
    made = [p for p in tmp_path.glob("pytest-of-*/pytest-*") if not p.is_symlink()]
    assert made == [base], f"more than one base temporary directory: {made}"
    dirs = [outcomes[case][0] for case in bad_config.CASES]
    assert len(set(dirs)) == len(dirs) and all(d.parent == base for d in dirs)
    for case, (d, code, output, results_created) in outcomes.items():
        assert code == 1 and not results_created and str(d / "bad.yaml") in output
        assert yaml.safe_load((d / "bad.yaml").read_text(encoding="utf-8")), case
