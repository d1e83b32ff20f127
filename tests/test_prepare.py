"""Prepare stage: alignment checks, counted drops on train, strict valid/test, parallel order."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aeqa_model.data.moses import detokenize, split_compounds, tokenize
from aeqa_model.data.prepare import prepare_dataset
from aeqa_model.io import InputError, read_lines

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"lowercase": False, "aggressive_dash_splits": True, "min_tokens": 1, "max_tokens": 12, "max_ratio": 1.5}
QUIET = {"log": lambda m: None}


def write(path: Path, lines: list[bytes] | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines if isinstance(lines, bytes) else b"".join(line + b"\n" for line in lines))


def clean_corpus(orig: Path, n_valid: int = 3) -> None:
    for split, n in (("valid", n_valid), ("test", n_valid)):
        write(orig / f"{split}.en", [f"The {split} sentence {i}.".encode() for i in range(n)])
        write(orig / f"{split}.de", [f"Der {split} Satz {i}.".encode() for i in range(n)])


def test_train_drops_are_counted(tmp_path):
    orig = tmp_path / "orig"
    en = [b"A good pair.", b"bad \xff utf8", b"nul \x00 byte", b"   ", b"a b c d e f g h i j k l m n",
          b"one", b"The state-of-the-art model.", b"Second good pair here."]
    de = [b"Ein gutes Paar.", b"schlecht", b"nul", b"leer", b"zu lang",
          b"eins zwei drei vier", b"Das State-of-the-Art-Modell.", b"Zweites gutes Paar hier."]
    write(orig / "train.en", en)
    write(orig / "train.de", de)
    clean_corpus(orig)
    report = prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", **QUIET)
    train = report["splits"]["train"]
    assert train["lines_in"] == 8 and train["lines_out"] == 3
    assert {k: v for k, v in train["dropped"].items() if v} == {
        "invalid_utf8": 1, "nul_byte": 1, "empty": 1, "too_long": 1, "ratio": 1}
    assert read_lines(tmp_path / "tok" / "train.en") == [
        "A good pair .", "The state @-@ of @-@ the @-@ art model .", "Second good pair here ."]
    assert read_lines(tmp_path / "tok" / "train.de")[0] == "Ein gutes Paar ."
    saved = json.loads((tmp_path / "tok" / "report.json").read_text())
    assert saved["splits"]["valid"] == {"lines_in": 3, "dropped": {k: 0 for k in train["dropped"]}, "lines_out": 3}


def test_misaligned_names_both_files(tmp_path):
    orig = tmp_path / "orig"
    write(orig / "train.en", [b"a", b"b", b"c"])
    write(orig / "train.de", [b"a", b"b"])
    clean_corpus(orig)
    with pytest.raises(InputError) as err:
        prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", **QUIET)
    message = str(err.value)
    assert "train.en has 3 lines" in message and "train.de has 2 lines" in message


@pytest.mark.parametrize("bad, what", [(b"", "an empty line"), (b"x \xfe y", "invalid UTF-8"),
                                       (b"nul\x00", "a NUL byte")])
def test_valid_and_test_lines_are_never_dropped(tmp_path, bad, what):
    orig = tmp_path / "orig"
    write(orig / "train.en", [b"hello"])
    write(orig / "train.de", [b"hallo"])
    clean_corpus(orig)
    write(orig / "test.de", [b"eins", bad, b"drei"])
    with pytest.raises(InputError, match=rf"test\.de:2: {what}"):
        prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", **QUIET)


def test_crlf_and_bom(tmp_path):
    orig = tmp_path / "orig"
    write(orig / "train.en", b"\xef\xbb\xbfHello world.\r\nGood bye.\r\n")
    write(orig / "train.de", b"Hallo Welt.\nAuf Wiedersehen.")  # no final newline either
    clean_corpus(orig)
    prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", **QUIET)
    assert read_lines(tmp_path / "tok" / "train.en") == ["Hello world .", "Good bye ."]
    assert (tmp_path / "tok" / "train.en").read_bytes() == b"Hello world .\nGood bye .\n"
    assert read_lines(tmp_path / "tok" / "train.de") == ["Hallo Welt .", "Auf Wiedersehen ."]


def test_empty_file_is_an_error(tmp_path):
    orig = tmp_path / "orig"
    write(orig / "train.en", b"")
    write(orig / "train.de", b"")
    clean_corpus(orig)
    with pytest.raises(InputError, match=r"train\.en: the file is empty"):
        prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", **QUIET)
    assert not (tmp_path / "tok" / "report.json").exists()


def test_workers_preserve_order(tmp_path):
    orig = tmp_path / "orig"
    n = 300
    write(orig / "train.en", [f"Sentence number {i} is well-formed.".encode() for i in range(n)])
    write(orig / "train.de", [f"Satz Nummer {i} ist wohlgeformt.".encode() for i in range(n)])
    clean_corpus(orig, n_valid=50)
    prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "one", workers=1, **QUIET)
    prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "two", workers=2, **QUIET)
    for name in ("train.en", "train.de", "valid.en", "test.de"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    lines = read_lines(tmp_path / "two" / "train.en")
    assert lines[137] == "Sentence number 137 is well @-@ formed ."


def test_zh_segmentation_and_lowercase(tmp_path):
    orig = tmp_path / "orig"
    write(orig / "train.zh", ["我们尚未收到您的付款。".encode()])
    write(orig / "train.en", [b"We have Not received your payment."])
    for split in ("valid", "test"):
        write(orig / f"{split}.zh", ["你好，世界。".encode()])
        write(orig / f"{split}.en", [b"Hello, World."])
    spec = {**SPEC, "max_ratio": 9.0, "lowercase": True, "segmenter": {"zh": "jieba"}}
    prepare_dataset(spec, ["zh", "en"], orig, tmp_path / "tok", **QUIET)
    zh = read_lines(tmp_path / "tok" / "train.zh")[0]
    assert zh.replace(" ", "") == "我们尚未收到您的付款。" and len(zh.split()) > 3
    assert read_lines(tmp_path / "tok" / "test.en") == ["hello , world ."]


def test_extra_references_are_tokenized(tmp_path):
    orig = tmp_path / "orig"
    clean_corpus(orig)
    write(orig / "test.ref1.de", [b"Ein anderer Satz.", b"Zwei.", b"Drei."])
    prepare_dataset(SPEC, ["en", "de"], orig, tmp_path / "tok", splits=["test"], **QUIET)
    assert read_lines(tmp_path / "tok" / "test.ref1.de")[0] == "Ein anderer Satz ."


def test_moses_helpers():
    assert tokenize(["Hello World-Wide!"], "en", aggressive_dash_splits=False) == ["Hello World-Wide !"]
    assert detokenize(["Hello , world @-@ wide !"], "en") == ["Hello, world-wide!"]
    assert detokenize(["你好 ， 世界 。 Django 5"], "zh") == ["你好，世界。 Django 5"]
    assert split_compounds("a-b c @-@ d") == "a ##AT##-##AT## b c @ ##AT##-##AT## @ d"
    joined = split_compounds("a-b  c @-@ d-e-f", join_moses_hyphen=True)
    assert joined == "a ##AT##-##AT## b c ##AT##-##AT## d ##AT##-##AT## e-f"
    once = split_compounds("x @-@ y z-w", join_moses_hyphen=True)
    assert split_compounds(once, join_moses_hyphen=True) == once == "x ##AT##-##AT## y z ##AT##-##AT## w"
    assert tokenize(["tab\there\u2028x"], "en") == ["tab here x"]


def test_cli(tmp_path):
    orig = tmp_path / "orig"
    write(orig / "train.en", [b"Hello."])
    write(orig / "train.de", [b"Hallo."])
    clean_corpus(orig)
    cmd = [sys.executable, "-m", "aeqa_model.prepare.cli", "--spec", json.dumps(SPEC), "--langs", "en",
           "de", "--in-dir", str(orig), "--out-dir", str(tmp_path / "tok"), "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tok" / "report.json").exists()
    write(orig / "train.de", [b"Hallo.", b"extra"])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "train.de has 2 lines" in result.stderr
