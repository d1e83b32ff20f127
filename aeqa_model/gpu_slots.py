"""GPU slots: several jobs sharing the GPUs of one machine (issue 26, profiles/gpu-local).

Snakemake's local executor counts GPU jobs (``--resources gpu=N``, each GPU stage
declares ``gpu: 1``) but does not say *which* GPU a job gets. Each job therefore
claims a slot itself, before CUDA is initialised: slot ``k`` of GPU ``g`` is an
exclusive ``flock`` on ``<lock dir>/gpu<g>.slot<k>.lock``, held by the job's process
until it exits (a killed job frees its slot with it), and the job's
``CUDA_VISIBLE_DEVICES`` becomes ``g``. Slots are taken round-robin over the GPUs
(slot 0 of every GPU before slot 1 of any), so N jobs spread evenly.

Set by the caller (``benchmarks/gpu_tier.sh`` does it):

``AEQA_GPU_SLOTS``   jobs per GPU; unset or 0: no slots (the job sees what it is given)
``AEQA_GPU_IDS``     the GPUs to share, e.g. ``0,1`` (default ``0``); also how a test
                     fakes a device count on a machine without one
``AEQA_GPU_LOCK_DIR`` where the lock files live (default: /tmp/aeqa-gpu-slots-<uid>)

A job started under torchrun (``WORLD_SIZE`` > 1) claims nothing: its GPUs come from
its launcher, and slots are for one-GPU jobs.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from aeqa_model.io import InputError

#: The slot this process holds: (gpu id, slot index, open lock file), once claimed.
_held: tuple[str, int, object] | None = None


def slot_settings(env=os.environ) -> tuple[list[str], int, Path] | None:
    """(GPU ids, jobs per GPU, lock directory) from the environment, or None when the
    environment asks for no slots."""
    raw = env.get("AEQA_GPU_SLOTS", "").strip()
    if not raw or raw == "0" or int(env.get("WORLD_SIZE", "1")) > 1:
        return None
    try:
        per_gpu = int(raw)
    except ValueError:
        raise InputError(f"AEQA_GPU_SLOTS={raw!r}: expected the number of jobs per GPU (a whole number, "
                         f"0 for none); set it as benchmarks/gpu_tier.sh does") from None
    ids = [g.strip() for g in env.get("AEQA_GPU_IDS", "0").split(",") if g.strip()]
    if per_gpu < 0 or not ids:
        raise InputError(f"AEQA_GPU_SLOTS={raw!r} / AEQA_GPU_IDS={env.get('AEQA_GPU_IDS')!r}: need a "
                         f"non-negative number of jobs per GPU and at least one GPU id")
    lock_dir = Path(env.get("AEQA_GPU_LOCK_DIR") or f"/tmp/aeqa-gpu-slots-{os.getuid()}")
    return ids, per_gpu, lock_dir


def slot_order(ids: list[str], per_gpu: int) -> list[tuple[str, int]]:
    """Round-robin: slot 0 of every GPU, then slot 1 of every GPU, ..."""
    return [(gpu, k) for k in range(per_gpu) for gpu in ids]


def try_claim(ids: list[str], per_gpu: int, lock_dir: Path):
    """The first free slot as (gpu, k, open locked file), or None when all are taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for gpu, k in slot_order(ids, per_gpu):
        handle = open(lock_dir / f"gpu{gpu}.slot{k}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return gpu, k, handle
    return None


def claim_from_env(log=print, wait_s: float = 3600.0, poll_s: float = 0.5, env=os.environ) -> str | None:
    """Claim a slot as the environment says and set ``CUDA_VISIBLE_DEVICES`` to its
    GPU; returns the GPU id (None: no slots asked for). Idempotent within a process.
    Must run before anything initialises CUDA (``pick_device`` calls it first).
    Waits (polling) while every slot is taken, which only happens when more jobs
    run than ``--resources gpu`` allows; after ``wait_s`` it is an error."""
    global _held
    if _held is not None:
        return _held[0]
    settings = slot_settings(env)
    if settings is None:
        return None
    ids, per_gpu, lock_dir = settings
    deadline = time.monotonic() + wait_s
    while True:
        got = try_claim(ids, per_gpu, lock_dir)
        if got is not None:
            break
        if time.monotonic() >= deadline:
            raise InputError(f"no free GPU slot in {lock_dir} after {wait_s:.0f} s ({len(ids)} GPU(s) x "
                             f"AEQA_GPU_SLOTS={per_gpu}); run snakemake with --resources gpu={len(ids) * per_gpu} "
                             f"at most, or raise AEQA_GPU_SLOTS")
        time.sleep(poll_s)
    _held = got
    env["CUDA_VISIBLE_DEVICES"] = got[0]
    log(f"GPU slot {got[1]} of GPU {got[0]} ({lock_dir}): CUDA_VISIBLE_DEVICES={got[0]}")
    return got[0]
