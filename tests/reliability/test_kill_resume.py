"""Kill the trainer (SIGKILL mid-update, SIGKILL mid-checkpoint-write, SLURM's USR1) and rerun:
the rerun resumes from the last complete checkpoint and ends bit-identical to an
uninterrupted run; no checkpoint is ever half written under its real name."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.reliability import train_driver
from tests.reliability.faultlib import Run, forkserver, write_tiny_corpus

pytestmark = pytest.mark.fault

MODEL = {"arch": "at", "size": "t"}
SIZES = {"t": {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1,
               "dropout": 0.1}}
# 12 updates, a checkpoint every 4, the final model the average of the last 2 checkpoints:
# every kind of checkpoint file (last, numbered, best, model.pt) is written on the way.
SPEC = {"max_updates": 12, "max_tokens": 120, "update_freq": 1, "lr": 1e-3, "warmup_updates": 3,
        "validate_every": 4, "validate_bleu_sentences": 0, "save_every": 4, "keep_last": 2,
        "average_last": 2, "final": "average", "weight_decay": 0.01, "clip_norm": 1.0, "tensorboard": False}
KILLED = -signal.SIGKILL
PRELOAD = ["torch", "torch._dynamo", "torch.optim", "aeqa_model.train.cli", "aeqa_model.models.at",
           "tests.reliability.train_driver"]


def train(data: Path, out: Path, fault: str = "", model=MODEL, spec=SPEC, wait=True, sizes=SIZES,
          extra: tuple = ()) -> Run:
    argv = ["--model-spec", json.dumps(model), "--train-spec", json.dumps(spec), "--sizes", json.dumps(sizes),
            "--dict", str(data / "dict.txt"), "--train-src", str(data / "train.src"),
            "--train-tgt", str(data / "train.tgt"), "--valid-src", str(data / "valid.src"),
            "--valid-tgt", str(data / "valid.tgt"), "--out-dir", str(out), "--output", str(out / "model.pt"),
            "--seed", "3", "--device", "cpu", "--threads", "1", *extra]
    out.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.{len(list(out.parent.glob(out.name + '.*.log')))}.log"
    process = forkserver(PRELOAD).Process(target=train_driver.run, args=(argv, fault, str(log)))
    process.start()
    if wait:
        process.join(300)
        assert process.exitcode is not None, "the training process hung"
    return Run(process, log)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("bin"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    proc = train(data, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Final model, best checkpoint and training log are bit-identical to the reference."""
    a, b = load(reference / "model.pt"), load(resumed / "model.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), f"model.pt differs in {name}"
    assert a["train_state"] == b["train_state"]
    assert [Path(p).name for p in a.get("averaged_checkpoints", [])] == \
        [Path(p).name for p in b.get("averaged_checkpoints", [])]
    best_a, best_b = load(reference / "checkpoint_best.pt"), load(resumed / "checkpoint_best.pt")
    for name in best_a["model"]["state_dict"]:
        assert torch.equal(best_a["model"]["state_dict"][name], best_b["model"]["state_dict"][name])
    assert (reference / "train_log.csv").read_text() == (resumed / "train_log.csv").read_text()
    assert sorted(p.name for p in reference.glob("*.pt")) == sorted(p.name for p in resumed.glob("*.pt"))
    assert not list(resumed.glob(".*.tmp")), "a temporary checkpoint file was left behind"


def assert_no_half_written_checkpoint(out: Path) -> None:
    """Every file under a checkpoint's real name loads; a torn write is only ever a hidden temp file."""
    for path in out.glob("*.pt"):
        load(path)
    assert not (out / "model.pt").exists(), "the job's output exists although the job was killed"


def last_update(out: Path) -> int:
    return load(out / "checkpoint_last.pt")["state"]["update"]


def test_sigkill_between_checkpoints_resumes_bit_identical(data, reference, tmp_path, ledger):
    out = tmp_path / "run"
    killed = train(data, out, "kill_at_update:6")
    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    assert_no_half_written_checkpoint(out)
    assert last_update(out) == 4
    resumed = train(data, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "at update 4" in resumed.stderr
    assert_same_run(reference, out)


def test_sigkill_twice_before_and_after_first_checkpoint(data, reference, tmp_path, ledger):
    out = tmp_path / "run"
    first = train(data, out, "kill_at_update:2")  # no checkpoint yet: the rerun starts over
    assert first.returncode == KILLED
    assert not (out / "checkpoint_last.pt").exists() and (out / "train_log.csv").exists()
    second = train(data, out, "kill_at_update:9")
    assert second.returncode == KILLED
    assert "resumed from" not in second.stderr and last_update(out) == 8
    third = train(data, out)
    assert third.returncode == 0, third.stderr
    assert_same_run(reference, out)


@pytest.mark.parametrize("target", ["checkpoint_last.pt#2", "checkpoint_8.pt", "checkpoint_best.pt#2"])
def test_sigkill_during_checkpoint_write(data, reference, tmp_path, ledger, target):
    out = tmp_path / "run"
    killed = train(data, out, f"kill_in_write:{target}")
    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    torn = list(out.glob(".*.tmp"))
    assert len(torn) == 1 and torn[0].name.startswith(f".{target.split('#')[0]}."), torn
    assert_no_half_written_checkpoint(out)
    assert last_update(out) in (4, 8)
    resumed = train(data, out)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, out)


def test_sigkill_while_writing_the_final_model(data, reference, tmp_path, ledger):
    out = tmp_path / "run"
    killed = train(data, out, "kill_in_write:model.pt")
    assert killed.returncode == KILLED
    assert_no_half_written_checkpoint(out)
    assert last_update(out) == SPEC["max_updates"]
    ledger.protect(out / "checkpoint_best.pt", out / "checkpoint_8.pt", out / "checkpoint_12.pt")
    resumed = train(data, out)  # nothing left to train: rebuilds model.pt from the checkpoints
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_slurm_time_limit_signal_checkpoints_and_resumes(data, reference, tmp_path, ledger, signum):
    """SLURM's warning before the time limit (--signal=TERM@... as the rules ask, or USR1),
    sent from outside at an arbitrary moment: checkpoint, exit 75, then resume."""
    out = tmp_path / "run"
    run = train(data, out, "slow:0.2", wait=False)
    log = out / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and run.process.is_alive():
        if log.exists() and len(log.read_text().splitlines()) >= 3:  # header + 2 updates
            break
        time.sleep(0.02)
    os.kill(run.process.pid, signum)
    run.process.join(120)
    output = run.stderr
    assert run.returncode == 75, output
    assert "exiting with 75" in output
    stopped = last_update(out)
    assert 2 <= stopped < SPEC["max_updates"]
    ledger.message(output.strip().splitlines()[-1], names=[out / "checkpoint_last.pt", "rerun"])
    resumed = train(data, out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at update {stopped}" in resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_damaged_checkpoint_is_named_not_silently_restarted(data, tmp_path, ledger, damage, capsys):
    """checkpoint_last.pt cut by a bad copy, or some other file under its name: the job
    stops with an error naming the file and the way out; it neither crashes in torch
    nor starts over as if nothing had been trained."""
    from aeqa_model.train import cli

    out = tmp_path / "run"
    out.mkdir()
    good = tmp_path / "good.pt"
    torch.save({"model": {}, "optimizer": {}, "scaler": {}, "state": {}, "rng": {}}, good)
    last = out / "checkpoint_last.pt"
    if damage == "truncated":
        last.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, last)
    ledger.protect(last)
    argv = ["--model-spec", json.dumps(MODEL), "--train-spec", json.dumps(SPEC), "--sizes", json.dumps(SIZES),
            "--dict", str(data / "dict.txt"), "--train-src", str(data / "train.src"),
            "--train-tgt", str(data / "train.tgt"), "--valid-src", str(data / "valid.src"),
            "--valid-tgt", str(data / "valid.tgt"), "--out-dir", str(out), "--output", str(out / "model.pt"),
            "--device", "cpu"]
    assert cli.main(argv) == 2
    ledger.message(capsys.readouterr().err, names=[last])
    assert not (out / "model.pt").exists() and not (out / "train_log.csv").exists()
