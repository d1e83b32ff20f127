"""Fixture for the live SLURM tests: a one-node cluster for the session (see
slurm_cluster.py)."""
from __future__ import annotations

import os

import pytest

from slurm_cluster import LocalSlurm, why_unavailable


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster; skips (with the reason) where none can be
    started: not root, no slurm-wlm and no way to install it, or a real SLURM
    installation on this machine. AEQA_REQUIRE_SLURM=1 turns the skip into a failure."""
    reason = why_unavailable()
    if reason:
        if os.environ.get("AEQA_REQUIRE_SLURM") == "1":
            pytest.fail(f"AEQA_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()
