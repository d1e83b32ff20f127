"""Training faults that used to pass silently or hang (issue 18, items 1, 2 and 4; the
numerical faults of issue 15).

- A diverging run (``lr`` 1e6), a NaN loss for a few updates, an optimizer step that
  overflows, an fp16 overflow under the loss scaler: a non-finite update is skipped and
  counted, a run that keeps failing stops with an error naming the update and the
  checkpoint to resume from, and no checkpoint or model with NaN/Inf weights is ever
  written, resumed from or decoded with.
- The training data or the dictionary changed under a finished run: the rerun trains
  from scratch with the old run kept aside, instead of relabelling the old weights (or
  failing on ``size mismatch for embed.weight``).
- An update that needs more batches than an epoch has, or an empty training split: an
  error at start-up instead of a silent loop at 100% CPU that ignores SIGTERM; and a
  signal between two micro-batches of an update is honoured at once.
"""
from __future__ import annotations

import csv
import math
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import write_indexed
from aeqa_model.io import InputError
from aeqa_model.models.build import load_model
from tests.conftest import VOCAB, make_pairs
from tests.reliability.faultlib import sha256, write_tiny_corpus
from tests.reliability.test_kill_resume import (MODEL, SIZES, SPEC, assert_same_run, data, load,  # noqa: F401
                                                reference, train)  # (data, reference: the shared fixtures)

pytestmark = pytest.mark.fault

DIVERGED = 1      # the train cli's exit code for a diverged run
BAD_INPUT = 2     # ... for unusable data, settings or checkpoints
HANG_TIMEOUT = 90  # seconds; the tiny runs below take a few


def error_line(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert lines, f"no error message in the log:\n{run.stderr}"
    return lines[-1]


def rows(out: Path) -> list[dict]:
    with open(out / "train_log.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def state_dict_of(payload: dict) -> dict:
    return payload["state_dict"] if "state_dict" in payload else payload["model"]["state_dict"]


def nonfinite(state_dict: dict) -> list[str]:
    return [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def assert_no_nonfinite_weights(out: Path) -> None:
    """Every checkpoint and model file the run left has finite weights."""
    for path in out.glob("*.pt"):
        bad = nonfinite(state_dict_of(load(path)))
        assert not bad, f"{path} holds non-finite weights: {bad}"


def last_update(out: Path) -> int:
    return load(out / "checkpoint_last.pt")["state"]["update"]


# --------------------------------------------------------- numerical faults --
def test_a_diverging_run_stops_with_the_update_and_the_checkpoint(data, tmp_path, ledger):
    """lr 1e6 makes the loss NaN from update 3 on. It used to exit 0 with an all-NaN model.pt."""
    out = tmp_path / "run"
    run = train(data, out, spec=dict(SPEC, lr=1e6, max_updates=20))
    assert run.returncode == DIVERGED, run.stderr
    message = ledger.message(error_line(run), names=["training diverged at update", out / "checkpoint_last.pt",
                                                    "lr", "rerun"])
    stopped = int(re.search(r"diverged at update (\d+)", message).group(1))
    assert f"(update {last_update(out)};" in message
    assert not (out / "model.pt").exists(), "a diverged run wrote its model"
    assert_no_nonfinite_weights(out)
    log = rows(out)
    assert int(log[-1]["update"]) == stopped and int(log[-1]["skipped"]) == 10  # max_consecutive_skips' default
    assert all(math.isnan(float(r["loss"])) for r in log[-10:])


def test_a_run_of_nan_updates_stops_and_the_named_checkpoint_resumes_exactly(data, reference, tmp_path, ledger):
    """NaN losses from update 6 on, max_consecutive_skips 3: stop at update 8, before its
    checkpoint; the checkpoint of update 4 is named, and a rerun (the fault gone, e.g.
    a GPU's nondeterminism) resumes from it and ends bit-identical to a clean run."""
    out = tmp_path / "run"
    run = train(data, out, "nan_loss:6", spec=dict(SPEC, max_consecutive_skips=3))
    assert run.returncode == DIVERGED, run.stderr
    message = ledger.message(error_line(run), names=["training diverged at update 8", "updates (6 to 8;",
                                                    f"{out / 'checkpoint_last.pt'} (update 4;"])
    assert last_update(out) == 4 and not (out / "checkpoint_8.pt").exists()
    assert not (out / "model.pt").exists()
    assert_no_nonfinite_weights(out)
    assert [int(r["skipped"]) for r in rows(out)] == [0] * 5 + [1, 2, 3], message
    resumed = train(data, out)  # max_consecutive_skips is not part of the run's identity
    assert resumed.returncode == 0, resumed.stderr
    assert "at update 4" in resumed.stderr
    assert_same_run(reference, out)


def test_a_transient_nan_is_skipped_counted_and_training_goes_on(data, tmp_path, ledger):
    """Two NaN updates (5 and 6) in a healthy run: skipped, counted, and the run ends well.
    The NaN gradients used to reach the optimizer and poison every weight."""
    out = tmp_path / "run"
    run = train(data, out, "nan_loss:5-6")
    assert run.returncode == 0, run.stderr
    assert "update 5: non-finite loss or gradient" in run.stderr and "update skipped" in run.stderr
    log = rows(out)
    assert [int(r["skipped"]) for r in log] == [0] * 4 + [1] + [2] * 7
    assert math.isnan(float(log[4]["loss"])) and math.isnan(float(log[5]["loss"]))
    assert all(math.isfinite(float(r["loss"])) for r in log[6:])
    assert_no_nonfinite_weights(out)
    assert load(out / "model.pt")["train_state"]["skipped"] == 2


def test_an_fp16_overflow_is_skipped_by_the_loss_scaler_and_counted(data, tmp_path, ledger):
    """fp16 training uses a GradScaler, which skips an overflowing step itself; the
    trainer must let it lower its scale, leave the weights alone, and count the skip.
    (On CPU the scaler runs without fp16 kernels; the overflow is injected.)"""
    from aeqa_model.data.batching import ParallelCorpus
    from aeqa_model.train.trainer import Trainer

    torch.set_num_threads(1)
    d = Dictionary.load(data / "dict.txt")
    corpora = [ParallelCorpus(data / f"{split}.src", data / f"{split}.tgt", d) for split in ("train", "valid")]
    spec = dict(SPEC, max_updates=5, save_every=5, validate_every=5)
    trainer = Trainer(MODEL, spec, d, *corpora, tmp_path / "run", seed=3, device="cpu", sizes=SIZES,
                      log=lambda *_: None)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    forward, snapshots, scales = trainer._forward, {}, []

    def overflowing_forward(batch, update):
        snapshots[update] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        terms = forward(batch, update)
        if update == 2:  # update 3 overflows
            terms = {k: type(t)(t.value * float("inf"), t.weight) for k, t in terms.items()}
        return terms

    update = trainer.scaler.update

    def recording_update(*args):
        update(*args)
        scales.append(trainer.scaler.get_scale())

    trainer._forward, trainer.scaler.update = overflowing_forward, recording_update
    assert trainer.train() == 0
    assert scales[:4] == [1024.0, 1024.0, 512.0, 512.0]  # halved by the overflow, not by anything else
    for name, value in snapshots[2].items():
        assert torch.equal(value, snapshots[3][name]), f"the skipped update changed {name}"
    assert any(not torch.equal(value, snapshots[4][name]) for name, value in snapshots[3].items()), \
        "the update after the overflow did not step"
    assert trainer.state.skipped == 1 and trainer.state.nonfinite_streak == 0
    assert [int(r["skipped"]) for r in rows(tmp_path / "run")] == [0, 0, 1, 1, 1]
    assert_no_nonfinite_weights(tmp_path / "run")


def test_an_overflowing_optimizer_step_never_reaches_a_checkpoint(data, tmp_path, ledger):
    """The 8th optimizer step leaves an Inf weight, right before the checkpoint of update 8:
    the checkpoint is refused and the run stops, naming the checkpoint of update 4."""
    out = tmp_path / "run"
    run = train(data, out, "poison_step:8")
    assert run.returncode == DIVERGED, run.stderr
    ledger.message(error_line(run), names=["training diverged at update 8", "NaN or Inf", "was not written",
                                          f"{out / 'checkpoint_last.pt'} (update 4;"])
    assert last_update(out) == 4 and not (out / "checkpoint_8.pt").exists() and not (out / "model.pt").exists()
    assert_no_nonfinite_weights(out)


def _poison(path: Path) -> None:
    payload = load(path)
    weights = state_dict_of(payload)
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    torch.save(payload, path)


def test_a_checkpoint_with_nonfinite_weights_is_not_resumed(data, tmp_path, ledger):
    """A checkpoint_last.pt with NaN weights (as the trainer used to write them): the
    rerun stops with an error naming it, instead of training on from NaN."""
    out = tmp_path / "run"
    short = dict(SPEC, max_updates=8)
    interrupted = train(data, out, spec=short, fault="signal_in_batch:4#1")  # SLURM's SIGTERM in update 4
    assert interrupted.returncode == 75, interrupted.stderr
    _poison(out / "checkpoint_last.pt")
    ledger.protect(out / "checkpoint_last.pt")
    run = train(data, out, spec=short)
    assert run.returncode == BAD_INPUT, run.stderr
    ledger.message(error_line(run), names=[out / "checkpoint_last.pt", "NaN or Inf"])
    assert not (out / "model.pt").exists()


def test_decoding_refuses_a_model_with_nonfinite_weights(reference, tmp_path, ledger):
    """Every hypothesis of an all-NaN model is "." and scores BLEU 0.0, chrF 1.4: a number
    that looks real. load_model (decoding, distillation) refuses the file instead."""
    model = tmp_path / "model.pt"
    shutil.copyfile(reference / "model.pt", model)
    assert load_model(model).arch == MODEL["arch"]
    _poison(model)
    with pytest.raises(InputError) as err:
        load_model(model)
    ledger.message(err.value, names=[model, "NaN or Inf", "rerun training"])


# ------------------------------------------------------ data under a run --
def _finished_run(tmp_path: Path) -> tuple[Path, Path, dict]:
    data = write_tiny_corpus(tmp_path / "bin")
    out = tmp_path / "run"
    spec = dict(SPEC, max_updates=4, average_last=1)
    assert train(data, out, spec=spec).returncode == 0
    return data, out, spec


def _assert_started_over(run, out: Path, old: dict, what: str) -> None:
    assert run.returncode == 0, run.stderr
    assert "resumed from" not in run.stderr
    assert f"written for other data (changed: {what}" in run.stderr, run.stderr
    stale = [p for p in out.glob("stale-*") if p.is_dir()]
    assert len(stale) == 1, stale
    assert sha256(stale[0] / "checkpoint_last.pt") == old["checkpoint_last.pt"], "the old run was not kept"
    assert [int(r["update"]) for r in rows(out)] == [1, 2, 3, 4], "the new data was not trained on"
    assert sha256(out / "model.pt") != old["model.pt"]


def test_changed_training_data_trains_from_scratch_and_keeps_the_old_run(tmp_path, ledger):
    """The corpus is re-prepared (e.g. prepare.max_ratio edited) under a finished run. The
    rerun used to 'resume' at the last update and relabel the old weights as new."""
    data, out, spec = _finished_run(tmp_path)
    old = {name: sha256(out / name) for name in ("checkpoint_last.pt", "model.pt")}
    pairs = make_pairs(200, seed=5)
    write_indexed(data / "train.src", [p[0] for p in pairs])
    write_indexed(data / "train.tgt", [p[1] for p in pairs])
    (out / "model.pt").unlink()
    run = train(data, out, spec=spec)
    _assert_started_over(run, out, old, f"{data / 'train.src'}.{{bin,idx}}")


def test_a_dictionary_size_change_trains_from_scratch_not_size_mismatch(tmp_path, ledger):
    """A new dictionary with more symbols: the rerun used to fail on every try with
    `size mismatch for embed.weight`, naming no file."""
    data, out, spec = _finished_run(tmp_path)
    old = {name: sha256(out / name) for name in ("checkpoint_last.pt", "model.pt")}
    Dictionary(["new1", "new2", *VOCAB]).save(data / "dict.txt")  # every id moves by two
    for split, n, seed in (("train", 200, 0), ("valid", 30, 1)):
        pairs = make_pairs(n, seed)
        write_indexed(data / f"{split}.src", [[t + 2 for t in p[0]] for p in pairs])
        write_indexed(data / f"{split}.tgt", [[t + 2 for t in p[1]] for p in pairs])
    (out / "model.pt").unlink()
    run = train(data, out, spec=spec)
    assert "size mismatch" not in run.stderr
    _assert_started_over(run, out, old, "the dictionary")
    assert len(load(out / "model.pt")["dictionary"]) == len(VOCAB) + 2


# ---------------------------------------------------- loops that never end --
def _run_bounded(data: Path, out: Path, spec: dict, fault: str = ""):
    """Train in a subprocess that may not outlive HANG_TIMEOUT (the old code spun forever)."""
    run = train(data, out, fault, spec=spec, wait=False)
    run.process.join(HANG_TIMEOUT)
    if run.process.is_alive():
        run.process.terminate()  # SIGTERM, as SLURM would send
        run.process.join(10)
        honoured = not run.process.is_alive()
        if not honoured:
            run.process.kill()
            run.process.join(10)
        pytest.fail(f"training still ran after {HANG_TIMEOUT} s; SIGTERM was "
                    f"{'honoured' if honoured else 'ignored'}:\n{run.stderr[-2000:]}")
    return run


def test_an_update_larger_than_an_epoch_is_a_startup_error_not_a_hang(data, tmp_path, ledger):
    """effective_batch_tokens 64000 with max_tokens 800 needs 80 batches per update; the
    tiny corpus makes a handful per epoch."""
    out = tmp_path / "run"
    run = _run_bounded(data, out, dict(SPEC, effective_batch_tokens=64000, max_tokens=800))
    assert run.returncode == BAD_INPUT, run.stderr
    message = ledger.message(error_line(run), names=["one update needs 80 batches", "effective_batch_tokens 64000",
                                                    "max_tokens 800", "200 sentences", f"{data / 'train.tgt'}.idx"])
    assert re.search(r"makes only \d+ batches", message)
    assert not list(out.glob("*.pt")) and not (out / "train_log.csv").exists()


def test_an_empty_training_split_is_a_startup_error_not_a_hang(tmp_path, ledger):
    data = write_tiny_corpus(tmp_path / "bin")
    write_indexed(data / "train.src", [])
    write_indexed(data / "train.tgt", [])
    out = tmp_path / "run"
    run = _run_bounded(data, out, SPEC)
    assert run.returncode == BAD_INPUT, run.stderr
    ledger.message(error_line(run), names=["training split is empty", f"{data / 'train.src'}.idx", "report.json"])
    assert not list(out.glob("*.pt"))


def test_a_signal_between_two_batches_of_an_update_is_honoured_at_once(data, tmp_path, ledger):
    """SIGTERM after the first of three micro-batches of update 3: the update is abandoned,
    the checkpoint is the one of update 2 (exit 75), and the rerun ends bit-identical to
    an uninterrupted run. It used to wait for the update to end (or forever, above)."""
    spec = dict(SPEC, update_freq=3, max_updates=6, save_every=2, validate_every=2, average_last=2)
    reference = tmp_path / "reference"
    assert train(data, reference, spec=spec).returncode == 0
    out = tmp_path / "run"
    run = _run_bounded(data, out, spec, "signal_in_batch:3#1")
    assert run.returncode == 75, run.stderr
    line = [ln for ln in run.stderr.splitlines() if "received signal" in ln][-1]
    ledger.message(line, names=[f"signal {int(signal.SIGTERM)}", "update 3, which was abandoned",
                                out / "checkpoint_last.pt", "at update 2", "rerun"])
    assert last_update(out) == 2
    assert [int(r["update"]) for r in rows(out)] == [1, 2]
    resumed = train(data, out, spec=spec)
    assert resumed.returncode == 0, resumed.stderr
    assert "at update 2" in resumed.stderr
    assert_same_run(reference, out)
