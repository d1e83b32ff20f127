"""One trainer for every model: token batches, accumulation, Adam + inverse-sqrt,
AMP on GPU, DDP under torchrun, atomic resumable checkpoints and SLURM signals. The
checkpoint files (writing, fingerprints, resuming, the final weights) are handled by
:class:`~aeqa_model.train.checkpoint.CheckpointManager`; this module keeps the loop.

Resumption is exact on CPU: a checkpoint holds the model, optimizer, RNG states
and the data position (epoch, batch index), and batches are a pure function of
(seed, epoch), so a killed-and-resumed run reaches the same weights bit for bit
as an uninterrupted one.

A checkpoint belongs to its settings (``setup_fingerprint``) and to its data
(``data_fingerprint``: the binarized files and the dictionary); a mismatch starts
over with the old run kept aside. Non-finite weights are never written or loaded:
an update whose loss or gradient is not finite is skipped (counted in the log), and
``max_consecutive_skips`` of them in a row stop the run with an error.

With ``compile`` on (``auto``: on CUDA only; off by default) the training step runs the model's
``forward`` through ``torch.compile`` and pads batch widths to ``pad_to_multiple``; the
eager path stays the reference (tests/test_train_compile.py compares the two).
"""
from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.bpe import remove_bpe
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.download import file_digest
from aeqa_model.io import InputError, OutputError, atomic_open
from aeqa_model.models.base import LossTerm, total_loss
from aeqa_model.models.build import build_model, describe_nonfinite, model_payload, nonfinite_entries
# RERUN_EXIT_CODE and TrainingDiverged are also imported from here (the trainer's API)
from aeqa_model.train.runtime import (RERUN_EXIT_CODE, SignalFlag, TrainingDiverged, amp_dtype,
                                     compile_training_step, compile_wanted, seed_everything, start_processes)
from aeqa_model.train.checkpoint import CheckpointManager, rng_restore, rng_snapshot, rng_state, setup_fingerprint
from aeqa_model.train.schedule import inverse_sqrt_lr
from aeqa_model.train.settings import DEFAULTS, TrainingSettings, averaging_problem, spec_value, update_freq

@dataclass
class TrainState:
    update: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid: float = math.inf
    history: list = field(default_factory=list)
    skipped: int = 0           # updates skipped for a non-finite loss or gradient, in all
    nonfinite_streak: int = 0  # ... of them in a row, up to this update
    finished: bool = False     # reached max_updates: never resumed, a rerun trains anew


def check_target_codes(model, train: ParallelCorpus, valid: ParallelCorpus | None) -> None:
    """A model with ``h_y_encoder: pretrained`` reads the target codes of the
    sqs_target_codes stage with every batch, train and valid: refuse a run without them,
    or with codes outside its codebook, before the first step rather than in it."""
    wants = getattr(getattr(model, "opts", None), "h_y_encoder", "nat") == "pretrained"
    for name, corpus in (("train", train), ("valid", valid)):
        if corpus is None:
            continue
        if wants and corpus.codes is None:
            raise InputError(f"h_y_encoder: pretrained needs the {name} targets' SQS codes (--{name}-codes, "
                             f"made by the sqs_target_codes rule)")
        if wants and len(corpus.codes.tokens) and int(corpus.codes.tokens.max()) >= model.sqs.num_codes:
            raise InputError(f"{corpus.codes.prefix}.bin: code {int(corpus.codes.tokens.max())} is outside the "
                             f"model's codebook of {model.sqs.num_codes}; the codes were made for another K")


class Trainer:
    # torch.compile's backend for the training step; tests use "aot_eager" (the same
    # capture, graph breaks and autograd, without inductor's minutes of CPU compiling).
    COMPILE_BACKEND = "inductor"

    def __init__(self, model_spec: dict, train_spec: dict, dictionary: Dictionary, train: ParallelCorpus,
                 valid: ParallelCorpus | None, out_dir: str | Path, seed: int = 1, device: str = "auto",
                 sizes: dict | None = None, sqs_init: str | None = None, log=print):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.spec = train_spec  # as given: checkpoints hold it, the setup fingerprint hashes it
        self.seed = seed
        self.log = log
        self.device, self.rank, self.world = start_processes(device)  # InputError: CUDA where torch sees none
        seed_everything(seed)
        # Every setting at its declared default where the spec has none (train/settings.py).
        self.settings = settings = TrainingSettings.from_dict(train_spec)
        self.max_updates = settings.max_updates
        problem = averaging_problem(train_spec)
        if problem:  # the config's start-up check says the same; this is for a train cli run by hand
            raise InputError(f"training: {problem}")
        self.max_consecutive_skips = settings.max_consecutive_skips
        # label_smoothing as written (the model casts it; its options go into model.pt as given)
        options = {"label_smoothing": spec_value(train_spec, "label_smoothing"), "max_updates": self.max_updates}
        self.model = build_model(model_spec, dictionary, sizes, options).to(self.device)
        inputs = {}
        if sqs_init and hasattr(self.model, "load_pretrained_sqs"):
            self.model.load_pretrained_sqs(sqs_init)  # checks the file: InputError naming it
            inputs["sqs_init"] = file_digest(sqs_init)
        check_target_codes(self.model, train, valid)
        # The run a checkpoint belongs to: the settings, the size the model was built with
        # (not only the size's name) and the SQS it starts from.
        self.setup = setup_fingerprint(model_spec, train_spec, seed, transformer=dict(self.model.cfg.__dict__),
                                       inputs=inputs)
        self.checkpoints = CheckpointManager(self.out_dir, self.setup, dictionary, train, valid,
                                             keep_last=settings.keep_last,
                                             rank=self.rank, log=log)
        self.compiled = compile_wanted(settings.compile, self.device)
        # Only a compiled step pads: eager runs keep their batches bit for bit.
        self.pad_to_multiple = settings.pad_to_multiple if self.compiled else 1
        if self.compiled:
            compile_training_step(self.model, self.COMPILE_BACKEND)  # before DDP wraps it
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.lr, betas=settings.adam_betas, eps=settings.adam_eps,
            weight_decay=settings.weight_decay,
            # One fused kernel for the whole update on a GPU instead of a few per
            # parameter tensor (issue 27). On the CPU the reference (foreach) path stays,
            # so CPU runs and their bit-exact resume tests are unchanged.
            fused=self.device.type == "cuda")
        self.amp = amp_dtype(settings.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.train_data, self.valid_data = train, valid
        self.dictionary = dictionary
        self.state = TrainState()
        self.signals = SignalFlag()
        self.csv_path = self.out_dir / "train_log.csv"
        self.tensorboard = None
        if self.rank == 0 and settings.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional; the CSV log always exists
                self.log("tensorboard not installed: writing the CSV log only")

    # ------------------------------------------------------------ checkpoints --
    @property
    def last_path(self) -> Path:
        return self.checkpoints.last_path

    @property
    def data(self) -> dict:
        """The data fingerprint of this run (computed once, when first needed)."""
        return self.checkpoints.data

    def checkpoint(self) -> dict:
        return {"model": model_payload(self.model), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "state": self.state.__dict__, "rng": rng_state(),
                "train_spec": self.spec, "seed": self.seed, "setup": self.setup, "data": self.data}

    def _refuse_nonfinite_weights(self, target: Path) -> None:
        """Called before every save: a checkpoint never holds NaN or Inf weights."""
        bad = nonfinite_entries(self.model.state_dict())
        if bad:
            raise TrainingDiverged(self._divergence_message(
                f"{describe_nonfinite(bad, len(self.model.state_dict()))}, so {target.name} was not written"))

    def _divergence_message(self, reason: str) -> str:
        fix = "fix the settings (a lower lr, a longer warmup_updates, clip_norm) and rerun to start over"
        update = self.state.update
        saved_update = self.checkpoints.saved_update
        if saved_update is not None and self.last_path.exists():
            first_bad = update - self.state.nonfinite_streak + 1
            weights = (f"those of update {first_bad - 1}, before the non-finite updates began"
                       if self.state.nonfinite_streak and saved_update >= first_bad else "finite")
            way = (f"Nothing was written after the last checkpoint, {self.last_path} (update {saved_update}; "
                   f"its weights are {weights}). To go on, {fix} (this run's checkpoints and log are then kept in "
                   f"{self.out_dir}/stale-<hash>/), or rerun unchanged to resume from that checkpoint (on CPU the "
                   f"same updates follow, bit for bit)")
        else:
            way = f"No checkpoint was written before it (save_every {self.settings.save_every}); {fix}"
        return f"training diverged at update {update}: {reason}. {way}. Every update is logged in {self.csv_path}"

    def save(self, tag: str) -> None:
        # Checked on every rank (the replicas are equal), so that all of them stop together.
        self._refuse_nonfinite_weights(self.last_path)
        if self.rank != 0:
            return
        self.checkpoints.save(tag, self.checkpoint(), self.state.update)

    def _truncate_csv(self, update: int) -> None:
        """Drop log rows newer than the checkpoint we resume from (they will be redone)."""
        if not self.csv_path.exists() or self.rank != 0:
            return
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        kept, last = rows[:1], 0
        for row in rows[1:]:
            # The appends are not atomic: a kill or a full disk can leave a cut row
            # ("1" of "12,0,..."), which must not pass for the row of update 1.
            if len(row) != len(rows[0]) or not row[0].isdigit():
                continue
            if last < int(row[0]) <= update:
                kept.append(row)
                last = int(row[0])
        with atomic_open(self.csv_path) as handle:
            csv.writer(handle).writerows(kept)

    def _barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def try_resume(self) -> bool:
        state = self.checkpoints.try_resume(self.model, self.optimizer, self.scaler, self.csv_path, self._barrier)
        if state is None:
            return False
        self.state = TrainState(**state)
        self._truncate_csv(self.state.update)
        self.log(f"resumed from {self.last_path} at update {self.state.update} "
                 f"(epoch {self.state.epoch}, batch {self.state.batch_in_epoch})")
        return True

    # ------------------------------------------------------------------ steps --
    def _forward(self, batch, update):
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.ddp is None and not self.compiled:
                return self.model.losses(batch, update)
            # Through the module's __call__: DDP's forward arms its gradient hooks, and a
            # compiled model's __call__ is the compiled forward. Both see plain tensors, so
            # the model's forward returns (value, weight) pairs.
            pairs = (self.ddp or self.model)(batch, update)
            return {name: LossTerm(value, weight) for name, (value, weight) in pairs.items()}

    @torch.no_grad()
    def validate(self) -> float:
        if self.valid_data is None or len(self.valid_data) == 0:
            return float("nan")
        self.model.eval()
        total, weight = 0.0, 0
        for ids in self.valid_data.token_batches(self.settings.max_tokens, shuffle=False):
            batch = self.valid_data.batch(ids).to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                terms = self.model.losses(batch, self.state.update)
            total += float(total_loss(terms)) * batch.ntokens
            weight += batch.ntokens
        self.model.train()
        return total / max(weight, 1)

    @torch.no_grad()
    def validation_bleu(self) -> float | None:
        """Tokenized BLEU (BPE removed) of the first ``validate_bleu_sentences`` validation
        sentences, decoded with the model's cheap validation decoding."""
        n = self.settings.validate_bleu_sentences
        if n <= 0 or self.valid_data is None or len(self.valid_data) == 0:
            return None
        import sacrebleu

        from aeqa_model.decode import generate

        self.model.eval()
        d = self.model.dictionary
        ids = list(range(min(n, len(self.valid_data))))
        hyps, refs = [], []
        for start in range(0, len(ids), 64):
            batch = self.valid_data.batch(ids[start:start + 64]).to(self.device)
            for hyp, ref in zip(generate(self.model, batch.src, self.model.validation_decoding), batch.target.tolist()):
                hyps.append(remove_bpe(d.decode(hyp)))
                refs.append(remove_bpe(d.decode(ref)))
        self.model.train()
        return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score)

    VALIDATION_FIELDS = ("valid_loss", "valid_bleu", "codes_used", "code_perplexity")

    def _write_csv(self, row: dict) -> None:
        """One row per update with a fixed header (validation columns empty between
        validations), so the log loads as a table."""
        if self.rank != 0:
            return
        new = not self.csv_path.exists()
        if new:
            self._csv_fields = list(row) + [f for f in self.VALIDATION_FIELDS if f not in row]
        elif not getattr(self, "_csv_fields", None):
            with open(self.csv_path, newline="", encoding="utf-8") as handle:
                self._csv_fields = next(csv.reader(handle))
        try:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=self._csv_fields, restval="", extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as err:
            if err.filename is not None or err.errno is None:
                raise
            raise OutputError(err.errno, f"{err.strerror} while appending to {self.csv_path}; {self.last_path} is "
                                     f"unchanged: free disk space and rerun to resume from it") from err
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("update", "epoch") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, row["update"])
            self.tensorboard.flush()

    def update_freq(self) -> int:
        """Micro-batches per update: ``train.settings.update_freq`` of this run's spec and
        process count (the one rule, the cluster's runtimes use it too)."""
        return update_freq(self.spec, self.world)

    def _check_an_epoch_makes_an_update(self, update_freq: int, max_tokens: int) -> None:
        """A start-up error instead of a loop that never completes an update (and so never
        looks at a signal): an empty training split, or an update needing more batches
        than an epoch has. Accumulating across epochs would put a sentence into the same
        update twice, so the settings must change instead."""
        src, tgt = f"{self.train_data.src.prefix}.idx", f"{self.train_data.tgt.prefix}.idx"
        sentences = len(self.train_data)
        if sentences == 0:
            raise InputError(f"the training split is empty: {src} and {tgt} hold no sentences; check the "
                             f"dataset's prepare and binarize reports (tok/report.json, bin/report.json) and rerun "
                             f"the stages that wrote them")
        # The number of batches is the same in every epoch (only the order changes).
        batches = len(self.train_data.token_batches(max_tokens, shuffle=False))
        per_process = batches // self.world
        if per_process >= update_freq:
            return
        target = self.settings.effective_batch_tokens
        how = (f"effective_batch_tokens {int(target)} / (max_tokens {max_tokens} x {self.world} process(es)), "
               f"rounded up" if target else "update_freq")
        processes = f", {per_process} per process ({self.world} processes)" if self.world > 1 else ""
        raise InputError(
            f"one update needs {update_freq} batches ({how}), but an epoch of the training data ({sentences} "
            f"sentences, {int(self.train_data.tgt.sizes.sum())} target tokens in {tgt}) makes only {batches} "
            f"batches of at most {max_tokens} tokens{processes}, so no update could ever complete. Lower "
            f"effective_batch_tokens (or update_freq), raise max_tokens, or train on more data")

    def _accumulate(self, group: list) -> tuple | None:
        """Forward and backward over the micro-batches of one update, then unscale and clip.

        Returns (loss, gradient norm, non-finite?, logged terms, target tokens), read from
        the device in one synchronisation; or None when a signal arrived between two
        micro-batches: the update is abandoned (gradients dropped, the RNG rewound to
        its start), so a checkpoint written now equals the one of the update before."""
        rng_before = rng_snapshot(self.device) if len(group) > 1 else None
        self.optimizer.zero_grad(set_to_none=True)
        # The optimized objective: the weighted sum (Eq. 13), not the raw terms.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        term_sums: dict[str, torch.Tensor] = {}
        ntok = 0
        for i, ids in enumerate(group):
            if i > 0 and self.signals.received is not None:
                self.optimizer.zero_grad(set_to_none=True)
                rng_restore(rng_before, self.device)
                return None
            cpu_batch = self.train_data.batch(ids, self.pad_to_multiple)
            ntok += cpu_batch.ntokens  # counted on the host: no synchronisation
            batch = cpu_batch.to(self.device)
            terms = self._forward(batch, self.state.update)
            loss = total_loss(terms) / len(group)
            self.scaler.scale(loss).backward()
            loss_sum = loss_sum + loss.detach().double()
            for name, term in terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + term.value.detach().double() / len(group)
        self.scaler.unscale_(self.optimizer)
        clip = self.settings.clip_norm
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        bad = (~(torch.isfinite(loss_sum) & torch.isfinite(gnorm))).to(torch.float64)
        if self.ddp is not None:
            # The gradients are all-reduced, the loss is not: decide together, so that
            # every process skips the same updates and the replicas stay equal.
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        values = torch.stack([loss_sum, gnorm.to(loss_sum.device, torch.float64), bad,
                              *[v.to(loss_sum.device) for v in term_sums.values()]]).tolist()
        return values[0], values[1], values[2] > 0, dict(zip(term_sums, values[3:])), ntok

    def _after_skip(self, row: dict, loss_value: float, gnorm: float) -> None:
        """Log a skipped update; stop with TrainingDiverged (after logging its row) when the
        weights are no longer finite or ``max_consecutive_skips`` updates in a row failed."""
        state = self.state
        scale = f"; fp16 loss scale lowered to {self.scaler.get_scale():g}" if self.scaler.is_enabled() else ""
        self.log(f"update {state.update}: non-finite loss or gradient (loss {loss_value:.4g}, gradient norm "
                 f"{gnorm:.4g}): update skipped, weights unchanged ({state.skipped} skipped in all, "
                 f"{state.nonfinite_streak} in a row; max_consecutive_skips {self.max_consecutive_skips}){scale}")
        weights = self.model.state_dict()
        bad = nonfinite_entries(weights)  # e.g. EMA buffers fed by a NaN forward pass
        if bad:
            reason = f"the weights are no longer finite: {describe_nonfinite(bad, len(weights))}"
        elif state.nonfinite_streak >= self.max_consecutive_skips:
            first = state.update - state.nonfinite_streak + 1
            reason = (f"the loss or gradient was non-finite on {state.nonfinite_streak} consecutive updates ({first} "
                      f"to {state.update}; max_consecutive_skips {self.max_consecutive_skips})")
        else:
            return
        self._write_csv(row)
        raise TrainingDiverged(self._divergence_message(reason))

    def _exit_on_signal(self, bar, abandoned: bool = False) -> int:
        self.save("signal")
        bar.close()
        where = (f"between two batches of update {self.state.update + 1}, which was abandoned (it is redone on "
                 f"resume); " if abandoned else "")
        self.log(f"received signal {self.signals.received}: {where}checkpoint {self.last_path} saved at "
                 f"update {self.state.update}; exiting with {RERUN_EXIT_CODE}: rerun the job to resume from it")
        return RERUN_EXIT_CODE

    def train(self) -> int:
        """Run until max_updates; returns 0, or RERUN_EXIT_CODE after a signal. Raises
        TrainingDiverged when the run diverges, InputError for unusable data or checkpoints."""
        from tqdm import tqdm

        settings = self.settings
        update_freq = self.update_freq()
        max_tokens = settings.max_tokens
        self._check_an_epoch_makes_an_update(update_freq, max_tokens)
        resumed = self.try_resume()
        if not resumed and self.csv_path.exists():
            self.csv_path.unlink()
        self.model.train()
        validate_every = settings.validate_every
        save_every = settings.save_every
        bar = tqdm(total=self.max_updates, initial=self.state.update, disable=self.rank != 0,
                   desc=f"train {self.out_dir.name}", dynamic_ncols=True, mininterval=2.0, file=sys.stderr)
        started, tokens_seen = time.time(), 0
        while self.state.update < self.max_updates:
            batches = self.train_data.token_batches(max_tokens, shuffle=True, seed=self.seed, epoch=self.state.epoch)
            batches = batches[self.rank::self.world] if self.world > 1 else batches
            # Each update consumes `update_freq` consecutive batches of this epoch.
            while self.state.batch_in_epoch + update_freq <= len(batches) and self.state.update < self.max_updates:
                group = batches[self.state.batch_in_epoch:self.state.batch_in_epoch + update_freq]
                lr = inverse_sqrt_lr(self.state.update, settings.lr, settings.warmup_updates, settings.warmup_init_lr)
                for group_param in self.optimizer.param_groups:
                    group_param["lr"] = lr
                result = self._accumulate(group)
                if result is None:
                    return self._exit_on_signal(bar, abandoned=True)
                loss_value, gnorm, nonfinite, logged, ntok = result
                if nonfinite:
                    # No optimizer step (fairseq's overflow skip; under fp16 the scaler
                    # lowers its scale). The update still counts, and its batches are used up.
                    self.scaler.update()
                    self.state.skipped += 1
                    self.state.nonfinite_streak += 1
                else:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.state.nonfinite_streak = 0
                self.state.update += 1
                self.state.batch_in_epoch += update_freq
                tokens_seen += ntok
                elapsed = max(time.time() - started, 1e-6)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_seen / elapsed:.0f}",
                                refresh=False)
                row = {"update": self.state.update, "epoch": self.state.epoch, "lr": lr, "loss": loss_value,
                       "gnorm": gnorm, "tokens": ntok, "skipped": self.state.skipped,
                       **{f"loss_{k}": v for k, v in logged.items()}}
                if nonfinite:
                    self._after_skip(row, loss_value, gnorm)
                if self.state.update % validate_every == 0 or self.state.update == self.max_updates:
                    valid = self.validate()
                    row["valid_loss"] = valid
                    bleu = self.validation_bleu()
                    if bleu is not None:
                        row["valid_bleu"] = bleu
                    if hasattr(self.model, "sqs"):
                        stats = self.model.sqs.statistics()
                        row["codes_used"], row["code_perplexity"] = stats["used"], stats["perplexity"]
                        self.model.sqs.reset_usage()
                    if valid < self.state.best_valid:
                        self.state.best_valid = valid
                        self._refuse_nonfinite_weights(self.checkpoints.best_path)
                        self.checkpoints.save_best(self.model)
                    self.log(f"update {self.state.update}: train loss {loss_value:.4f}, valid loss {valid:.4f}"
                             + (f", valid BLEU {bleu:.2f}" if bleu is not None else ""))
                self._write_csv(row)
                if self.state.update % save_every == 0:
                    self.save("periodic")
                if self.signals.received is not None:
                    return self._exit_on_signal(bar)
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
        bar.close()
        if self.state.nonfinite_streak:
            self.log(f"warning: the last {self.state.nonfinite_streak} updates were skipped for a non-finite loss "
                     f"or gradient; the final weights are those of update "
                     f"{self.state.update - self.state.nonfinite_streak}")
        self.state.finished = True
        self.save("final")
        return 0

    def final_model(self, choice: str = DEFAULTS["final"], average_last: int = DEFAULTS["average_last"]) -> dict:
        """The weights to decode with: ``best`` (lowest valid loss), ``last``, or ``average``
        of the last N periodic checkpoints (plus the final weights)."""
        return self.checkpoints.final_model(self.model, self.state.update, choice, average_last)
