"""Fixture for the live SLURM tests: a one-node cluster (see slurm_cluster.py)."""
from __future__ import annotations

import contextlib
import os
import sys

import pytest

from slurm_cluster import LocalSlurm, machine_lock, why_unavailable


def _say(request, text: str) -> None:
    """A line on the terminal now, past pytest's output capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        sys.stderr.write(f"\n[slurm_cluster] {text}\n")
        sys.stderr.flush()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory, request):
    """A running one-node SLURM cluster; skips (with the reason) where none can be
    started: not root, no slurm-wlm and no way to install it, or a real SLURM
    installation on this machine. AEQA_REQUIRE_SLURM=1 turns the skip into a failure.

    The cluster is machine-wide (/etc/slurm, munge, the daemons): as root, the
    fixture first takes slurm_cluster.machine_lock, so a second test session on this
    machine (a parallel clone) waits until this one's cluster has stopped, instead of
    finding it running and refusing. Module scope (only test_live_controller uses it)
    so the cluster stops, and the lock is released, when that module is done rather
    than at the end of the session."""
    with contextlib.ExitStack() as stack:
        reason = None
        if sys.platform == "linux" and os.geteuid() == 0:
            try:
                stack.enter_context(machine_lock(say=lambda text: _say(request, text)))
            except TimeoutError as err:
                reason = f"another test session's SLURM cluster: {err}"
        reason = reason or why_unavailable()
        if reason:
            if os.environ.get("AEQA_REQUIRE_SLURM") == "1":
                pytest.fail(f"AEQA_REQUIRE_SLURM=1 but {reason}")
            pytest.skip(reason)
        cluster = LocalSlurm(tmp_path_factory.mktemp("slurm-cluster"))
        cluster.start()
        yield cluster
        cluster.stop()
