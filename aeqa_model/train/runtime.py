"""What every training loop of the pipeline shares (issue 28): the NAT/AT trainer
(train/trainer.py) and the SQS pre-alignment (pretrain_sqs/) both start
their device and process group, seed, catch SLURM's signals, pick the autocast type,
log once per job and exit through the same codes with these. Neither imports the
other; neither imports a CLI. The trainer's compiled step (``training.compile``) is
here too, so that the benchmarks time the trainer's own.
"""
from __future__ import annotations

import logging
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist

from aeqa_model.device import pick_device
from aeqa_model.io import EXIT_FAILED, EXIT_RERUN

RERUN_EXIT_CODE = EXIT_RERUN      # "interrupted after a checkpoint, rerun me" (io.py: the exit-code map)
DIVERGED_EXIT_CODE = EXIT_FAILED  # a cli's exit code after TrainingDiverged


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights stopped being finite; nothing poisoned was written."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class SignalFlag:
    """Records SIGUSR1/SIGTERM (SLURM's warning before the time limit) so the loop can
    checkpoint at the next update boundary instead of dying mid-step."""

    def __init__(self):
        self.received: int | None = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signum


def amp_dtype(setting: str, device: torch.device):
    """The autocast dtype of an ``amp`` setting on ``device``: none off CUDA; fp16, or
    bf16 for auto/bf16."""
    if device.type != "cuda" or setting in ("none", False, None):
        return None
    if setting == "fp16":
        return torch.float16
    return torch.bfloat16  # auto / bf16


def start_processes(device: str = "auto") -> tuple[torch.device, int, int]:
    """(device, rank, world) of this process: the device (``auto``: CUDA when torch sees
    a GPU; an InputError for a CUDA device where torch sees none) and, under torchrun
    (WORLD_SIZE > 1), the process group (NCCL on GPUs, gloo on CPUs) with this rank's
    local GPU."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    dev = pick_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
    return dev, rank, world


def stop_processes() -> None:
    """Tear the process group down before the interpreter exits. A gloo group left to the
    interpreter's exit can abort a rank after the work is done ("terminate called without
    an active exception", SIGABRT: seen once in CI, in the pre-alignment's two-process
    test), which fails a job whose outputs were written."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def configure_logging(rank: int) -> None:
    """Under torchrun every rank runs the entry point; only rank 0 logs progress, the
    others only warnings and errors, tagged with their rank, so the job log holds
    each line once."""
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s [rank {rank}] %(message)s")
        logging.getLogger().setLevel(logging.WARNING)


def compile_wanted(setting, device: torch.device) -> bool:
    """Whether the ``compile`` setting compiles the training step on ``device``: ``auto``
    on CUDA only (on a CPU the compile time is rarely won back, and CPU runs stay the
    eager reference), else as set."""
    if setting == "auto":
        return device.type == "cuda"
    return setting is True


def compile_training_step(model: torch.nn.Module, backend: str = "inductor") -> None:
    """Compile ``model``'s ``__call__`` (its ``forward``: the named losses as plain
    (value, weight) pairs) in place. In place, not a wrapper: the module, its
    parameters and its ``state_dict`` keys stay those of the eager model (no
    ``_orig_mod.`` prefix in checkpoints), DDP wraps it as before, and the other
    entry points (``losses`` for validation, the decoders) stay eager.

    Shapes: ``dynamic=None``, torch's automatic dynamic shapes. The batch size changes
    with every token batch (it cannot be padded: empty rows would count in the losses
    that average over sentences), so after the first recompile it is symbolic; the widths
    come padded to few values (``pad_to_multiple``), which bounds what must stay
    specialised: DAT's alignment loop runs over the target width in Python, and sizes
    read back with ``int()`` (CTC's and DAT's decoder lengths) start new graphs.

    Randomness: inductor's ``fallback_random`` keeps torch's own generator for dropout
    and the glancing draws instead of inductor's fused ones. The compiled step then
    draws what the eager step draws, GLAT's "same dropout masks in both passes"
    (models/glancing.same_dropout) still holds, and the generator state a checkpoint
    saves is the whole random state of the step."""
    options = {"fallback_random": True} if backend == "inductor" else None
    model.compile(backend=backend, dynamic=None, options=options)
