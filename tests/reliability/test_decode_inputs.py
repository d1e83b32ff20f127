"""Decoding inputs that used to pass silently or lose the job (issue 18).

* item 3: a model decoded with another run's dictionary. ``decode.cli`` never read
  ``--dict``, so ids went through the wrong table and the job exited 0; now the
  model's dictionary (stored in its checkpoint) must be the data's ``dict.txt``, and
  a mismatch is an error naming both files.
* item 7: a test sentence longer than the model's positions. It was cut without a
  word; then the AT's beam search crashed (IndexError) and Vanilla NAT failed on a size
  mismatch, losing the whole decode job. Now the sentence is cut to the model's
  positions, counted in the log and in ``speed.json`` (hence in ``metrics.json``'s
  provenance), and every decoding strategy stays within the positions, predicted NAT
  lengths and DAG/CTC sizes included.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import write_indexed
from aeqa_model.decode import generate
from aeqa_model.decode.cli import main as decode_main
from aeqa_model.models import model_class
from aeqa_model.models.transformer import TransformerConfig
from aeqa_model.models.build import build_model, model_payload
from tests.conftest import VOCAB, make_pairs

pytestmark = pytest.mark.fault

TINY = {"size": "tiny", "embed_dim": 16, "ffn_dim": 32, "heads": 2}


def save_model(path: Path, arch: str, dictionary: Dictionary, **options) -> Path:
    torch.manual_seed(0)
    model = build_model({"arch": arch, **TINY, **options}, dictionary)
    torch.save(model_payload(model), path)
    return path


def write_split(bin_dir: Path, split: str, pairs) -> None:
    write_indexed(bin_dir / f"{split}.src", [p[0] for p in pairs])
    write_indexed(bin_dir / f"{split}.tgt", [p[1] for p in pairs])


def decode(tmp: Path, model: Path, bin_dir: Path, decoding: dict, *extra: str) -> tuple[int, Path]:
    out = tmp / f"hyp.{model.stem}.tok"
    code = decode_main(["--model", str(model), "--dict", str(bin_dir / "dict.txt"),
                        "--src-prefix", str(bin_dir / "test.src"), "--tgt-prefix", str(bin_dir / "test.tgt"),
                        "--decoding", json.dumps(decoding), "--tgt-lang", "de", "--out-tok", str(out),
                        "--device", "cpu", *extra])
    return code, out


# -------------------------------------------------- item 3: dictionaries --
@pytest.fixture
def two_runs(tmp_path):
    """Run A's data (dict.txt + test split) and a model of run B, whose dictionary has
    the same size but another order (a rebuilt BPE), or one symbol more."""
    bin_dir = tmp_path / "a/data/toy/bin"
    bin_dir.mkdir(parents=True)
    ours = Dictionary(VOCAB)
    ours.save(bin_dir / "dict.txt")
    write_split(bin_dir, "test", make_pairs(12, 3))
    other_order = tmp_path / "b_model.pt"
    save_model(other_order, "vanilla_nat", Dictionary(VOCAB[::-1]))
    other_size = tmp_path / "c_model.pt"
    save_model(other_size, "vanilla_nat", Dictionary(VOCAB + ["w_new"]))
    ours_model = tmp_path / "a_model.pt"
    save_model(ours_model, "vanilla_nat", ours)
    return bin_dir, {"order": other_order, "size": other_size, "ours": ours_model}


@pytest.mark.parametrize("which", ["order", "size"])
def test_model_of_another_run_is_refused_naming_both_files(two_runs, tmp_path, ledger, capsys, which):
    bin_dir, models = two_runs
    ledger.protect(models[which], bin_dir)
    code, out = decode(tmp_path, models[which], bin_dir, {"strategy": "argmax"})
    assert code == 2
    msg = ledger.message(capsys.readouterr().err, names=[models[which], bin_dir / "dict.txt"])
    assert "first difference at id" in msg
    assert not out.exists()


def test_teacher_of_another_run_is_refused(two_runs, tmp_path, ledger, capsys):
    """NPD reranks with the AT teacher: its dictionary must match too."""
    bin_dir, models = two_runs
    teacher = save_model(tmp_path / "teacher.pt", "at", Dictionary(VOCAB[::-1]))
    code, out = decode(tmp_path, models["ours"], bin_dir, {"strategy": "npd", "candidates": 2}, "--teacher",
                       str(teacher))
    assert code == 2
    ledger.message(capsys.readouterr().err, names=[teacher, bin_dir / "dict.txt"])
    assert not out.exists()
    code, out = decode(tmp_path, models["ours"], bin_dir, {"strategy": "argmax"})  # the matching model works
    assert code == 0 and len(out.read_text().splitlines()) == 12


# ---------------------------------------------- item 7: over-long inputs --
POSITIONS = 24          # the models' max_positions: sources keep 22 tokens + EOS
LONG = 40               # tokens of the over-long test sentences


@pytest.fixture
def long_test(tmp_path):
    """A test split of 9 sentences, two of them (lines 3 and 8) longer than the models'
    positions, and matching references for evaluate."""
    bin_dir = tmp_path / "data/toy/bin"
    bin_dir.mkdir(parents=True)
    d = Dictionary(VOCAB)
    d.save(bin_dir / "dict.txt")
    pairs = make_pairs(9, 4)
    rng = np.random.default_rng(0)
    for line in (3, 8):
        src = rng.integers(6, 35, size=LONG).tolist()
        pairs[line - 1] = (src, [t + 1 for t in src[::-1]])
    write_split(bin_dir, "test", pairs)
    refs = [d.decode(p[1]) for p in pairs]
    return bin_dir, d, pairs, refs


@pytest.mark.parametrize("arch,decoding", [("at", {"strategy": "beam", "beam": 4}),
                                           ("vanilla_nat", {"strategy": "argmax"}),
                                           ("ctc", {"strategy": "argmax"}),
                                           ("dat", {"strategy": "lookahead"})])
def test_over_long_test_sentence_is_cut_counted_and_scored(long_test, tmp_path, ledger, caplog, monkeypatch,
                                                           arch, decoding):
    """The job completes with one hypothesis per line; the log and metrics.json say how
    many sentences were cut, to how many tokens, and which."""
    from aeqa_model.evaluate.cli import main as evaluate_main

    bin_dir, d, pairs, refs = long_test
    model = save_model(tmp_path / f"{arch}.pt", arch, d, max_positions=POSITIONS)
    at = save_model(tmp_path / "at_ref.pt", "at", d, max_positions=POSITIONS)
    speed = tmp_path / "speed.json"
    detok = tmp_path / "hyp.detok"
    with caplog.at_level(logging.WARNING):
        code, out = decode(tmp_path, model, bin_dir, decoding, "--out-detok", str(detok), "--speed-out", str(speed),
                           "--speed-reference", str(at), "--speed-subset", "9", "--speed-warmup", "1")
    assert code == 0
    hyps = out.read_text().splitlines()
    assert len(hyps) == len(pairs)
    assert all(len(h.split()) <= POSITIONS for h in hyps)
    warning = ledger.message(caplog.text, names=[bin_dir / "test.src", "2 of 9 source sentences", "3, 8"])
    assert f"{POSITIONS - 2} tokens" in warning
    cut = json.loads(speed.read_text())["source_truncation"]
    assert cut == {"sentences": 2, "max_tokens": POSITIONS - 2, "lines": [3, 8], "longest": LONG}

    monkeypatch.setitem(sys.modules, "comet", None)
    monkeypatch.setitem(sys.modules, "bleurt_pytorch", None)
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(r + "\n" for r in refs))
    spec = {"test_split": "test", "speed_subset": 9, "speed_warmup": 1, "length_buckets": [0, 10, 1000],
            "repetition_max_n": 4, "bootstrap_samples": 5, "comet_model": None, "bleurt_checkpoint": None}
    metrics = tmp_path / "metrics.json"
    assert evaluate_main(["--hyp-tok", str(out), "--ref-tok", str(ref), "--hyp-detok", str(detok),
                          "--ref-detok", str(ref), "--src-detok", str(ref), "--tgt-lang", "de",
                          "--spec", json.dumps(spec), "--cell", "{}", "--provenance", "{}", "--speed", str(speed),
                          "--out", str(metrics), "--no-progress"]) == 0
    result = json.loads(metrics.read_text())
    assert result["n_sentences"] == 9 and result["provenance"]["source_truncation"]["sentences"] == 2


def _force_longest_length(model):
    """Length head that always predicts the largest offset (|X| + 64)."""
    head = model.length
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-5.0)
        head.proj.bias[-1] = 10.0
    return model


STRATEGIES = [
    ("at", {}, {"strategy": "beam", "beam": 3}),
    ("at", {}, {"strategy": "greedy"}),
    ("vanilla_nat", {}, {"strategy": "argmax", "length_beam": 2}),
    ("vanilla_nat", {}, {"strategy": "npd", "candidates": 3, "rerank": "teacher"}),
    ("glat", {}, {"strategy": "oracle", "ratio": 0.5}),
    ("cmlm", {}, {"strategy": "mask_predict", "iterations": 2, "length_beam": 2}),
    ("cmlm", {}, {"strategy": "oracle", "ratio": 0.3}),
    ("ctc", {"upsample": 3}, {"strategy": "argmax"}),
    ("dat", {"graph_factor": 8}, {"strategy": "lookahead"}),
    ("dat", {"graph_factor": 8}, {"strategy": "viterbi"}),
    ("aeqa_nat", {"codebook_size": 16}, {"strategy": "aeqa_two_pass", "lambda_inf": 0.5}),
    ("aeqa_dat", {"codebook_size": 16, "graph_factor": 4}, {"strategy": "viterbi"}),
]


@pytest.mark.parametrize("arch,options,decoding", STRATEGIES,
                         ids=[f"{a}-{d['strategy']}" for a, _, d in STRATEGIES])
def test_every_strategy_stays_within_the_positions(dictionary, arch, options, decoding):
    """generate() with a source wider than the positions and (NAT) a predicted length
    of |X| + 64: one hypothesis per row, none longer than the positions."""
    torch.manual_seed(0)
    cfg = TransformerConfig(embed_dim=16, ffn_dim=32, heads=2, encoder_layers=1, decoder_layers=1, dropout=0.0,
                            max_positions=POSITIONS)
    model = model_class(arch)(dictionary, cfg, options).eval()
    if getattr(model, "length", None) is not None:
        _force_longest_length(model)
    rows = [list(range(6, 6 + 8)), (np.arange(LONG) % 29 + 6).tolist()]
    width = max(len(r) for r in rows) + 1
    src = torch.full((2, width), dictionary.pad)
    for i, r in enumerate(rows):
        src[i, :len(r) + 1] = torch.tensor(r + [dictionary.eos])
    reference = src[:, :-1].clone().masked_fill(src[:, :-1].eq(dictionary.eos), dictionary.pad)
    teacher = model_class("at")(dictionary, cfg, {}).eval() if decoding.get("rerank") == "teacher" else None
    hyps = generate(model, src, decoding, teacher=teacher, reference=reference)
    assert len(hyps) == 2 and all(len(h) <= POSITIONS for h in hyps), [len(h) for h in hyps]
