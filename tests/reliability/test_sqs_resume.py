"""Kill pretrain_sqs (SIGKILL mid-update, SIGKILL mid-checkpoint-write, SLURM's SIGTERM) in
either stage and rerun: the rerun resumes from the last checkpoint and ends bit-identical
to an uninterrupted run. A damaged checkpoint, or a missing or damaged encoder, is an
error naming the file."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.reliability import sqs_driver
from tests.reliability.faultlib import Run, forkserver, write_text_corpus

pytestmark = pytest.mark.fault

# 12 updates per stage, a checkpoint every 4.
SPEC = {"encoder": "embedded", "mbart_path": None,
        "embedded": {"embed_dim": 16, "ffn_dim": 32, "heads": 2, "layers": 1, "denoise_updates": 12,
                     "sentencepiece_vocab": 100, "batch_size": 4},
        "align_updates": 12, "batch_size": 4, "alpha": 0.5, "ema_decay": 0.99, "lr": 1e-3, "save_every": 4}
KILLED = -signal.SIGKILL
PRELOAD = ["torch", "torch.optim", "sentencepiece", "aeqa_model.pretrain_sqs.cli", "tests.reliability.sqs_driver"]


def pretrain(corpus: Path, out: Path, stage: str, fault: str = "", encoder: Path | None = None, spec=SPEC) -> Run:
    """One stage into ``out``: the encoder stage writes out/encoder.pt, the align stage
    out/K32_D8/sqs.pt from ``encoder``."""
    out.mkdir(parents=True, exist_ok=True)
    encoder = encoder or out / "encoder.pt"
    argv = ["--stage", stage, "--spec", json.dumps(spec), "--src-text", str(corpus / "train.en"),
            "--tgt-text", str(corpus / "train.de"), "--encoder-out", str(encoder), "--seed", "1", "--threads", "1",
            "--device", "cpu"]
    if stage == "encoder":
        argv += ["--codebook-size", "0", "--dim", "0", "--out", "/dev/null", "--stats", str(out / "encoder_stats.json")]
    else:
        argv += ["--codebook-size", "32", "--dim", "8", "--out", str(out / "K32_D8" / "sqs.pt"),
                 "--stats", str(out / "K32_D8" / "stats.json")]
    log = out / f"{stage}.{len(list(out.glob(stage + '.*.log')))}.log"
    process = forkserver(PRELOAD).Process(target=sqs_driver.run, args=(argv, fault, str(log)))
    process.start()
    process.join(300)
    assert process.exitcode is not None, "the pretrain_sqs process hung"
    return Run(process, log)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("sqs_corpus"), 150)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """Uninterrupted runs of both stages, which every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("sqs_reference")
    for stage in ("encoder", "align"):
        done = pretrain(corpus, out, stage)
        assert done.returncode == 0, done.stderr
    return out


def load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same(reference: Path, out: Path, stage: str) -> None:
    """The stage's outputs and CSV log are bit-identical to the reference; its checkpoint
    and any temporary file are gone."""
    if stage == "encoder":
        a, b = load(reference / "encoder.pt"), load(out / "encoder.pt")
        assert a.keys() == b.keys()
        for name in a["state_dict"]:
            assert torch.equal(a["state_dict"][name], b["state_dict"][name]), f"encoder.pt differs in {name}"
        assert a["denoise_loss"] == b["denoise_loss"] and a["vocab_size"] == b["vocab_size"]
        files = ["encoder_stats.json", "encoder_log.csv", "encoder.spm.model"]
        checkpoint = out / "encoder_checkpoint.pt"
    else:
        files = ["K32_D8/sqs.pt", "K32_D8/stats.json", "K32_D8/sqs_log.csv"]
        checkpoint = out / "K32_D8" / "sqs_checkpoint.pt"
    for name in files:
        assert (reference / name).read_bytes() == (out / name).read_bytes(), f"{name} differs"
    assert not checkpoint.exists(), "the checkpoint was not removed after the outputs were written"
    assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"


def checkpoint_of(out: Path, stage: str) -> Path:
    return out / "encoder_checkpoint.pt" if stage == "encoder" else out / "K32_D8" / "sqs_checkpoint.pt"


def prepared(reference: Path, tmp_path: Path, stage: str) -> tuple[Path, Path | None]:
    """A fresh output folder; for the align stage, the reference's encoder."""
    out = tmp_path / "run"
    out.mkdir()
    return out, (reference / "encoder.pt" if stage == "align" else None)


@pytest.mark.parametrize("stage", ["encoder", "align"])
def test_sigkill_between_checkpoints_resumes_bit_identical(corpus, reference, tmp_path, ledger, stage):
    out, encoder = prepared(reference, tmp_path, stage)
    killed = pretrain(corpus, out, stage, "kill_at_update:6", encoder)
    assert killed.returncode == KILLED, killed.stderr
    assert load(checkpoint_of(out, stage))["update"] == 4
    resumed = pretrain(corpus, out, stage, encoder=encoder)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "at update 4" in resumed.stderr
    assert_same(reference, out, stage)


@pytest.mark.parametrize("stage", ["encoder", "align"])
def test_sigterm_checkpoints_exits_75_and_resumes_bit_identical(corpus, reference, tmp_path, ledger, stage):
    """SLURM's warning before the time limit: checkpoint at the next update boundary
    (update 5, between two periodic checkpoints), exit 75, then resume."""
    out, encoder = prepared(reference, tmp_path, stage)
    stopped = pretrain(corpus, out, stage, "term_at_update:5", encoder)
    assert stopped.returncode == 75, stopped.stderr
    checkpoint = checkpoint_of(out, stage)
    assert load(checkpoint)["update"] == 5
    ledger.message(stopped.stderr.strip().splitlines()[-1], names=[checkpoint, "rerun", "75"])
    resumed = pretrain(corpus, out, stage, encoder=encoder)
    assert resumed.returncode == 0, resumed.stderr
    assert "at update 5" in resumed.stderr
    assert_same(reference, out, stage)


@pytest.mark.parametrize("stage", ["encoder", "align"])
def test_sigkill_during_checkpoint_write_resumes_from_the_previous_one(corpus, reference, tmp_path, ledger, stage):
    out, encoder = prepared(reference, tmp_path, stage)
    killed = pretrain(corpus, out, stage, "kill_in_write:2", encoder)   # the second checkpoint: update 8
    assert killed.returncode == KILLED
    checkpoint = checkpoint_of(out, stage)
    torn = list(checkpoint.parent.glob(f".{checkpoint.name}.*.tmp"))
    assert len(torn) == 1, torn
    assert load(checkpoint)["update"] == 4                              # the first one is intact
    resumed = pretrain(corpus, out, stage, encoder=encoder)
    assert resumed.returncode == 0, resumed.stderr
    assert "at update 4" in resumed.stderr
    assert_same(reference, out, stage)


@pytest.mark.parametrize("stage", ["encoder", "align"])
@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_damaged_checkpoint_is_named_not_silently_restarted(corpus, reference, tmp_path, ledger, stage, damage):
    out, encoder = prepared(reference, tmp_path, stage)
    killed = pretrain(corpus, out, stage, "kill_at_update:6", encoder)
    assert killed.returncode == KILLED
    checkpoint = checkpoint_of(out, stage)
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    ledger.protect(checkpoint)
    failed = pretrain(corpus, out, stage, encoder=encoder)
    assert failed.returncode == 2, failed.stderr
    ledger.message(failed.stderr, names=[checkpoint, "delete it"])
    outputs = ["encoder.pt", "encoder_stats.json"] if stage == "encoder" else ["K32_D8/sqs.pt", "K32_D8/stats.json"]
    assert not any((out / name).exists() for name in outputs)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_damaged_encoder_is_named(corpus, reference, tmp_path, ledger, damage):
    encoder = tmp_path / "encoder.pt"
    if damage == "truncated":
        data = (reference / "encoder.pt").read_bytes()
        encoder.write_bytes(data[: len(data) // 2])
        ledger.protect(encoder)
    failed = pretrain(corpus, tmp_path / "run", "align", encoder=encoder)
    assert failed.returncode == 2, failed.stderr
    ledger.message(failed.stderr, names=[encoder, "pretrain_sqs_encoder"])
    assert not (tmp_path / "run" / "K32_D8" / "sqs.pt").exists()


def test_checkpoint_of_other_settings_is_set_aside_and_the_stage_starts_over(corpus, reference, tmp_path, ledger):
    """A config edit (here the learning rate) between the kill and the rerun: the old
    checkpoint is kept aside, not resumed, and the stage runs from scratch."""
    out, encoder = prepared(reference, tmp_path, "align")
    killed = pretrain(corpus, out, "align", "kill_at_update:6", encoder)
    assert killed.returncode == KILLED
    edited = {**SPEC, "lr": 2e-3}
    rerun = pretrain(corpus, out, "align", encoder=encoder, spec=edited)
    assert rerun.returncode == 0, rerun.stderr
    assert "starting this stage over" in rerun.stderr and "resumed from" not in rerun.stderr
    assert len(list((out / "K32_D8").glob("sqs_checkpoint.pt.stale-*"))) == 1
    fresh = tmp_path / "fresh"
    shutil.copytree(out, fresh, ignore=shutil.ignore_patterns("*.stale-*", "*.log", "K32_D8"))
    again = pretrain(corpus, fresh, "align", encoder=encoder, spec=edited)
    assert again.returncode == 0
    assert (out / "K32_D8" / "sqs.pt").read_bytes() == (fresh / "K32_D8" / "sqs.pt").read_bytes()
