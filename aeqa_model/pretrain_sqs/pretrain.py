"""pretrain_sqs (App. A.2): build the pre-aligned Semantic Quantization Space.

Two encoders are supported:
* ``mbart``: a local mBART-large-cc25 directory loaded with ``transformers``
  (MBartModel + its sentencepiece tokenizer); states are 1024-d and a learned
  projection maps them to the NAT width D.
* ``embedded`` (the demo default): a small multilingual transformer trained here
  with mBART's denoising objective (span masking with Poisson(3.5) spans over
  35% of the words + permutation of sentence pairs) on both sides of the corpus.

Alignment then optimizes ``L_AL = L_a + alpha * L_x`` (Eq. 16-18) while the
codebook follows the EMA update of Eq. 6; the output holds the K x D codebook,
the projection and usage statistics.

How it runs (as training does, issue 15):

* ``--device auto|cpu|cuda`` (the rules pass the config's ``device``). On CUDA
  the encoder passes run under bf16 autocast (``pretrain_sqs.amp``). The
  nearest-code search, the alignment losses and the EMA stay in fp32.
* Under torchrun (several GPUs) there is one DDP process per GPU. Every process
  draws the same global batch of ``batch_size`` sentences and takes every N-th
  sentence of it. The quantizer all-reduces its EMA statistics, so every rank
  keeps the same codebook.
* Each stage writes a checkpoint, ``<output stem>_checkpoint.pt`` next to its
  output, every ``pretrain_sqs.save_every`` updates. On SIGTERM or SIGUSR1 it
  writes one at the next update boundary and exits with 75, as train_nat does;
  rerun to resume. On CPU a resumed run ends bit-identical to an uninterrupted
  one. The checkpoint is deleted once the stage's outputs are written.
* Progress goes to stderr, and every update's losses go to
  ``<output stem>_log.csv``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from aeqa_model.data.download import file_digest
from aeqa_model.io import (EXIT_BAD_INPUT, EXIT_FAILED, InputError, OutputError, atomic_open, checksum_problem,
                           os_error_message, read_lines, write_json)
from aeqa_model.models.base import masked_mean
from aeqa_model.models.build import describe_nonfinite, nonfinite_entries
from aeqa_model.models.sqs import SemanticQuantizer
from aeqa_model.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from aeqa_model.train.runtime import (DIVERGED_EXIT_CODE, RERUN_EXIT_CODE, SignalFlag, TrainingDiverged, amp_dtype,
                                     configure_logging, start_processes)

MBART_REQUIRED = ("config.json", "sentencepiece.bpe.model")
DEFAULT_SAVE_EVERY = 1000   # pretrain_sqs.save_every
FLUSH_EVERY = 50            # updates between moving the logged losses from the device to the host
# The spec keys each stage's result depends on: a checkpoint written under other
# values (a config edit) is set aside, not resumed. save_every is not among them.
STAGE_KEYS = {"encoder": ("encoder", "embedded", "lr", "amp"),
              "align": ("encoder", "mbart_path", "align_updates", "alpha", "ema_decay", "lr", "batch_size", "amp",
                        "align_denoise_weight")}


# ----------------------------------------------------------------- noising --
def mbart_noise(ids: list[int], rng: np.random.Generator, mask_id: int, mask_ratio: float = 0.35,
                poisson_lambda: float = 3.5) -> list[int]:
    """Replace spans (lengths ~ Poisson(3.5)) covering ~35% of tokens by one <mask> each."""
    n = len(ids)
    budget = int(round(n * mask_ratio))
    out, i = [], 0
    starts = set()
    while budget > 0 and len(starts) < n:
        start = int(rng.integers(0, n))
        starts.add(start)
        budget -= max(1, int(rng.poisson(poisson_lambda)))
    spans = {}
    for start in starts:
        spans[start] = max(1, int(rng.poisson(poisson_lambda)))
    while i < n:
        if i in spans:
            out.append(mask_id)
            i += spans[i]
        else:
            out.append(ids[i])
            i += 1
    return out


def check_mbart_dir(path: str | Path) -> Path:
    """The local mBART directory of ``pretrain_sqs.mbart_path`` (``~`` expanded, as the
    start-up check aeqa_model.config.mbart_problems does), or an InputError naming what is missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"pretrain_sqs.mbart_path={path}: directory not found; download "
                         "mbart-large-cc25 there or set pretrain_sqs.encoder: embedded")
    missing = [name for name in MBART_REQUIRED if not (path / name).exists()]
    weights = list(path.glob("*.bin")) + list(path.glob("*.safetensors"))
    if not weights:
        missing.append("pytorch_model.bin or model.safetensors")
    if missing:
        raise InputError(f"pretrain_sqs.mbart_path={path}: incomplete mBART directory, missing "
                         f"{', '.join(missing)}")
    return path


class EmbeddedEncoder(nn.Module):
    """The demo's multilingual denoising model: an AT transformer over a sentencepiece vocab."""

    def __init__(self, vocab_size: int, spec: dict):
        super().__init__()
        from aeqa_model.data.dictionary import Dictionary
        from aeqa_model.models.at import ATTransformer
        from aeqa_model.models.transformer import TransformerConfig

        cfg = TransformerConfig(embed_dim=spec["embed_dim"], ffn_dim=spec["ffn_dim"], heads=spec["heads"],
                                encoder_layers=spec["layers"], decoder_layers=1, dropout=0.1)
        dictionary = Dictionary([f"spm{i}" for i in range(vocab_size)])
        self.offset = 6  # sentencepiece id i -> dictionary id i + 6 (after the specials)
        self.model = ATTransformer(dictionary, cfg, {"label_smoothing": 0.0})
        self.dim = cfg.embed_dim

    def encode(self, src):
        return self.model.encode(src)


def pad_batch(seqs: list[list[int]], pad: int = 0, eos: int = 2) -> torch.Tensor:
    width = max(len(s) for s in seqs) + 1
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s) + 1] = torch.tensor(s + [eos])
    return out


def train_sentencepiece(texts: list[str], prefix: Path, vocab_size: int, seed: int) -> "spm.SentencePieceProcessor":
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
                                   hard_vocab_limit=False, character_coverage=0.9995, model_type="unigram",
                                   num_threads=1, minloglevel=2)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    from aeqa_model.io import atomic_open
    with atomic_open(f"{prefix}.model", "wb") as handle:
        handle.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


# ----------------------------------------------------------------- running --
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
            damage = checksum_problem(self.path)
            if damage:
                raise ValueError(damage)
            ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(ckpt, dict):
                raise ValueError(f"a {type(ckpt).__name__}, not a checkpoint")
            missing = set(self.REQUIRED + tuple(required)) - set(ckpt)
            if missing:
                raise ValueError(f"no {', '.join(sorted(missing))} in it")
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


class DenoiseNet(nn.Module):
    """The denoising loss of the embedded encoder's AT model (one module for DDP)."""

    def __init__(self, at: nn.Module):
        super().__init__()
        self.at = at

    def forward(self, src, prev, tgt):
        from aeqa_model.models.base import label_smoothed_ce

        enc, enc_mask = self.at.encode(src)
        logits = self.at.decoder_logits(prev, enc, enc_mask)
        loss, _ = label_smoothed_ce(logits, tgt, 0.1, 0)
        return loss


class AlignNet(nn.Module):
    """What the alignment trains: the encoder and the projection to the NAT width.
    ``forward(x, y)`` returns the projected states (fp32) and padding masks of both
    sides; one module, so DDP sees every trained parameter."""

    def __init__(self, encoder: nn.Module, projection: nn.Linear, encode: Callable, task: nn.Module | None = None):
        super().__init__()
        self.encoder, self.projection = encoder, projection
        self.encode = encode   # (encoder, ids) -> (states, padding mask)
        self.task = task       # the denoising model around the same encoder (align_denoise_weight > 0)

    def states(self, ids):
        h, mask = self.encode(self.encoder, ids)
        return h, mask

    def forward(self, x, y, denoise: tuple | None = None):
        hx, mx = self.states(x)
        hy, my = self.states(y)
        task_loss = self.task(*denoise) if denoise is not None else None
        return self.projection(hx).float(), mx, self.projection(hy).float(), my, task_loss


def noised_batch(sentences: list[list[int]], rng: np.random.Generator, dictionary) -> tuple[torch.Tensor, ...]:
    """(noised source, decoder input, clean target) of mBART denoising for sentences of
    dictionary ids: each cut to 60 tokens and noised by ``mbart_noise``."""
    clean = [s[:60] for s in sentences]
    src = pad_batch([mbart_noise(s, rng, dictionary.mask) for s in clean])
    tgt = pad_batch(clean)
    prev = torch.cat([torch.full_like(tgt[:, :1], dictionary.bos), tgt[:, :-1]], dim=1)
    prev = prev.masked_fill(prev.eq(dictionary.eos) & tgt.eq(0), 0)
    return src, prev, tgt


def denoise_pretrain(encoder: EmbeddedEncoder, sentences: list[list[int]], updates: int, lr: float,
                     batch_size: int, seed: int, log, run: StageRun | None = None) -> list[float] | None:
    """mBART denoising on both languages: reconstruct each sentence from its noised version;
    every other example concatenates two sentences and swaps them (sentence permutation).
    Returns the loss of every update, or None when a signal stopped it (after a checkpoint)."""
    run = run or StageRun()
    rt = run.rt
    rng = np.random.default_rng(seed)
    at = encoder.model.to(rt.device)
    opt = torch.optim.AdamW(at.parameters(), lr=lr, weight_decay=0.01)
    net = rt.wrap(DenoiseNet(at))
    off, mask_id = encoder.offset, at.dictionary.mask
    stage = StageLog(run.csv_path, ("loss",), rt, "pretrain_sqs denoise", updates)
    start = 0
    if run.resume is not None:
        at.load_state_dict(run.resume["model"])
        opt.load_state_dict(run.resume["optimizer"])
        rng.bit_generator.state = run.resume["np_rng"]
        rt.restore_rng(run.resume["rng"])
        start = int(run.resume["update"])
    stage.start(run.resume["rows"] if run.resume is not None else [])
    at.train()
    every = max(updates // 5, 1)
    for step in range(start, updates):
        picks = rng.integers(0, len(sentences), size=(batch_size, 2))
        noised, clean = [], []
        for j, (a, b) in enumerate(picks):   # the whole global batch on every rank: same rng
            orig = [t + off for t in sentences[a]][:60]
            if j % 2 == 1:
                other = [t + off for t in sentences[b]][:60]
                orig, permuted = orig + other, other + orig
            else:
                permuted = orig
            noised.append(mbart_noise(permuted, rng, mask_id))
            clean.append(orig)
        src = pad_batch(rt.shard(noised))
        tgt = pad_batch(rt.shard(clean))
        prev = torch.cat([torch.full_like(tgt[:, :1], at.dictionary.bos), tgt[:, :-1]], dim=1)
        prev = prev.masked_fill(prev.eq(at.dictionary.eos) & tgt.eq(0), 0)
        with rt.autocast():
            loss = net(src.to(rt.device), prev.to(rt.device), tgt.to(rt.device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(at.parameters(), 1.0)
        step_lr = lr * min(1.0, (step + 1) / max(updates // 10, 1))
        for group in opt.param_groups:
            group["lr"] = step_lr
        opt.step()
        stage.add(step + 1, step_lr, loss)
        if (step + 1) % every == 0:
            stage.flush()
            log(f"denoise update {step + 1}/{updates}: loss "
                f"{np.mean([r['loss'] for r in stage.rows[-20:]]):.3f}")
        if run.after_update(step + 1, updates, stage, lambda: {
                "stage": "encoder", "model": at.state_dict(), "optimizer": opt.state_dict(),
                "np_rng": rng.bit_generator.state}):
            return None
    stage.close()
    return [row["loss"] for row in stage.rows]


def align(encoder: nn.Module, encode: Callable, dim_in: int, pairs: list[tuple[list[int], list[int]]], codes: int,
          dim: int, updates: int, alpha: float, decay: float, lr: float, batch_size: int, seed: int, log,
          run: StageRun | None = None, find_unused: bool = False, denoiser: nn.Module | None = None,
          denoise_weight: float = 0.0):
    """Eq. 16-18 with the EMA codebook of Eq. 6. ``encode(encoder, ids)`` gives the
    encoder states and padding mask of a padded batch. Returns (quantizer, projection,
    history, usage without dropout), or None when a signal stopped it (after a
    checkpoint). ``find_unused``: under DDP, some encoder parameters may get no gradient
    (mBART's layer drop).

    ``denoise_weight`` > 0 adds the encoder's own denoising loss (``denoiser``, a
    DenoiseNet around the same encoder) on the batch's sentences of both sides:
    L = L_AL + w L_denoise (docs/method.md #28). L_AL alone lets the encoder collapse:
    every state on one point minimises Eq. 17 and 18."""
    run = run or StageRun()
    rt = run.rt
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    projection = nn.Linear(dim_in, dim)
    quantizer = SemanticQuantizer(codes, dim, decay=decay)
    net = AlignNet(encoder, projection, encode, denoiser if denoise_weight > 0 else None).to(rt.device)
    # the denoising noise has its own stream: the batches are the same with and without it
    noise_rng = np.random.default_rng([seed, 1, rt.rank])
    quantizer.to(rt.device)
    if run.resume is None:
        # Start the codebook on projected target states so no code begins far from the data.
        with torch.no_grad(), rt.autocast():
            seed_ids = rng.integers(0, len(pairs), size=min(len(pairs), 256))
            states = []
            for start in range(0, len(seed_ids), 64):
                h, m = net.states(pad_batch([pairs[i][1] for i in seed_ids[start:start + 64]]).to(rt.device))
                states.append(projection(h).float()[~m])
            states = torch.cat(states)
            pick = torch.randint(len(states), (codes,), generator=torch.Generator().manual_seed(seed))
            quantizer.codebook.data.copy_(states[pick.to(states.device)])
            quantizer.ema_sum.copy_(states[pick.to(states.device)])
    trained_params = list(encoder.parameters()) + list(projection.parameters())
    if net.task is not None:   # the denoiser's own parameters (its decoder), once each
        known = {id(p) for p in trained_params}
        trained_params += [p for p in net.task.parameters() if id(p) not in known]
    opt = torch.optim.AdamW(trained_params, lr=lr, weight_decay=0.01)
    trained = rt.wrap(net, find_unused)
    names = ("L_a", "L_x", "L_AL") + (("L_denoise",) if net.task is not None else ())
    stage = StageLog(run.csv_path, names, rt, "pretrain_sqs align", updates)
    start = 0
    if run.resume is not None:
        net.load_state_dict(run.resume["net"])
        quantizer.load_state_dict(run.resume["quantizer"])
        opt.load_state_dict(run.resume["optimizer"])
        rng.bit_generator.state = run.resume["np_rng"]
        if "noise_rng" in run.resume:
            noise_rng.bit_generator.state = run.resume["noise_rng"]
        rt.restore_rng(run.resume["rng"])
        start = int(run.resume["update"])
    stage.start(run.resume["rows"] if run.resume is not None else [])
    quantizer.train()
    every = max(updates // 5, 1)
    for step in range(start, updates):
        ids = rt.shard(rng.integers(0, len(pairs), size=batch_size))
        x = pad_batch([pairs[i][0] for i in ids]).to(rt.device)
        y = pad_batch([pairs[i][1] for i in ids]).to(rt.device)
        denoise = None
        if net.task is not None:
            sides = [pairs[i][0] for i in ids] + [pairs[i][1] for i in ids]
            denoise = tuple(t.to(rt.device) for t in noised_batch(sides, noise_rng, net.task.at.dictionary))
        with rt.autocast():
            hx, mx, hy, my, task_loss = trained(x, y, denoise)            # fp32 from here on
        qx, qy = quantizer(hx, mx), quantizer(hy, my)
        zbar_x = masked_mean(qx.straight, mx)                            # z_q-bar(H_x), grads reach H_x
        zbar_y = masked_mean(qy.codes, my)
        l_a = (zbar_x - zbar_y.detach()).pow(2).mean()                   # Eq. 17
        keep_x = (~mx).float()
        l_x = ((hx - qx.codes.detach()).pow(2).mean(-1) * keep_x).sum() / keep_x.sum()  # Eq. 18
        loss = l_a + alpha * l_x                                         # Eq. 16
        values = [l_a, l_x, loss]
        if task_loss is not None:                                        # the fine-tuning task (#28)
            loss = loss + denoise_weight * task_loss.float()
            values.append(task_loss.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():                                            # Eq. 6: the source states H_x
            quantizer.ema_update(hx.detach(), qx.indices, mx)
        stage.add(step + 1, lr, torch.stack([v.detach() for v in values]))
        if (step + 1) % every == 0:
            stage.flush()
            last = stage.rows[-1]
            log(f"align update {step + 1}/{updates}: L_AL {last['L_AL']:.4f} (L_a {last['L_a']:.4f}, "
                f"L_x {last['L_x']:.4f}), codes used {quantizer.statistics()['used']}")
        if run.after_update(step + 1, updates, stage, lambda: {
                "stage": "align", "net": net.state_dict(), "quantizer": quantizer.state_dict(),
                "optimizer": opt.state_dict(), "np_rng": rng.bit_generator.state,
                "noise_rng": noise_rng.bit_generator.state}):
            return None
    stage.close()
    history = [{"update": r["update"], "L_a": r["L_a"], "L_x": r["L_x"], "L_AL": r["L_AL"]} for r in stage.rows]
    return quantizer, projection, history, usage_without_dropout(net, quantizer, pairs, rt, seed)


@torch.no_grad()
def usage_without_dropout(net: AlignNet, quantizer: SemanticQuantizer, pairs: list, rt: Runtime, seed: int,
                          sentences: int = 512) -> dict:
    """Codebook usage of the aligned encoder's states *without dropout* (what a frozen
    encoder gives, e.g. for h_y_encoder: pretrained), on a fixed sample of both sides.
    The training usage counts states under dropout, whose noise alone can spread them
    over every code: an encoder whose states all coincide (a collapsed or untrained
    one) still reports every code used there, and only this figure shows it."""
    was = net.training
    net.eval()
    pick = np.random.default_rng(seed).permutation(len(pairs))[:sentences]
    counts = torch.zeros(quantizer.num_codes)
    for start in range(0, len(pick), 64):
        chosen = [pairs[i] for i in pick[start:start + 64]]
        with rt.autocast():
            hx, mx, hy, my, _ = net(pad_batch([p[0] for p in chosen]).to(rt.device),
                                 pad_batch([p[1] for p in chosen]).to(rt.device))
        for h, m in ((hx, mx), (hy, my)):
            counts += torch.bincount(quantizer.nearest(h)[~m].cpu(), minlength=quantizer.num_codes).float()
    net.train(was)
    p = counts / counts.sum().clamp(min=1)
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"codes": quantizer.num_codes, "used": int((counts > 0).sum()), "perplexity": float(np.exp(entropy)),
            "sentences": int(len(pick))}


# -------------------------------------------------------------------- main --
def stage_file(output: str | Path, suffix: str) -> Path:
    """``<output stem><suffix>`` next to a stage's output (its checkpoint and CSV log)."""
    output = Path(output)
    return output.with_name(output.stem + suffix)


def run(args: argparse.Namespace) -> int:
    """Run the stage ``args.stage`` with aeqa_model.pretrain_sqs.cli's flags; returns the exit code
    (0 done, 75 checkpointed on a signal: rerun to resume, 2 bad input)."""
    configure_logging(int(os.environ.get("RANK", "0")))
    log = logging.info
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = json.loads(args.spec)
    try:
        src, tgt = read_lines(args.src_text), read_lines(args.tgt_text)
        if len(src) != len(tgt):
            raise InputError(f"{args.src_text} has {len(src)} lines but {args.tgt_text} has {len(tgt)}")
        if spec.get("encoder", "embedded") == "mbart":
            check_mbart_dir(spec.get("mbart_path") or "")
        save_every = int(spec.get("save_every", DEFAULT_SAVE_EVERY))
        if save_every < 1:
            raise InputError(f"pretrain_sqs.save_every={save_every}: must be at least 1")
        rt = setup_runtime(args.device, spec.get("amp", "auto"))
        output = args.encoder_out if args.stage == "encoder" else args.out
        run = StageRun(rt, csv_path=Path(args.log_csv or stage_file(output, "_log.csv")), save_every=save_every,
                       signals=SignalFlag())
        checkpoint_path = args.checkpoint or stage_file(output, "_checkpoint.pt")
        log(f"pretrain_sqs {args.stage} on {rt.device}" + (" (bf16 autocast)" if rt.amp else "")
            + (f", {rt.world} processes" if rt.world > 1 else ""))
        if args.stage == "encoder":
            return encoder_stage(spec, src, tgt, args, run, checkpoint_path, log)
        return align_stage(spec, src, tgt, args, run, checkpoint_path, log)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:  # nothing non-finite was written; the message names the settings
        print(f"error: {err}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except OSError as err:  # a full disk: one line naming the file, not a traceback
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return EXIT_FAILED


def refuse_nonfinite(output, tensors: dict, stage: str, last_loss: str, fix: str, rule: str) -> None:
    """Raise TrainingDiverged instead of writing ``output`` when ``tensors`` hold NaN or
    Inf: a diverged pre-alignment used to write an all-NaN encoder.pt/sqs.pt with exit
    0, and AEQA-NAT training then blamed its own settings."""
    bad = nonfinite_entries(tensors)
    if bad:
        raise TrainingDiverged(f"{output}: not written: the {stage} diverged ({last_loss}; "
                               f"{describe_nonfinite(bad, len(tensors))}). Set {fix} and rerun the {rule} rule")


def encoder_stage(spec, src, tgt, args, run: StageRun, checkpoint_path, log) -> int:
    """Denoising pre-training of the embedded encoder (mBART needs none)."""
    rt = run.rt
    if spec.get("encoder", "embedded") == "mbart":
        # mBART-large-cc25 is pre-trained already: the align stage loads it from mbart_path.
        path = check_mbart_dir(spec["mbart_path"])
        if rt.main:
            save_checkpoint(Path(args.encoder_out), {"encoder": "mbart", "mbart_path": str(path)})
            write_json(args.stats, {"encoder": f"mbart:{path}", "updates": 0})
        return 0
    emb = spec["embedded"]
    batch_size = int(emb.get("batch_size", 32))
    if batch_size < rt.world:
        raise InputError(f"pretrain_sqs.embedded.batch_size={batch_size}: needs at least one sentence per "
                         f"process ({rt.world}); set it to {rt.world} or more")
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("encoder", spec, seed=args.seed,
                                                                  corpus=text_digest(src, tgt)), rt, log)
    run.resume = run.checkpoint.load(required=("model", "spm"))
    import sentencepiece as spm

    spm_path = Path(f"{Path(args.encoder_out).with_suffix('.spm')}.model")
    if run.resume is not None:   # the vocabulary the checkpoint was trained with
        proto = run.resume["spm"]
        if rt.main and (not spm_path.exists() or spm_path.read_bytes() != proto):
            with atomic_open(spm_path, "wb") as handle:
                handle.write(proto)
    else:
        if rt.main:
            train_sentencepiece(src + tgt, Path(args.encoder_out).with_suffix(".spm"),
                                int(emb.get("sentencepiece_vocab", 8000)), args.seed)
        rt.barrier()
        proto = spm_path.read_bytes()
    rt.barrier()
    spm_model = spm.SentencePieceProcessor(model_proto=proto)
    run.extra = {"spm": proto}
    sentences = [spm_model.encode(s) for s in src + tgt if s.strip()]
    encoder = EmbeddedEncoder(spm_model.get_piece_size(), emb)
    losses = denoise_pretrain(encoder, sentences, int(emb["denoise_updates"]), float(spec["lr"]), batch_size,
                              args.seed, log, run)
    if losses is None:
        return RERUN_EXIT_CODE
    refuse_nonfinite(args.encoder_out, encoder.state_dict(), "denoising", f"last loss {losses[-1]:.4g}",
                     f"a lower pretrain_sqs.lr (now {spec['lr']})", "pretrain_sqs_encoder")
    if rt.main:
        save_checkpoint(Path(args.encoder_out), {"state_dict": encoder.to("cpu").state_dict(),
                                                 "vocab_size": spm_model.get_piece_size(), "spec": emb,
                                                 "spm": str(spm_path), "denoise_loss": losses})
        write_json(args.stats, {"denoise_loss_first": losses[0], "denoise_loss_last": float(np.mean(losses[-20:])),
                                "updates": len(losses)})
    run.checkpoint.remove()
    return 0


def load_encoder(path: Path) -> dict:
    """The encoder stage's output, or an InputError that names it and says what to do."""
    if not path.exists():
        raise InputError(f"{path}: denoised encoder not found; run the pretrain_sqs_encoder stage first "
                         f"(snakemake {path})")
    try:
        damage = checksum_problem(path)
        if damage:
            raise ValueError(damage)
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict):
            raise ValueError(f"a {type(payload).__name__}, not an encoder checkpoint")
        missing = {"state_dict", "vocab_size", "spec", "spm"} - set(payload)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))} in it")
    except Exception as err:
        raise InputError(f"{path}: cannot load the denoised encoder ({type(err).__name__}: {err}); delete it "
                         f"and rerun the pretrain_sqs_encoder stage") from None
    return payload


def align_stage(spec, src, tgt, args, run: StageRun, checkpoint_path, log) -> int:
    import sentencepiece as spm

    rt = run.rt
    batch_size = int(spec.get("batch_size", 32))
    if batch_size < rt.world:
        raise InputError(f"pretrain_sqs.batch_size={batch_size}: needs at least one sentence per process "
                         f"({rt.world}); set it to {rt.world} or more")
    settings = {"seed": args.seed, "codebook_size": args.codebook_size, "dim": args.dim,
                "corpus": text_digest(src, tgt)}
    if spec.get("encoder", "embedded") == "mbart":
        return run_mbart(spec, src, tgt, args, run, checkpoint_path, settings, log)
    encoder_path = Path(args.encoder_out)
    payload = load_encoder(encoder_path)
    spm_path = Path(payload["spm"])
    if not spm_path.exists():   # the results directory was moved: the model sits next to encoder.pt
        spm_path = Path(f"{encoder_path.with_suffix('.spm')}.model")
    if not spm_path.exists():
        raise InputError(f"{encoder_path}: its sentencepiece model {payload['spm']} is missing; rerun the "
                         f"pretrain_sqs_encoder stage")
    spm_model = spm.SentencePieceProcessor(model_file=str(spm_path))
    encoder = EmbeddedEncoder(payload["vocab_size"], payload["spec"])
    encoder.load_state_dict(payload["state_dict"])
    off = encoder.offset
    pairs = [([t + off for t in spm_model.encode(a)][:100], [t + off for t in spm_model.encode(b)][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    encoder.train()
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("align", spec, encoder_file=file_digest(encoder_path),
                                                                  **settings), rt, log)
    run.resume = run.checkpoint.load(required=("net", "quantizer"))
    weight = float(spec.get("align_denoise_weight", 0.0))
    result = align(encoder.model.encoder, lambda module, ids: module(ids), encoder.dim, pairs, args.codebook_size,
                   args.dim, int(spec["align_updates"]), float(spec.get("alpha", 0.5)),
                   float(spec.get("ema_decay", 0.99)), float(spec["lr"]), batch_size, args.seed, log, run,
                   denoiser=DenoiseNet(encoder.model), denoise_weight=weight)
    if result is None:
        return RERUN_EXIT_CODE
    aligned = {"kind": "embedded", "state_dict": encoder.state_dict(), "vocab_size": payload["vocab_size"],
               "spec": payload["spec"], "spm": spm_path.read_bytes()}
    return finish(*result, args, "embedded", run, aligned=aligned)


def run_mbart(spec, src, tgt, args, run: StageRun, checkpoint_path, settings: dict, log) -> int:
    """Align with a real mBART encoder (transformers) loaded from a local directory."""
    try:
        from transformers import MBartModel, MBartTokenizer
    except ImportError:
        print("error: pretrain_sqs.encoder=mbart needs the `transformers` package "
              "(pip install transformers)", file=sys.stderr)
        return EXIT_BAD_INPUT
    path = check_mbart_dir(spec["mbart_path"])
    if float(spec.get("align_denoise_weight", 0.0)) > 0:
        raise InputError("pretrain_sqs.align_denoise_weight > 0 needs encoder: embedded (the mBART stage loads "
                         "mBART's encoder only, not the decoder its denoising needs); set it to 0")
    tokenizer = MBartTokenizer.from_pretrained(str(path), local_files_only=True)
    mbart = MBartModel.from_pretrained(str(path), local_files_only=True).get_encoder()
    pad_id = tokenizer.pad_token_id

    def encode(module, ids):
        mask = ids.eq(0)
        out = module(input_ids=ids.masked_fill(mask, pad_id), attention_mask=(~mask).long())
        return out.last_hidden_state, mask

    pairs = [(tokenizer(a, add_special_tokens=False)["input_ids"][:100], tokenizer(b, add_special_tokens=False)["input_ids"][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    pairs = [(a, b) for a, b in pairs if a and b]
    mbart.train()
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("align", spec, mbart=str(path), **settings),
                                     run.rt, log)
    run.resume = run.checkpoint.load(required=("net", "quantizer"))
    result = align(mbart, encode, mbart.config.d_model, pairs, args.codebook_size, args.dim,
                   int(spec["align_updates"]), float(spec.get("alpha", 0.5)), float(spec.get("ema_decay", 0.99)),
                   float(spec["lr"]), int(spec.get("batch_size", 32)), args.seed, log, run, find_unused=True)
    if result is None:
        return RERUN_EXIT_CODE
    aligned = {"kind": "mbart", "state_dict": mbart.state_dict(), "mbart_path": str(path)}
    return finish(*result, args, f"mbart:{path}", run, aligned=aligned)


def finish(quantizer, projection, history, inference_usage, args, encoder_name, run: StageRun | None = None,
           aligned: dict | None = None) -> int:
    """Write sqs.pt (codebook, projection, usage) and stats.json and, where the flag
    asks for it, the aligned encoder (``aligned``: its weights after the alignment and
    what it reads with) to ``args.aligned_encoder_out``, which the sqs_target_codes stage
    needs for H_y from the pre-aligned encoder (docs/method.md #26). ``inference_usage``:
    the codes the encoder's states use without dropout (``usage_without_dropout``)."""
    rt = run.rt if run is not None else Runtime()
    if rt.world > 1:   # every rank counted its own share of the batches
        dist.all_reduce(quantizer.usage)
    last = f"last L_AL {history[-1]['L_AL']:.4g}" if history else "no update logged"
    refuse_nonfinite(args.out, {"codebook": quantizer.codebook, **projection.state_dict()}, "alignment", last,
                     f"a lower pretrain_sqs.lr (now {json.loads(args.spec).get('lr')}) or pretrain_sqs.alpha",
                     "pretrain_sqs")
    stats = quantizer.statistics()
    if rt.main:
        if getattr(args, "aligned_encoder_out", None) and aligned is not None:
            aligned["state_dict"] = {k: v.detach().cpu().clone() for k, v in aligned["state_dict"].items()}
            save_checkpoint(Path(args.aligned_encoder_out), aligned)
        save_checkpoint(Path(args.out), {"codebook": quantizer.codebook.detach().cpu().clone(),
                                         "projection": projection.to("cpu").state_dict(),
                                         "encoder": encoder_name, "statistics": stats})
        write_json(args.stats, {"encoder": encoder_name, "codebook_size": args.codebook_size, "dim": args.dim,
                                "usage": stats, "usage_without_dropout": inference_usage,
                                "first": history[0] if history else None,
                                "last": history[-1] if history else None,
                                "history": history[:: max(len(history) // 50, 1)]})
        logging.info("codebook: %d/%d codes used, perplexity %.1f (without dropout: %d used, perplexity %.1f)",
                     stats["used"], stats["codes"], stats["perplexity"], inference_usage["used"],
                     inference_usage["perplexity"])
        if inference_usage["used"] < max(2, stats["codes"] // 10):
            logging.warning("without dropout the aligned encoder's states use %d of %d codes: the encoder's "
                            "states barely differ (an undertrained or collapsed encoder; for the embedded one, "
                            "more pretrain_sqs.embedded.denoise_updates); the usage above counts dropout noise",
                            inference_usage["used"], stats["codes"])
    if run is not None and run.checkpoint is not None:
        run.checkpoint.remove()
    return 0
