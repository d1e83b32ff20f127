"""GPU slots (issue 26): each job of profiles/gpu-local gets CUDA_VISIBLE_DEVICES from
a slot it holds for its lifetime. Tested on the CPU with a faked device count
(AEQA_GPU_IDS) and real processes holding real locks."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from aeqa_model.gpu_slots import claim_from_env, slot_order, slot_settings
from aeqa_model.io import InputError

ROOT = Path(__file__).resolve().parents[1]
# A job: claim a slot, print the GPU it got, then hold the slot until told to stop.
JOB = ("import os, sys, time, pathlib; from aeqa_model.gpu_slots import claim_from_env; "
       "claim_from_env(log=lambda *_: None, wait_s=float(sys.argv[2]), poll_s=0.05); "
       "print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); stop = pathlib.Path(sys.argv[1]); "
       "[time.sleep(0.05) for _ in iter(lambda: stop.exists(), True)]")


def start_job(tmp_path: Path, env: dict, wait_s: float = 30.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "stop"), str(wait_s)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, text=True)


def fake_env(tmp_path: Path, gpus: str = "0,1", per_gpu: int = 3) -> dict:
    return {"AEQA_GPU_SLOTS": str(per_gpu), "AEQA_GPU_IDS": gpus, "AEQA_GPU_LOCK_DIR": str(tmp_path / "locks")}


def test_jobs_spread_evenly_over_the_gpus_and_a_finished_job_frees_its_slot(tmp_path):
    env = fake_env(tmp_path)
    jobs = [start_job(tmp_path, env) for _ in range(6)]
    try:
        got = [job.stdout.readline().strip() for job in jobs]
        assert Counter(got) == {"0": 3, "1": 3}
        # all six slots are held: a seventh job waits, then fails naming the way out
        extra = start_job(tmp_path, env, wait_s=0.5)
        extra.wait(timeout=30)
        assert extra.returncode != 0
        # a killed job (no clean-up of its own) frees its slot for the next one
        jobs[0].kill()
        jobs[0].wait()
        late = start_job(tmp_path, env)
        assert late.stdout.readline().strip() == got[0]
        jobs.append(late)
    finally:
        (tmp_path / "stop").touch()
        for job in jobs:
            job.wait(timeout=30)


def test_round_robin_order_and_settings():
    assert slot_order(["0", "1"], 2) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    assert slot_settings({}) is None and slot_settings({"AEQA_GPU_SLOTS": "0"}) is None
    assert slot_settings({"AEQA_GPU_SLOTS": "2", "WORLD_SIZE": "4"}) is None  # torchrun jobs claim nothing
    ids, per_gpu, _ = slot_settings({"AEQA_GPU_SLOTS": "2", "AEQA_GPU_IDS": "1, 3"})
    assert ids == ["1", "3"] and per_gpu == 2
    with pytest.raises(InputError, match="AEQA_GPU_SLOTS"):
        slot_settings({"AEQA_GPU_SLOTS": "two"})


def test_claim_sets_cuda_visible_devices_once_per_process(tmp_path, monkeypatch):
    import aeqa_model.gpu_slots as slots

    monkeypatch.setattr(slots, "_held", None)
    env = {**fake_env(tmp_path, gpus="5", per_gpu=1)}
    assert claim_from_env(log=lambda *_: None, env=env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert claim_from_env(log=lambda *_: None, env=env) == "5"  # idempotent: no second slot
    slots._held[2].close()
    monkeypatch.setattr(slots, "_held", None)
