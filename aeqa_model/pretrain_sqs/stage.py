"""How a pretrain_sqs stage runs (as training does, issue 15): its device, autocast and
DDP processes (``Runtime``), its fingerprinted checkpoint (``StageCheckpoint``), its
per-update CSV log and progress bar (``StageLog``), and the signal -> checkpoint ->
exit 75 protocol (``StageRun``); the shared start-up lives in train/runtime.py.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from aeqa_model.io import InputError, OutputError, atomic_open
from aeqa_model.models.build import describe_nonfinite, nonfinite_entries
from aeqa_model.train.checkpoint import read_checked, rng_state, save_checkpoint, set_rng_state
from aeqa_model.train.runtime import RERUN_EXIT_CODE, SignalFlag, TrainingDiverged, amp_dtype, start_processes


DEFAULT_SAVE_EVERY = 1000   # pretrain_sqs.save_every


FLUSH_EVERY = 50            # updates between moving the logged losses from the device to the host


# The spec keys each stage's result depends on: a checkpoint written under other
# values (a config edit) is set aside, not resumed. save_every is not among them.
STAGE_KEYS = {"encoder": ("encoder", "embedded", "lr", "amp"),
              "align": ("encoder", "mbart_path", "align_updates", "alpha", "ema_decay", "lr", "batch_size", "amp",
                        "align_denoise_weight")}


@dataclass
class Runtime:
    """Where a stage runs: the device, the autocast dtype (None: fp32) and, under
    torchrun, this process's rank among ``world``."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: torch.dtype | None = None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def shard(self, items):
        """This process's share of a global batch: every ``world``-th item."""
        return items[self.rank::self.world] if self.world > 1 else items

    def wrap(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP under torchrun (``find_unused``: parameters may go without a gradient)."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """``flag`` on any process (a signal may reach the ranks at different updates)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def rng_states(self) -> list:
        """Every process's random state (rank order), for the checkpoint."""
        if self.world == 1:
            return [rng_state()]
        states = [None] * self.world
        dist.all_gather_object(states, rng_state())
        return states

    def restore_rng(self, states: list) -> None:
        set_rng_state(states[self.rank] if len(states) == self.world else states[0])


def setup_runtime(device: str = "auto", amp: str = "auto") -> Runtime:
    """The device (``auto``: CUDA when torch sees a GPU), autocast, and the process
    group under torchrun (WORLD_SIZE > 1; NCCL on GPUs, gloo on CPUs)."""
    if str(amp) == "fp16":
        raise InputError("pretrain_sqs.amp: fp16 is not supported (this stage has no loss scaling); "
                         "use auto, bf16 or none")
    dev, rank, world = start_processes(device)  # InputError for a CUDA device where torch sees none
    return Runtime(dev, amp_dtype(amp, dev), rank, world)


def fingerprint(stage: str, spec: dict, **settings) -> str:
    """Hash of what a stage's result depends on (its spec keys, seed, sizes, inputs)."""
    keys = {k: spec.get(k) for k in STAGE_KEYS[stage]}
    text = json.dumps({"stage": stage, "spec": keys, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def text_digest(*corpora: list[str]) -> str:
    digest = hashlib.sha256()
    for lines in corpora:
        for line in lines:
            digest.update(line.encode("utf-8"))
            digest.update(b"\n")
        digest.update(b"\0")
    return digest.hexdigest()


class StageCheckpoint:
    """The resumable state of one stage in ``path``: written atomically (trainer's
    ``save_checkpoint``) by rank 0, checked against the stage's fingerprint when
    resuming, and deleted once the stage's outputs are written."""

    REQUIRED = ("setup", "update", "optimizer", "np_rng", "rng", "rows")

    def __init__(self, path: str | Path, setup: str, rt: Runtime, log=logging.info):
        self.path, self.setup, self.rt, self.log = Path(path), setup, rt, log

    def load(self, required: tuple[str, ...] = ()) -> dict | None:
        """The checkpoint to resume from; None when there is none, or when it was written
        for other settings (then it is kept aside as ``<name>.stale-<hash>``). A
        damaged one is an InputError naming the file."""
        if self.rt.main:
            for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):   # a kill mid-write
                tmp.unlink(missing_ok=True)
        self.rt.barrier()
        if not self.path.exists():
            return None
        try:
            ckpt = read_checked(self.path, sorted(set(self.REQUIRED + tuple(required))))
        except Exception as err:  # truncated, corrupt or foreign file
            raise InputError(
                f"{self.path}: cannot resume from this checkpoint ({type(err).__name__}: {err}). Restore it "
                f"from a backup, or delete it to start this stage over") from None
        self.rt.barrier()
        if ckpt["setup"] != self.setup:
            stale = self.path.with_name(f"{self.path.name}.stale-{str(ckpt['setup'])[:12]}")
            if self.rt.main:
                os.replace(self.path, stale)
            self.log(f"{self.path}: written for other pretrain_sqs settings or inputs; starting this stage "
                     f"over (the old checkpoint is kept as {stale})")
            return None
        self.log(f"resumed from {self.path} at update {ckpt['update']}")
        return ckpt

    def save(self, payload: dict) -> None:
        if self.rt.main:
            save_checkpoint(self.path, {"setup": self.setup, **payload})

    def remove(self) -> None:
        if self.rt.main:
            self.path.unlink(missing_ok=True)


class StageLog:
    """Each update's losses: kept on the device and moved to the host every
    FLUSH_EVERY updates (and before every checkpoint, log line and the end), so the
    loop does not wait for the device every update. Flushed rows go to ``rows`` (the
    stage's history, saved in its checkpoint), to the CSV log and to the progress bar."""

    def __init__(self, csv_path: Path | None, names: tuple[str, ...], rt: Runtime, desc: str, total: int):
        self.csv_path, self.names, self.rt = csv_path, names, rt
        self.fields = ["update", "lr", *names]
        self.rows: list[dict] = []
        self.pending: list[tuple[int, float, torch.Tensor]] = []
        self.total, self.desc = total, desc
        self.bar = None

    def start(self, rows: list[dict]) -> None:
        """Begin after ``rows`` (a checkpoint's history): the CSV is rewritten to hold
        exactly them, dropping rows of updates after the checkpoint that will be redone."""
        self.rows = list(rows)
        if self.rt.main and self.csv_path is not None:
            with atomic_open(self.csv_path) as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
        self.bar = tqdm(total=self.total, initial=len(self.rows), desc=self.desc, file=sys.stderr,
                        mininterval=2.0, dynamic_ncols=True, disable=not self.rt.main)

    def add(self, update: int, lr: float, values: torch.Tensor) -> None:
        self.pending.append((update, lr, values.detach().float().reshape(-1)))
        self.bar.update(1)

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack([v for _, _, v in self.pending]).tolist()
        new = [{"update": u, "lr": lr, **dict(zip(self.names, vals))}
               for (u, lr, _), vals in zip(self.pending, values)]
        self.pending.clear()
        self.rows.extend(new)
        if self.rt.main and self.csv_path is not None:
            try:
                with open(self.csv_path, "a", newline="", encoding="utf-8") as handle:
                    csv.DictWriter(handle, fieldnames=self.fields).writerows(new)
            except OSError as err:  # a full disk: write() names no file
                if err.filename is not None or err.errno is None:
                    raise
                raise OutputError(err.errno, f"{err.strerror} while appending to {self.csv_path}: free disk "
                                             f"space and rerun (the stage resumes from its last checkpoint)") from err
        self.bar.set_postfix({k: f"{new[-1][k]:.4g}" for k in self.names}, refresh=False)

    def close(self) -> None:
        self.flush()
        if self.bar is not None:
            self.bar.close()


@dataclass
class StageRun:
    """What a stage's update loop needs besides its model: where it runs, its
    checkpoint (None: never saved), the state to resume from, the CSV log, and the
    signal flag (None: signals are not handled)."""

    rt: Runtime = field(default_factory=Runtime)
    checkpoint: StageCheckpoint | None = None
    resume: dict | None = None
    csv_path: Path | None = None
    save_every: int = DEFAULT_SAVE_EVERY
    signals: SignalFlag | None = None
    extra: dict = field(default_factory=dict)   # saved in every checkpoint as is

    def resume_into(self, modules: dict, rngs: dict, log: StageLog) -> int:
        """Restore ``modules`` (checkpoint key -> anything with ``load_state_dict``) and the
        numpy generators ``rngs`` (key -> Generator; one the checkpoint lacks keeps its
        state) from ``resume``, and the random states; start ``log`` with the rows logged
        so far. Returns the update to continue from (0 without a checkpoint)."""
        if self.resume is None:
            log.start([])
            return 0
        for key, module in modules.items():
            module.load_state_dict(self.resume[key])
        for key, generator in rngs.items():
            if key in self.resume:
                generator.bit_generator.state = self.resume[key]
        self.rt.restore_rng(self.resume["rng"])
        log.start(self.resume["rows"])
        return int(self.resume["update"])

    def after_update(self, update: int, total: int, log: StageLog, payload: Callable[[], dict]) -> bool:
        """Checkpoint every ``save_every`` updates, and on a signal; True when the loop
        must stop (a signal: the caller exits with RERUN_EXIT_CODE)."""
        stop = self.rt.any_rank(self.signals is not None and self.signals.received is not None)
        save = self.checkpoint is not None and (stop or (update % self.save_every == 0 and update < total))
        if save or stop or update % FLUSH_EVERY == 0 or update == total:
            log.flush()
        if save:
            self.checkpoint.save({**payload(), **self.extra, "update": update, "rows": log.rows,
                                  "rng": self.rt.rng_states()})
        if stop:
            log.close()
            where = f"checkpoint {self.checkpoint.path} saved" if self.checkpoint is not None else "no checkpoint"
            logging.info(f"received signal {self.signals.received}: {where} at update {update}; exiting with "
                         f"{RERUN_EXIT_CODE}: rerun the job to resume from it")
        return stop


def stage_file(output: str | Path, suffix: str) -> Path:
    """``<output stem><suffix>`` next to a stage's output (its checkpoint and CSV log)."""
    output = Path(output)
    return output.with_name(output.stem + suffix)


def refuse_nonfinite(output, tensors: dict, stage: str, last_loss: str, fix: str, rule: str) -> None:
    """Raise TrainingDiverged instead of writing ``output`` when ``tensors`` hold NaN or
    Inf: a diverged pre-alignment used to write an all-NaN encoder.pt/sqs.pt with exit
    0, and AEQA-NAT training then blamed its own settings."""
    bad = nonfinite_entries(tensors)
    if bad:
        raise TrainingDiverged(f"{output}: not written: the {stage} diverged ({last_loss}; "
                               f"{describe_nonfinite(bad, len(tensors))}). Set {fix} and rerun the {rule} rule")


def load_stage_output(path: str | Path, what: str, keys: tuple[str, ...], rule: str) -> dict:
    """A pretrain_sqs output (a ``torch.save`` dict), checked: it exists, its records
    pass their CRCs, it holds ``keys``. Any problem is an InputError naming the file
    and the ``rule`` that rewrites it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; run the {rule} rule first (snakemake {path})")
    try:
        payload = read_checked(path, keys, f"{what} file")
    except Exception as err:
        raise InputError(f"{path}: cannot load the {what} ({type(err).__name__}: {err}); delete it and rerun "
                         f"the {rule} rule") from None
    return payload
