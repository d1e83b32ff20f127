"""Training engine: schedule, checkpoints, exact resume, signal handling, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aeqa_model.train.schedule import inverse_sqrt_lr
from aeqa_model.train.trainer import RERUN_EXIT_CODE, Trainer
from aeqa_model.models.build import load_model

MODEL = {"arch": "at", "size": "t", "embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1,
         "decoder_layers": 1}
SIZES = {"t": {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.1}}
SPEC = {"max_updates": 8, "max_tokens": 120, "update_freq": 2, "lr": 1e-3, "warmup_updates": 3,
        "validate_bleu_sentences": 10,
        "validate_every": 4, "save_every": 2, "keep_last": 2, "weight_decay": 0.01, "clip_norm": 1.0}


def test_inverse_sqrt_schedule():
    assert inverse_sqrt_lr(0, 5e-4, 4000, 1e-7) == pytest.approx(1e-7 + (5e-4 - 1e-7) / 4000)
    assert inverse_sqrt_lr(3999, 5e-4, 4000) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(15999, 5e-4, 4000) == pytest.approx(5e-4 * 0.5)


def test_token_batches_respect_budget_and_cover_corpus(train_valid):
    train, _ = train_valid
    batches = train.token_batches(60, shuffle=True, seed=3, epoch=1)
    seen = np.sort(np.concatenate(batches))
    assert np.array_equal(seen, np.arange(len(train)))
    longest = np.maximum(train.src.sizes, train.tgt.sizes) + 2
    for b in batches:
        assert len(b) == 1 or len(b) * longest[b].max() <= 60
    again = train.token_batches(60, shuffle=True, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def _trainer(train_valid, dictionary, out, spec=SPEC):
    train, valid = train_valid
    return Trainer(MODEL, spec, dictionary, train, valid, out, seed=7, device="cpu", sizes=SIZES, log=lambda *_: None)


def interrupt_at(trainer: Trainer, update: int) -> Trainer:
    """Make ``trainer`` receive SLURM's SIGUSR1 right after update ``update``: it then
    checkpoints and returns RERUN_EXIT_CODE, an *interrupted* run that may be resumed."""
    original_step = trainer.optimizer.step

    def step_then_signal(*args, **kwargs):
        result = original_step(*args, **kwargs)
        if trainer.state.update == update - 1:  # the counter is incremented after step()
            trainer.signals.received = 10
        return result

    trainer.optimizer.step = step_then_signal
    return trainer


def _interrupted_run(train_valid, dictionary, out, spec, at=2):
    assert interrupt_at(_trainer(train_valid, dictionary, out, spec), at).train() == RERUN_EXIT_CODE


def assert_resume_is_bit_identical(make_trainer, tmp_path, max_updates: int) -> Trainer:
    """A run interrupted after update 3 and resumed ends with the weights of a run that
    went straight through; ``make_trainer(out_dir)`` builds either. Returns the
    interrupted trainer (its checkpoint is in ``tmp_path / "resumed"``)."""
    full = make_trainer(tmp_path / "full")
    assert full.train() == 0
    interrupted = interrupt_at(make_trainer(tmp_path / "resumed"), 3)
    assert interrupted.train() == RERUN_EXIT_CODE
    assert interrupted.state.update == 3
    torch.manual_seed(12345)  # a fresh process has other RNG state: resume must restore it
    resumed = make_trainer(tmp_path / "resumed")
    assert resumed.train() == 0
    assert resumed.state.update == max_updates
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    return interrupted


def test_resume_is_bit_identical(train_valid, dictionary, tmp_path):
    assert_resume_is_bit_identical(lambda out: _trainer(train_valid, dictionary, out), tmp_path, SPEC["max_updates"])


def test_checkpoints_rotate_and_final_model_loads(train_valid, dictionary, tmp_path):
    trainer = _trainer(train_valid, dictionary, tmp_path / "run")
    trainer.train()
    numbered = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_[0-9]*.pt"))
    assert numbered == ["checkpoint_6.pt", "checkpoint_8.pt"]
    assert not list((tmp_path / "run").glob("*.tmp"))
    payload = trainer.final_model("average", 2)
    assert payload["averaged_checkpoints"][-1] == "final"
    torch.save(payload, tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt")
    assert model.arch == "at"
    import csv

    with open(tmp_path / "run" / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SPEC["max_updates"] and [int(r["update"]) for r in rows] == list(range(1, 9))
    assert rows[3]["valid_loss"] and not rows[2]["valid_loss"]          # validate_every = 4
    assert float(rows[-1]["valid_bleu"]) >= 0.0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_training_reduces_loss(train_valid, dictionary, tmp_path):
    spec = dict(SPEC, max_updates=60, update_freq=1, validate_every=60, save_every=60, lr=3e-3, warmup_updates=5)
    trainer = _trainer(train_valid, dictionary, tmp_path / "run", spec)
    before = trainer.validate()
    trainer.train()
    assert trainer.validate() < before - 0.5


def test_update_freq_keeps_the_effective_batch_whatever_the_gpu_count(train_valid, dictionary, tmp_path):
    trainer = _trainer(train_valid, dictionary, tmp_path / "run",
                       dict(SPEC, max_tokens=4096, effective_batch_tokens=64000))
    assert trainer.update_freq() == 16
    trainer.world = 8
    assert trainer.update_freq() == 2
    trainer.world = 3
    assert trainer.update_freq() == 6


def test_logged_loss_is_the_weighted_objective(train_valid, dictionary, tmp_path):
    import csv

    train, valid = train_valid
    model = {**MODEL, "arch": "vanilla_nat"}
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=4)
    Trainer(model, spec, dictionary, train, valid, tmp_path / "run", seed=7, device="cpu", sizes=SIZES,
            log=lambda *_: None).train()
    with open(tmp_path / "run" / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # L = L_NAT + delta L_LEN with delta = 0.1 (Eq. 13), not the plain sum of the terms
        assert float(row["loss"]) == pytest.approx(float(row["loss_nat"]) + 0.1 * float(row["loss_length"]), rel=1e-5)


def test_changed_settings_train_from_scratch_and_keep_the_old_run(train_valid, dictionary, tmp_path):
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=2)
    _interrupted_run(train_valid, dictionary, tmp_path / "run", spec)
    # The interrupted run resumes under the same settings (and when only logging changes) ...
    again = _trainer(train_valid, dictionary, tmp_path / "run", dict(spec, validate_every=1))
    assert again.try_resume() and again.state.update == 2
    # ... a changed learning rate (a config edit, then --forcerun) starts over.
    changed = _trainer(train_valid, dictionary, tmp_path / "run", dict(spec, lr=2e-3))
    assert not changed.try_resume() and changed.state.update == 0
    stale = list((tmp_path / "run").glob("stale-*"))
    assert len(stale) == 1 and (stale[0] / "checkpoint_last.pt").exists() and (stale[0] / "train_log.csv").exists()
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_a_finished_run_is_never_resumed(train_valid, dictionary, tmp_path):
    """A rerun of a finished job (--forcerun, or an edit of something the fingerprint does
    not see) trains anew: it used to "resume" at max_updates and hand back the old weights."""
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=2)
    first = _trainer(train_valid, dictionary, tmp_path / "run", spec)
    assert first.train() == 0
    first.checkpoints.mark_delivered(tmp_path / "run" / "model.pt", 4)  # as the cli does after writing it
    messages = []
    rerun = Trainer(MODEL, spec, dictionary, *train_valid, tmp_path / "run", seed=7, device="cpu", sizes=SIZES,
                    log=messages.append)
    assert rerun.train() == 0
    assert not any("resumed from" in m for m in messages), messages
    assert any("belongs to a finished run (update 4 of 4, its model written)" in m for m in messages), messages
    import csv

    with open(tmp_path / "run" / "train_log.csv", newline="") as handle:
        assert [int(r["update"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]  # all four trained again
    assert len(list((tmp_path / "run").glob("stale-*/checkpoint_last.pt"))) == 1


def test_a_finished_run_killed_before_its_model_was_written_is_completed_not_retrained(train_valid, dictionary,
                                                                                       tmp_path):
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=2)
    assert _trainer(train_valid, dictionary, tmp_path / "run", spec).train() == 0  # no mark_delivered
    again = _trainer(train_valid, dictionary, tmp_path / "run", spec)
    assert again.try_resume() and again.state.update == 4


def test_a_finished_checkpoint_without_the_flag_counts_as_finished(train_valid, dictionary, tmp_path):
    """Checkpoints of an older version carry no ``finished`` flag: reaching their own
    max_updates is what marks them finished."""
    spec = dict(SPEC, max_updates=2, update_freq=1, validate_every=2, save_every=2)
    assert _trainer(train_valid, dictionary, tmp_path / "run", spec).train() == 0
    last = tmp_path / "run" / "checkpoint_last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["state"]["finished"]
    torch.save(ckpt, last)
    assert not _trainer(train_valid, dictionary, tmp_path / "run", spec).try_resume()


@pytest.mark.parametrize("edit", ["lower", "raise"])
def test_another_max_updates_is_another_run(train_valid, dictionary, tmp_path, edit):
    """lambda and the glancing ratio anneal over max_updates: an interrupted run continued
    with another max_updates would not be the run of either length."""
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=2)
    _interrupted_run(train_valid, dictionary, tmp_path / "run", spec, at=3)
    other = dict(spec, max_updates=2 if edit == "lower" else 6)
    trainer = _trainer(train_valid, dictionary, tmp_path / "run", other)
    assert not trainer.try_resume() and trainer.state.update == 0


def test_a_size_edit_that_keeps_the_shapes_is_another_run(train_valid, dictionary, tmp_path):
    """model_sizes.t.dropout changed: the weights fit, the run is not the same."""
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=4, save_every=2)
    _interrupted_run(train_valid, dictionary, tmp_path / "run", spec)
    train, valid = train_valid
    sizes = {"t": dict(SIZES["t"], dropout=0.3)}
    trainer = Trainer(MODEL, spec, dictionary, train, valid, tmp_path / "run", seed=7, device="cpu", sizes=sizes,
                      log=lambda *_: None)
    assert not trainer.try_resume() and trainer.state.update == 0


def test_only_rank_zero_logs_progress_under_torchrun():
    import subprocess
    import sys

    code = ("import logging; from aeqa_model.train.cli import configure_logging; import sys; "
            "configure_logging(int(sys.argv[1])); logging.info('progress'); logging.warning('trouble')")
    out = {rank: subprocess.run([sys.executable, "-c", code, str(rank)], capture_output=True, text=True).stderr
           for rank in (0, 1)}
    assert "progress" in out[0] and "trouble" in out[0]
    assert "progress" not in out[1] and "[rank 1] trouble" in out[1]


def test_a_checkpoint_from_before_data_fingerprints_is_checked_by_its_dictionary(train_valid, dictionary, tmp_path):
    """Checkpoints written before they carried a data fingerprint still resume (a run in
    progress survives the upgrade), unless their model payload names another dictionary."""
    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=2, save_every=2)
    _interrupted_run(train_valid, dictionary, tmp_path / "run", spec)
    last = tmp_path / "run" / "checkpoint_last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["data"]
    torch.save(ckpt, last)
    assert _trainer(train_valid, dictionary, tmp_path / "run", spec).try_resume()
    from aeqa_model.data.dictionary import Dictionary

    other = Dictionary(list(dictionary.symbols[6:]) + ["extra"])
    train, valid = train_valid
    trainer = Trainer(MODEL, spec, other, train, valid, tmp_path / "run", seed=7, device="cpu",
                      sizes=SIZES, log=lambda *_: None)
    assert not trainer.try_resume()  # not `size mismatch for embed.weight`
    assert list((tmp_path / "run").glob("stale-*/checkpoint_last.pt")) and not last.exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_named(train_valid, dictionary, tmp_path):
    from aeqa_model.io import InputError

    spec = dict(SPEC, max_updates=4, update_freq=1, validate_every=2, save_every=2)
    _interrupted_run(train_valid, dictionary, tmp_path / "run", spec)
    last = tmp_path / "run" / "checkpoint_last.pt"
    ckpt = torch.load(last, weights_only=False)
    ckpt["model"]["state_dict"].pop(next(iter(ckpt["model"]["state_dict"])))  # e.g. a model class changed
    torch.save(ckpt, last)
    with pytest.raises(InputError, match=str(last)):
        _trainer(train_valid, dictionary, tmp_path / "run", spec).try_resume()
