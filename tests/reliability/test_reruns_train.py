"""A rerun of a training job trains (issue 24, item 1).

The trainer used to resume *any* checkpoint_last.pt whose fingerprint matched, a
finished one included, and the fingerprint did not cover the ``model_sizes`` entry, the
SQS file of ``--sqs-init`` or ``max_updates``. So a rerun after a re-made SQS, a dropout
edit, ``--forcerun`` or a lower ``max_updates`` "resumed" at the last update and wrote
the old weights as the new model, exit 0. Each case below finishes a run through the
train cli (model.pt written), makes the edit, reruns as Snakemake would (model.pt
removed first), and checks that every update was trained again, with the old run kept
aside in stale-<hash>/.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.reliability.faultlib import sha256
from tests.reliability.test_kill_resume import KILLED, SIZES, SPEC, data, train  # noqa: F401 (data: fixture)

pytestmark = pytest.mark.fault

SHORT = dict(SPEC, max_updates=4, average_last=1)
AEQA = {"arch": "aeqa_nat", "size": "t", "codebook_size": 16}


def updates_logged(out: Path) -> list[int]:
    with open(out / "train_log.csv", newline="", encoding="utf-8") as handle:
        return [int(row["update"]) for row in csv.DictReader(handle)]


def finished(data: Path, out: Path, **kwargs) -> dict:
    run = train(data, out, **kwargs)
    assert run.returncode == 0, run.stderr
    assert (out / "delivered.json").exists()
    return {name: sha256(out / name) for name in ("checkpoint_last.pt", "model.pt")}


def assert_trained_anew(run, out: Path, old: dict, why: str, updates: int = 4) -> None:
    assert run.returncode == 0, run.stderr
    assert "resumed from" not in run.stderr, run.stderr
    assert why in run.stderr, run.stderr
    assert updates_logged(out) == list(range(1, updates + 1)), "not every update was trained again"
    stale = [p for p in out.glob("stale-*") if p.is_dir()]
    assert len(stale) == 1 and sha256(stale[0] / "checkpoint_last.pt") == old["checkpoint_last.pt"], \
        "the old run was not kept aside"
    assert torch.load(out / "model.pt", weights_only=False)["train_state"]["update"] == updates


def test_forcerun_of_a_finished_run_trains_again(data, tmp_path, ledger):
    """--forcerun train_nat (the README's 'rerun a stage after changing it'), e.g. after a
    code change the fingerprint cannot see: it used to hand back the old weights in 5 s."""
    out = tmp_path / "run"
    old = finished(data, out, spec=SHORT)
    (out / "model.pt").unlink()  # what Snakemake does before it runs the job again
    run = train(data, out, spec=SHORT)
    assert_trained_anew(run, out, old, "belongs to a finished run (update 4 of 4, its model written)")


def test_a_size_edit_that_keeps_the_shapes_trains_again(data, tmp_path, ledger):
    """model_sizes.t.dropout 0.1 -> 0.3: the weights fit the model, the run is another one."""
    out = tmp_path / "run"
    old = finished(data, out, spec=SHORT)
    (out / "model.pt").unlink()
    run = train(data, out, spec=SHORT, sizes={"t": dict(SIZES["t"], dropout=0.3)})
    assert_trained_anew(run, out, old, "written for other model/training settings")
    assert torch.load(out / "model.pt", weights_only=False)["transformer"]["dropout"] == 0.3


def test_a_size_edit_that_changes_the_shapes_starts_a_new_run(data, tmp_path, ledger):
    """model_sizes.t.ffn_dim 64 -> 128 under an *interrupted* run (issue 24, item 5): the
    checkpoint of update 4 no longer fits, and before the size was in the fingerprint
    the rerun stopped with exit 2 asking to move it aside (while the docs said a
    settings change starts from scratch). It is a settings change like any other now."""
    out = tmp_path / "run"
    killed = train(data, out, "kill_at_update:6", spec=SHORT | {"max_updates": 8, "save_every": 4})
    assert killed.returncode == KILLED
    old = sha256(out / "checkpoint_last.pt")
    run = train(data, out, spec=SHORT | {"max_updates": 8, "save_every": 4},
                sizes={"t": dict(SIZES["t"], ffn_dim=128)})
    assert run.returncode == 0, run.stderr
    assert "written for other model/training settings" in run.stderr and "resumed from" not in run.stderr
    assert updates_logged(out) == list(range(1, 9))
    stale = [p for p in out.glob("stale-*") if p.is_dir()]
    assert len(stale) == 1 and sha256(stale[0] / "checkpoint_last.pt") == old
    assert torch.load(out / "model.pt", weights_only=False)["transformer"]["ffn_dim"] == 128


def test_a_lower_max_updates_trains_a_shorter_run(data, tmp_path, ledger):
    out = tmp_path / "run"
    old = finished(data, out, spec=SHORT)
    (out / "model.pt").unlink()
    run = train(data, out, spec=dict(SHORT, max_updates=2))
    assert_trained_anew(run, out, old, "written for other model/training settings", updates=2)


def _sqs(path: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    torch.save({"codebook": torch.randn(AEQA["codebook_size"], SIZES["t"]["embed_dim"], generator=generator)}, path)
    return path


def test_a_remade_sqs_trains_again(data, tmp_path, ledger):
    """pretrain_sqs reran (e.g. pretrain_sqs.alpha edited) and wrote another sqs.pt; the
    AEQA-NAT job that reads it must start from the new codebook."""
    out, sqs = tmp_path / "run", tmp_path / "sqs.pt"
    old = finished(data, out, model=AEQA, spec=SHORT, extra=("--sqs-init", str(_sqs(sqs, 1))))
    (out / "model.pt").unlink()
    run = train(data, out, model=AEQA, spec=SHORT, extra=("--sqs-init", str(_sqs(sqs, 2))))
    assert_trained_anew(run, out, old, "written for other model/training settings")


@pytest.mark.parametrize("damage", ["nan", "truncated"])
def test_a_bad_sqs_is_named_before_training(data, tmp_path, ledger, damage):
    """A diverged pre-alignment (all-NaN codebook) or a truncated sqs.pt: one line naming
    the file and the stage to rerun, not AEQA-NAT's own divergence or `OSError: [Errno 22]`."""
    sqs = _sqs(tmp_path / "sqs.pt", 1)
    if damage == "nan":
        torch.save({"codebook": torch.full((AEQA["codebook_size"], SIZES["t"]["embed_dim"]), float("nan"))}, sqs)
    else:
        sqs.write_bytes(sqs.read_bytes()[:100])
    ledger.protect(sqs)
    run = train(data, tmp_path / "run", model=AEQA, spec=SHORT, extra=("--sqs-init", str(sqs)))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "Traceback" not in run.stderr, run.stderr
    ledger.message(errors[-1], names=[sqs, "pretrain_sqs"])
    assert not (tmp_path / "run" / "model.pt").exists()
