"""The trainer's checkpoints: atomic writes, rotation, fingerprints, resume and the final weights.

A checkpoint holds the model, optimizer, RNG states and the data position (epoch,
batch index). It belongs to its settings (``setup_fingerprint``) and to its data
(``data_fingerprint``: the binarized files and the dictionary); a mismatch starts
over with the old run kept aside. Non-finite weights are never loaded.
:class:`CheckpointManager` owns the files of one run directory; the
:class:`~aeqa_model.train.trainer.Trainer` calls it and keeps the training loop.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.io import InputError, atomic_open, checksum_problem
from aeqa_model.models.build import describe_nonfinite, model_payload, nonfinite_entries
from aeqa_model.train.settings import DEFAULTS, resumable_keys


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_snapshot(device: torch.device) -> tuple:
    """The RNG states an update draws from: host generators and this process's device
    (not rng_state()'s every visible GPU). ~50 us on the host, no device synchronisation;
    taken only when an update has several micro-batches."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def rng_restore(snapshot: tuple, device: torch.device) -> None:
    python, numpy_state, torch_state, cuda = snapshot
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temp sibling + fsync + rename: never a half-written checkpoint."""
    with atomic_open(path, "wb") as handle:
        try:
            torch.save(payload, handle)
        except RuntimeError as err:
            # torch turns a failed write (ENOSPC, EIO) into "[enforce fail at
            # inline_container.cc] unexpected pos ..."; surface the OSError behind it
            # so atomic_open reports the disk error and the file.
            cause = err.__cause__ or err.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None


def read_checked(path: Path, required, what: str = "checkpoint") -> dict:
    """A file ``save_checkpoint`` wrote, read back checked: its records pass their CRCs
    (a zeroed region would load without a word), it is a dict, it holds every key of
    ``required``. Any problem raises (ValueError saying what is wrong, or torch's own
    error for a truncated file); the callers name the file and the way out."""
    damage = checksum_problem(path)
    if damage:
        raise ValueError(damage)
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict):
        raise ValueError(f"a {type(payload).__name__}, not a {what}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in it")
    return payload


# Training settings that only change when and how results are written (declared
# ``resumable`` in train/settings.py): an interrupted run stays resumable across edits of
# these, since the weights of every update are the same whatever they are. max_updates is
# not one of them: lambda and the glancing ratio anneal over it (models' anneal_updates
# default), so a run of another length is another run, and a run that reached its
# max_updates is never resumed at all.
RESUMABLE_KEYS = resumable_keys()


def setup_fingerprint(model_spec: dict, train_spec: dict, seed: int, transformer: dict | None = None,
                      inputs: dict | None = None) -> str:
    """Hash of everything the weights of a run depend on, but the training data (that is
    ``data_fingerprint``): the model entry, the resolved transformer size (``model_sizes``
    entry or built-in; dropout included), the training settings but RESUMABLE_KEYS, the
    seed, and ``inputs``, the digests of further input files (the SQS of ``--sqs-init``)."""
    settings = {"model": model_spec, "seed": seed, "transformer": transformer or {}, "inputs": inputs or {},
                "training": {k: v for k, v in train_spec.items() if k not in RESUMABLE_KEYS}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _files_digest(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            digest.update(f"{Path(path).suffix}:{os.fstat(handle.fileno()).st_size}:".encode())
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def data_fingerprint(dictionary: Dictionary, train: ParallelCorpus, valid: ParallelCorpus | None) -> dict:
    """sha256 of each binarized file a run reads (``.idx`` + ``.bin`` of both sides of
    train and valid, and of their target codes where a run reads them) and of the dictionary (its symbols and counts, i.e. dict.txt).

    Costs one sequential read of the data, once per job start (per process under
    DDP): ~1 GB/s on the development machine (0.46 s for 512 MiB from the page cache;
    sha256 alone ~1.8 GB/s), so WMT14 en-de (~1.1 GB of binarized train data) adds
    about a second, plus the disk read on a cold cache, to a job of hours; the smoke
    data takes milliseconds."""
    symbols = json.dumps([dictionary.symbols, dictionary.counts], ensure_ascii=False)
    out = {"dictionary": hashlib.sha256(symbols.encode()).hexdigest()}
    for split, corpus in (("train", train), ("valid", valid)):
        if corpus is None:
            continue
        for side in ("src", "tgt", "codes"):
            if getattr(corpus, side, None) is None:   # codes: only with h_y_encoder: pretrained
                continue
            prefix = getattr(corpus, side).prefix
            out[f"{split}.{side}"] = _files_digest([f"{prefix}.idx", f"{prefix}.bin"])
    return out


class CheckpointManager:
    """The checkpoint files of one run directory: ``checkpoint_last.pt`` (the resume
    point), ``checkpoint_<update>.pt`` (the last ``keep_last`` periodic ones, averaged
    into the final weights) and ``checkpoint_best.pt``; written by rank 0 only."""

    def __init__(self, out_dir: Path, setup: str, dictionary: Dictionary, train: ParallelCorpus,
                 valid: ParallelCorpus | None, keep_last: int = DEFAULTS["keep_last"], rank: int = 0, log=print):
        self.out_dir = Path(out_dir)
        self.setup = setup
        self.dictionary = dictionary
        self.train_data, self.valid_data = train, valid
        self.keep_last = keep_last
        self.rank = rank
        self.log = log
        self.saved_update: int | None = None  # the update of checkpoint_last.pt, once known

    @property
    def last_path(self) -> Path:
        return self.out_dir / "checkpoint_last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "checkpoint_best.pt"

    @functools.cached_property
    def data(self) -> dict:
        """The data fingerprint of this run (computed once, when first needed)."""
        return data_fingerprint(self.dictionary, self.train_data, self.valid_data)

    def _data_file_names(self) -> dict:
        names = {"dictionary": "the dictionary (dict.txt)"}
        for split, corpus in (("train", self.train_data), ("valid", self.valid_data)):
            for side in ("src", "tgt"):
                if corpus is not None:
                    names[f"{split}.{side}"] = f"{getattr(corpus, side).prefix}.{{bin,idx}}"
        return names

    # ---------------------------------------------------------------- writing --
    def save(self, tag: str, payload: dict, update: int) -> None:
        """Write ``payload`` as checkpoint_last.pt (and, for ``tag == "periodic"``, the
        model as checkpoint_<update>.pt, rotating to ``keep_last``). Rank 0 only."""
        # checkpoint_last.pt is the commit point of a save: a job killed before it is
        # renamed into place resumes from the previous one and redoes (bit for bit) the
        # updates since, rewriting the numbered checkpoint. Written first, a kill between
        # the two would lose checkpoint_<update>.pt for good and change the average.
        numbered = self.out_dir / f"checkpoint_{update}.pt"
        if tag == "periodic":
            save_checkpoint(numbered, {"model": payload["model"]})
        save_checkpoint(self.last_path, payload)
        self.saved_update = update
        if tag == "periodic":
            olds = sorted(self.out_dir.glob("checkpoint_[0-9]*.pt"), key=lambda p: int(p.stem.split("_")[1]))
            for old in olds[:-self.keep_last]:
                old.unlink(missing_ok=True)

    def save_best(self, model: torch.nn.Module) -> None:
        if self.rank == 0:
            save_checkpoint(self.best_path, {"model": model_payload(model)})

    # --------------------------------------------------------------- resuming --
    def _clean_stale_temporaries(self) -> None:
        """A job killed while writing a checkpoint leaves only a hidden temp file
        (the real file is renamed into place last); remove such leftovers."""
        for tmp in self.out_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _what_changed(self, ckpt: dict) -> str | None:
        """How the run that wrote ``ckpt`` differs from this one (None: it is this run)."""
        if ckpt.get("setup", self.setup) != self.setup:
            return "other model/training settings"
        old = ckpt.get("data")
        if old is None:
            # Written before checkpoints carried a data fingerprint; the model payload
            # still names its dictionary, the part that decides the embedding shapes.
            symbols = list(ckpt["model"].get("dictionary", self.dictionary.symbols[6:]))
            if symbols != self.dictionary.symbols[6:]:
                return "another dictionary (its model payload lists other symbols)"
            self.log(f"{self.last_path}: written without a data fingerprint (by an older version); resuming "
                     "without checking that the training data is the same")
            return None
        names = self._data_file_names()
        changed = [names.get(key, key) for key in sorted(set(old) | set(self.data))
                   if old.get(key) != self.data.get(key)]
        return f"other data (changed: {', '.join(changed)})" if changed else None

    @property
    def delivered_path(self) -> Path:
        """Written once the final model of this run is on disk (``mark_delivered``)."""
        return self.out_dir / "delivered.json"

    def mark_delivered(self, model_path: Path, update: int) -> None:
        """Record that the run's final model was written: from now on a rerun (a new job for
        the same output, e.g. --forcerun) trains anew instead of resuming this finished run."""
        if self.rank == 0:
            with atomic_open(self.delivered_path) as handle:
                json.dump({"model": str(model_path), "update": update, "setup": self.setup}, handle)

    def _delivered(self, ckpt: dict) -> str | None:
        """How the run that wrote ``ckpt`` ended, if it finished *and* delivered its model
        (None: interrupted, or finished but killed before its model was written: then
        resuming rebuilds the model from the checkpoints without training). Checkpoints
        from before the ``finished`` flag count as delivered once they reached their own
        max_updates."""
        state = ckpt["state"]
        total = int((ckpt.get("train_spec") or {}).get("max_updates", -1))
        if "finished" in state:
            done = state["finished"] and self.delivered_path.exists()
        else:
            done = total >= 0 and state["update"] >= total
        return f"update {state['update']} of {total}, its model written" if done else None

    def _set_aside(self, ckpt: dict, log_path: Path) -> Path:
        """Move the old run's checkpoints and log into a fresh stale-<hash>/ directory."""
        key = json.dumps([ckpt.get("setup"), ckpt.get("data")], sort_keys=True, default=str)
        base = f"stale-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        stale, n = self.out_dir / base, 1
        while stale.exists() and any(stale.iterdir()):  # never overwrite an earlier set-aside run
            n += 1
            stale = self.out_dir / f"{base}-{n}"
        stale.mkdir(exist_ok=True)
        for old in [*self.out_dir.glob("checkpoint_*.pt"), log_path, self.delivered_path]:
            if old.exists():
                os.replace(old, stale / old.name)
        return stale

    def try_resume(self, model: torch.nn.Module, optimizer, scaler, log_path: Path, barrier) -> dict | None:
        """Load checkpoint_last.pt into ``model``, ``optimizer``, ``scaler`` and the RNGs;
        returns its training state (a dict), or None to train from scratch: no checkpoint,
        or one of other settings or data (then set aside with ``log_path``, the run's log).
        ``barrier`` synchronises the processes of a DDP run."""
        self._clean_stale_temporaries()
        if not self.last_path.exists():
            if self.rank == 0:
                self.delivered_path.unlink(missing_ok=True)  # of a run whose checkpoints were deleted
            return None
        try:
            ckpt = read_checked(self.last_path, ("model", "optimizer", "rng", "scaler", "state"))
        except Exception as err:  # truncated, corrupt or foreign file
            # This trainer never leaves a torn checkpoint_last.pt (atomic writes); a bad one
            # was damaged or copied in from outside. Starting over silently would hide that.
            raise InputError(
                f"{self.last_path}: cannot resume from this checkpoint ({type(err).__name__}: {err}). "
                f"Restore it from a backup, or delete it (and the other checkpoint_*.pt files in "
                f"{self.out_dir}) to train from scratch") from None
        changed = self._what_changed(ckpt)
        delivered = self._delivered(ckpt)
        barrier()  # every rank has read the checkpoint before rank 0 may move it
        if changed is not None or delivered is not None:
            # The settings or the data changed since these checkpoints were written (a config
            # edit, a re-prepared corpus, a new SQS), or the run they belong to finished and
            # delivered its model (a rerun, e.g. --forcerun, asks for new weights, not the
            # old ones again): train from scratch, keeping the old run's files aside
            # rather than deleting them.
            if self.rank == 0:
                stale = self._set_aside(ckpt, log_path)
                why = f"written for {changed}" if changed is not None else f"belongs to a finished run ({delivered})"
                self.log(f"{self.last_path}: {why}; starting from scratch "
                         f"(the old checkpoints and log are kept in {stale})")
            barrier()
            return None
        state_dict = ckpt["model"]["state_dict"]
        bad = nonfinite_entries(state_dict)
        if bad:
            raise InputError(
                f"{self.last_path}: {describe_nonfinite(bad, len(state_dict))}; it was written by a diverged run "
                f"(before checkpoints were checked). Delete it and the other checkpoint_*.pt files in "
                f"{self.out_dir} (or restore a good copy) and rerun to train from scratch")
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as err:
            # Settings, sizes (ffn_dim...) and data are in the fingerprint: a change of those
            # started over above. What is left is the same run and another model code (a
            # model class changed since the checkpoint was written).
            first = str(err).strip().splitlines()
            raise InputError(
                f"{self.last_path}: written for the same settings and data, but it does not fit the model this "
                f"version of the code builds from them ({' '.join(line.strip() for line in first[:3])}); the "
                f"model's code changed since. Move it and the other checkpoint_*.pt files in {self.out_dir} aside "
                f"(or delete them) and rerun to train from scratch, or resume with the code that wrote it") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        set_rng_state(ckpt["rng"])
        self.saved_update = state["update"]
        return state

    # ---------------------------------------------------------- final weights --
    def _load_finite(self, path: Path) -> dict:
        """A checkpoint whose weights go into the final model: checksums first, then finite."""
        damage = checksum_problem(path)
        if damage:
            raise InputError(f"{path}: {damage}. Restore it from a backup, or delete the checkpoint_*.pt files in "
                             f"{self.out_dir} and rerun to train from scratch")
        payload = torch.load(path, map_location="cpu", weights_only=False)
        bad = nonfinite_entries(payload["model"]["state_dict"])
        if bad:
            raise InputError(f"{path}: {describe_nonfinite(bad, len(payload['model']['state_dict']))}; it was written "
                             f"by a diverged run (before checkpoints were checked). Delete it and rerun")
        return payload

    def final_model(self, model: torch.nn.Module, update: int, choice: str = DEFAULTS["final"],
                    average_last: int = DEFAULTS["average_last"]) -> dict:
        """The weights to decode with: ``best`` (lowest valid loss), ``last`` (``model``
        as it is, after ``update`` updates), or ``average`` of the last N periodic
        checkpoints (plus the final weights)."""
        if choice == "best" and self.best_path.exists():
            return self._load_finite(self.best_path)["model"]
        payload = model_payload(model)
        if choice == "average" and average_last > 1:
            paths = sorted(self.out_dir.glob("checkpoint_[0-9]*.pt"), key=lambda p: int(p.stem.split("_")[1]))
            paths = [p for p in paths if int(p.stem.split("_")[1]) != update][-(average_last - 1):]
            if len(paths) + 1 < average_last:  # e.g. max_updates / save_every below average_last
                self.log(f"warning: average_last {average_last}, but only {len(paths)} periodic checkpoint(s) "
                         f"besides the final weights are in {self.out_dir}: the final model averages "
                         f"{len(paths) + 1} (save more often, save_every, to average more)")
            states = [self._load_finite(p)["model"]["state_dict"] for p in paths]
            states.append({k: v.detach().cpu() for k, v in payload["state_dict"].items()})
            averaged = {}
            for key, value in states[-1].items():
                if value.is_floating_point():
                    averaged[key] = sum(s[key].float() for s in states) / len(states)
                else:
                    averaged[key] = value
            payload["state_dict"] = averaged
            payload["averaged_checkpoints"] = [str(p) for p in paths] + ["final"]
        return payload
