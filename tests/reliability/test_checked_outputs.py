"""Every output is checked before it is used (issue 24, item 2).

* A checkpoint or model with a damaged region (bytes zeroed on disk, the size
  unchanged) used to be resumed, averaged or decoded without a word: torch.save stores
  a CRC32 of every record, but torch.load never compares them. Now every reader
  (resume, the final average, load_model, the --sqs-init codebook, pretrain_sqs's
  checkpoint and encoder.pt) checks them first and names the file and the way out.
* Test data binarized with another dictionary than the model's passed the id-range
  check (a dictionary of the same size in another order) and decoded to hypotheses from
  mismatched ids, exit 0. The ``.sum`` file of binarized data now records the
  dictionary, and reading it with another one is refused.
* A diverged pre-alignment (``pretrain_sqs.lr`` 1e6) wrote an all-NaN encoder.pt or
  sqs.pt with exit 0; now each stage stops with exit 1 and one line naming the file
  it did not write and the settings.
"""
from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import binarize_file
from aeqa_model.decode.cli import main as decode_main
from tests.conftest import VOCAB, make_pairs
from tests.reliability.test_kill_resume import KILLED, SPEC, data, train  # noqa: F401 (data: fixture)
from tests.reliability.test_reruns_train import AEQA, SHORT, _sqs
from tests.reliability.test_sqs_resume import SPEC as SQS_SPEC
from tests.reliability.test_sqs_resume import checkpoint_of, corpus, pretrain, reference  # noqa: F401 (fixtures)

pytestmark = pytest.mark.fault


def zero_region(path: Path, size: int = 256) -> None:
    """Zero ``size`` bytes in the middle of the largest tensor of ``path`` (bit rot of a
    disk block; the size is unchanged and every zip header intact, so torch.load reads
    the file as it always did: the case that passed silently)."""
    with zipfile.ZipFile(path) as archive:
        tensors = [info for info in archive.infolist() if "/data/" in info.filename]  # not data.pkl
        record = max(tensors, key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    size = min(size, record.file_size // 2)
    data[start:start + size] = bytes(size)
    path.write_bytes(bytes(data))


def error_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines and "Traceback" not in stderr, stderr
    return lines


# ------------------------------------------------------------ checksums --
def test_a_zeroed_region_of_checkpoint_last_is_named_not_resumed(data, tmp_path, ledger):
    out = tmp_path / "run"
    killed = train(data, out, "kill_at_update:6")
    assert killed.returncode == KILLED
    zero_region(out / "checkpoint_last.pt")
    ledger.protect(out / "checkpoint_last.pt", out / "checkpoint_4.pt")
    rerun = train(data, out)
    assert rerun.returncode == 2, rerun.stderr
    assert "resumed from" not in rerun.stderr
    ledger.message(error_lines(rerun.stderr)[-1], names=[out / "checkpoint_last.pt", "damaged on disk", "delete it"])
    assert not (out / "model.pt").exists()


def test_a_zeroed_region_of_a_numbered_checkpoint_is_named_not_averaged(data, tmp_path, ledger):
    """checkpoint_8.pt goes into the final average (average_last 2): its damage used to
    end up in model.pt."""
    out = tmp_path / "run"
    killed = train(data, out, "kill_at_update:10")
    assert killed.returncode == KILLED
    zero_region(out / "checkpoint_8.pt")
    ledger.protect(out / "checkpoint_8.pt")
    rerun = train(data, out)
    assert rerun.returncode == 2, rerun.stderr
    ledger.message(error_lines(rerun.stderr)[-1], names=[out / "checkpoint_8.pt", "damaged on disk"])
    assert not (out / "model.pt").exists()


def decode(model: Path, data: Path, out: Path, dictionary: Path | None = None) -> int:
    return decode_main(["--model", str(model), "--dict", str(dictionary or data / "dict.txt"),
                        "--src-prefix", str(data / "valid.src"), "--tgt-prefix", str(data / "valid.tgt"),
                        "--decoding", json.dumps({"strategy": "beam", "beam": 2}), "--tgt-lang", "de",
                        "--out-tok", str(out), "--device", "cpu", "--threads", "1"])


@pytest.fixture(scope="module")
def model_pt(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    run = train(data, out, spec=dict(SPEC, max_updates=4, average_last=1))
    assert run.returncode == 0, run.stderr
    return out / "model.pt"


def test_a_zeroed_region_of_model_pt_is_refused_by_decode(data, model_pt, tmp_path, ledger, capsys):
    damaged = tmp_path / "model.pt"
    shutil.copy(model_pt, damaged)
    zero_region(damaged)
    ledger.protect(damaged)
    assert decode(damaged, data, tmp_path / "hyp.tok") == 2
    ledger.message(error_lines(capsys.readouterr().err)[-1], names=[damaged, "damaged on disk", "rerun"])
    assert not (tmp_path / "hyp.tok").exists()


def test_a_zeroed_region_of_sqs_pt_is_named_before_training(data, tmp_path, ledger):
    sqs = _sqs(tmp_path / "sqs.pt", 1)
    zero_region(sqs, size=64)
    ledger.protect(sqs)
    run = train(data, tmp_path / "run", model=AEQA, spec=SHORT, extra=("--sqs-init", str(sqs)))
    assert run.returncode == 2, run.stderr
    ledger.message(error_lines(run.stderr)[-1], names=[sqs, "damaged on disk", "pretrain_sqs"])
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("damaged", ["checkpoint", "encoder.pt"])
def test_a_zeroed_region_of_a_pretrain_sqs_file_is_named(corpus, reference, tmp_path, ledger, damaged):
    """The align stage's own checkpoint (resume) and its input, the denoised encoder."""
    out = tmp_path / "run"
    encoder = tmp_path / "encoder.pt"
    shutil.copy(reference / "encoder.pt", encoder)
    if damaged == "checkpoint":
        killed = pretrain(corpus, out, "align", "kill_at_update:6", encoder)
        assert killed.returncode == KILLED
        target, names = checkpoint_of(out, "align"), ["delete it"]
    else:
        target, names = encoder, ["pretrain_sqs_encoder"]
    zero_region(target)
    ledger.protect(target)
    failed = pretrain(corpus, out, "align", encoder=encoder)
    assert failed.returncode == 2, failed.stderr
    ledger.message(error_lines(failed.stderr)[-1], names=[target, "damaged on disk", *names])
    assert not (out / "K32_D8" / "sqs.pt").exists()


# ---------------------------------------------- data of another dictionary --
def test_decode_refuses_data_binarized_with_another_dictionary(data, model_pt, tmp_path, ledger, capsys):
    """The model and --dict agree (the model's own dict.txt), but the test split was
    binarized with a dictionary of the same size in another order: every id is in
    range, and each would be read as another word."""
    other = tmp_path / "other"
    other.mkdir()
    Dictionary(VOCAB[::-1]).save(other / "dict.txt")
    reordered = Dictionary.load(other / "dict.txt")
    ours = Dictionary.load(data / "dict.txt")
    for side in (0, 1):
        text = tmp_path / f"valid.{side}.txt"
        text.write_text("".join(ours.decode(pair[side]) + "\n" for pair in make_pairs(10, 7)), encoding="utf-8")
        binarize_file(text, reordered, other / f"valid.{'src' if side == 0 else 'tgt'}")
    ledger.protect(other)
    out = tmp_path / "hyp.tok"
    assert decode_main(["--model", str(model_pt), "--dict", str(data / "dict.txt"),
                        "--src-prefix", str(other / "valid.src"), "--tgt-prefix", str(other / "valid.tgt"),
                        "--decoding", json.dumps({"strategy": "beam", "beam": 2}), "--tgt-lang", "de",
                        "--out-tok", str(out), "--device", "cpu"]) == 2
    ledger.message(error_lines(capsys.readouterr().err)[-1],
                   names=[other / "valid.src.bin", data / "dict.txt", "another dictionary"])
    assert not out.exists()
    # With the dictionary it was binarized with, the same data is read (ids in range, sums match).
    from aeqa_model.data.batching import ParallelCorpus
    assert len(ParallelCorpus(other / "valid.src", other / "valid.tgt", reordered)) == 10


# -------------------------------------------------- a diverged pre-alignment --
@pytest.mark.parametrize("stage", ["encoder", "align"])
def test_a_diverged_pre_alignment_writes_nothing_and_names_the_settings(corpus, reference, tmp_path, ledger, stage):
    """pretrain_sqs.lr 1e6: both stages diverge to NaN weights within their 12 updates."""
    out = tmp_path / "run"
    encoder = None if stage == "encoder" else reference / "encoder.pt"
    diverged = pretrain(corpus, out, stage, encoder=encoder, spec=dict(SQS_SPEC, lr=1e6))
    assert diverged.returncode == 1, diverged.stderr
    output = out / "encoder.pt" if stage == "encoder" else out / "K32_D8" / "sqs.pt"
    ledger.message(error_lines(diverged.stderr)[-1], names=[output, "pretrain_sqs.lr", "diverged"])
    assert not output.exists(), f"{output} was written although the stage diverged"
