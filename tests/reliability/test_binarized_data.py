"""Damaged binarized data (issue 18, items 5 and 6): bit rot in a ``.bin``, foreign or cut
``.idx`` bytes, an index whose offsets do not rise. Opening the corpus (as training and
decoding do) is an error naming the damaged file and the way out (delete the split's
``bin/report.json`` and rerun, so the binarize rule rewrites it), never a numpy or torch
traceback naming no file, and never a silent run on wrong ids."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import IndexedCorpus, write_indexed
from aeqa_model.io import InputError
from tests.reliability.faultlib import write_tiny_corpus

pytestmark = pytest.mark.fault

MODEL = {"arch": "vanilla_nat", "size": "t"}
SIZES = {"t": {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1,
               "dropout": 0.1}}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean binarized dataset laid out as the workflow does (data/<ds>/bin/...)."""
    bin_dir = write_tiny_corpus(tmp_path_factory.mktemp("clean") / "data/toy/bin")
    (bin_dir / "report.json").write_text("{}\n")
    return bin_dir


@pytest.fixture
def data(clean, tmp_path):
    """A private copy of the clean dataset, free to damage."""
    bin_dir = tmp_path / "data/toy/bin"
    shutil.copytree(clean, bin_dir)
    return bin_dir


def flip_bit(path: Path, byte: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[byte] ^= 1 << bit
    path.write_bytes(bytes(raw))


def open_pair(bin_dir: Path, split: str = "valid") -> ParallelCorpus:
    d = Dictionary.load(bin_dir / "dict.txt")
    return ParallelCorpus(bin_dir / f"{split}.src", bin_dir / f"{split}.tgt", d)


def expect_named(bin_dir: Path, ledger, damaged: Path, split: str = "valid") -> str:
    with pytest.raises(InputError) as err:
        open_pair(bin_dir, split)
    return ledger.message(str(err.value), names=[damaged, bin_dir / "report.json", "binarize"])


def offsets_of(prefix: Path) -> np.ndarray:
    return np.load(f"{prefix}.idx")


# ------------------------------------------------------- item 6: bad bytes --
def cut_index(path: Path) -> None:
    """Half the file: the .npy header survives, the offsets do not ('mmap length is
    greater than file size' from numpy)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def cut_index_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def empty_index(path: Path) -> None:
    path.write_bytes(b"")  # EOFError from numpy


def foreign_index(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def float_index(path: Path) -> None:
    np.save(path.with_suffix(".tmp.npy"), np.load(path).astype(np.float64))
    path.with_suffix(".tmp.npy").replace(path)


def unordered_index(path: Path) -> None:
    """A high bit flipped in one offset of the middle (the last one, hence the .bin
    size check, is intact): sentences with negative lengths."""
    offsets = np.load(path)
    header = path.stat().st_size - offsets.nbytes
    flip_bit(path, header + 8 * (len(offsets) // 2) + 3, 6)


@pytest.mark.parametrize("damage", [cut_index, cut_index_header, empty_index, foreign_index, float_index,
                                    unordered_index], ids=lambda f: f.__name__)
def test_damaged_index_is_named_with_the_way_out(data, ledger, damage):
    idx = data / "valid.src.idx"
    damage(idx)
    expect_named(data, ledger, idx)


@pytest.mark.parametrize("change", ["cut", "extra"])
def test_bin_of_the_wrong_length_names_the_marker_to_delete(data, ledger, change):
    binf = data / "valid.tgt.bin"
    raw = binf.read_bytes()
    binf.write_bytes(raw[:-8] if change == "cut" else raw + raw[:8])
    msg = expect_named(data, ledger, binf)
    assert "valid.tgt.idx" in msg


# ------------------------------------------------------- item 5: bit rot ----
@pytest.mark.parametrize("bit", [31, 20, 6])
def test_out_of_range_id_is_refused_when_the_corpus_is_opened(data, ledger, bit):
    """A flipped high bit makes a token id negative or larger than the dictionary
    (before: an IndexError deep in the embedding, or nothing at all for ids that the
    model happened to accept). Caught by the id-range check even without the .sum file
    (data binarized before it existed)."""
    (data / "train.src.sum").unlink()
    binf = data / "train.src.bin"
    token = 123  # of sentence 1 + some
    flip_bit(binf, 4 * token + bit // 8, bit % 8)
    msg = expect_named(data, ledger, binf, split="train")
    value = int(np.fromfile(binf, dtype=np.int32)[token])
    assert str(value) in msg and "0..35" in msg
    line = int(np.searchsorted(offsets_of(data / "train.src"), token, side="right"))
    assert f"sentence {line}," in msg


def test_in_range_bit_flip_is_caught_by_the_checksum(data, ledger):
    """Bit 0 of an id: still a valid id, so only the CRC32 written with the corpus sees it."""
    binf = data / "valid.tgt.bin"
    flip_bit(binf, 4 * 17, 0)
    assert int(np.fromfile(binf, dtype=np.int32).max()) < 36
    msg = expect_named(data, ledger, binf)
    assert "CRC32" in msg


def test_checksums_are_written_with_the_corpus_and_a_clean_corpus_opens(tmp_path):
    prefix = tmp_path / "bin/test.en"
    write_indexed(prefix, [[6, 7, 8], [], [9]])
    sums = json.loads(Path(f"{prefix}.sum").read_text())
    assert sums["sentences"] == 3 and sums["tokens"] == 4
    corpus = IndexedCorpus(prefix, vocab_size=10)
    assert [c.tolist() for c in (corpus[0], corpus[1], corpus[2])] == [[6, 7, 8], [], [9]]
    with pytest.raises(InputError, match="outside the dictionary's ids 0..8"):
        IndexedCorpus(prefix, vocab_size=9)
    write_indexed(tmp_path / "bin/empty", [])
    assert len(IndexedCorpus(tmp_path / "bin/empty", vocab_size=10)) == 0


def test_kd_corpus_names_the_binarize_kd_rule(tmp_path, ledger):
    bin_dir = tmp_path / "data/toy/kd/en-de/bin"
    write_indexed(bin_dir / "train.src", [[6, 7], [8]])
    empty_index(bin_dir / "train.src.idx")
    with pytest.raises(InputError) as err:
        IndexedCorpus(bin_dir / "train.src")
    ledger.message(str(err.value), names=[bin_dir / "train.src.idx", bin_dir / "report.json", "binarize_kd"])


# ------------------------------------------ through the train and decode CLIs --
@pytest.mark.parametrize("damage", ["index", "bit"])
def test_train_and_decode_refuse_damaged_data_naming_the_file(data, tmp_path, ledger, capsys, damage):
    """The entry points of the train and decode rules exit 2 with the message (no
    traceback, no output written)."""
    from aeqa_model.decode import cli as decode_cli
    from aeqa_model.train import cli as train_cli
    from aeqa_model.models.build import build_model, model_payload

    d = Dictionary.load(data / "dict.txt")
    model = tmp_path / "model.pt"
    torch.save(model_payload(build_model(MODEL, d, SIZES)), model)
    if damage == "index":
        damaged = data / "valid.src.idx"
        cut_index(damaged)
    else:
        damaged = data / "valid.src.bin"
        flip_bit(damaged, 4 * 5 + 3, 6)

    out = tmp_path / "run"
    argv = ["--model-spec", json.dumps(MODEL), "--train-spec", json.dumps({"max_updates": 2}),
            "--sizes", json.dumps(SIZES), "--dict", str(data / "dict.txt"),
            "--train-src", str(data / "train.src"), "--train-tgt", str(data / "train.tgt"),
            "--valid-src", str(data / "valid.src"), "--valid-tgt", str(data / "valid.tgt"),
            "--out-dir", str(out), "--output", str(out / "model.pt"), "--device", "cpu"]
    assert train_cli.main(argv) == 2
    ledger.message(capsys.readouterr().err, names=[damaged, data / "report.json"])
    assert not (out / "model.pt").exists()

    hyp = tmp_path / "hyp.tok"
    code = decode_cli.main(["--model", str(model), "--dict", str(data / "dict.txt"),
                            "--src-prefix", str(data / "valid.src"), "--tgt-prefix", str(data / "valid.tgt"),
                            "--decoding", '{"strategy": "argmax"}', "--tgt-lang", "de",
                            "--out-tok", str(hyp), "--device", "cpu"])
    assert code == 2
    ledger.message(capsys.readouterr().err, names=[damaged, data / "report.json"])
    assert not hyp.exists()
