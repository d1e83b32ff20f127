"""Joint BPE: learn + apply (in-process and parallel) + remove round trip."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from aeqa_model.data.bpe import apply, learn, remove_bpe
from aeqa_model.io import InputError, read_lines

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda m: None}


def corpus(path: Path, words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


@pytest.fixture()
def files(tmp_path):
    en_words = ["translation", "translations", "non-autoregressive", "model", "models", "decoder", "the", "a",
                "quantization", "space", "@-@", "."]
    de_words = ["Übersetzung", "Übersetzungen", "Modell", "Modelle", "Dekodierer", "der", "die", "das",
                "Quantisierung", "Raum", "@-@", "."]
    en = corpus(tmp_path / "train.en", en_words, 300, 1)
    de = corpus(tmp_path / "train.de", de_words, 300, 2)
    return tmp_path, en, de


def test_learn_apply_remove_round_trip(files):
    tmp, en, de = files
    codes = tmp / "codes"
    learn([tmp / "train.en", tmp / "train.de"], codes, merges=60, **QUIET)
    text = codes.read_text(encoding="utf-8")
    assert text.startswith("#version: 0.2") and len(text.splitlines()) == 61
    # Joint codes: merges from both languages.
    assert "Üb er" in text and "transl ation</w>" in text
    outputs = [tmp / "bpe.en", tmp / "bpe.de"]
    apply(codes, [tmp / "train.en", tmp / "train.de"], outputs, workers=1, **QUIET)
    seg_en = read_lines(outputs[0])
    assert any("@@ " in line for line in seg_en)
    assert [remove_bpe(line) for line in seg_en] == en
    assert [remove_bpe(line) for line in read_lines(outputs[1])] == de


def test_parallel_apply_matches_serial(files):
    tmp, en, de = files
    codes = tmp / "codes"
    learn([tmp / "train.en", tmp / "train.de"], codes, merges=40, **QUIET)
    apply(codes, [tmp / "train.en"], [tmp / "one.en"], workers=1, **QUIET)
    apply(codes, [tmp / "train.en"], [tmp / "two.en"], workers=2, **QUIET)
    assert (tmp / "one.en").read_bytes() == (tmp / "two.en").read_bytes()


def test_remove_bpe():
    assert remove_bpe("Über@@ setz@@ ung ist gut") == "Übersetzung ist gut"
    assert remove_bpe("trailing@@") == "trailing"  # a dangling mark at the end is dropped too
    assert remove_bpe("a@@ b@@ ") == "ab"
    assert remove_bpe("") == ""


def test_errors(tmp_path):
    with pytest.raises(InputError, match="codes not found"):
        apply(tmp_path / "nope", [tmp_path / "x"], [tmp_path / "y"], **QUIET)
    with pytest.raises(InputError, match="inputs but"):
        apply(tmp_path / "nope", [tmp_path / "x"], [], **QUIET)


def test_cli(files):
    tmp, en, de = files
    script = [sys.executable, "-m", "aeqa_model.bpe.cli"]
    subprocess.run([*script, "learn", "--merges", "30", "--codes", str(tmp / "codes"),
                    "--inputs", str(tmp / "train.en"), str(tmp / "train.de")], check=True, capture_output=True,
                   timeout=60, cwd=ROOT)
    subprocess.run([*script, "apply", "--codes", str(tmp / "codes"), "--inputs",
                    str(tmp / "train.en"), str(tmp / "train.de"), "--outputs", str(tmp / "o.en"),
                    str(tmp / "o.de"), "--workers", "2"], check=True, capture_output=True, timeout=60,
                   cwd=ROOT)
    assert [remove_bpe(line) for line in read_lines(tmp / "o.de")] == de
