"""Bad corpora through the prepare stage (and on through BPE and binarization): misaligned
line counts, invalid UTF-8, NUL bytes, empty lines, a 100k-character line, CRLF endings, a
BOM, an empty file, and line-separator characters that other tools split on. Each is a
clear error naming the file (and line), or a drop counted in tok/report.json; the pairs
that remain are always the pairs that were given (every line carries its pair's id)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aeqa_model.data import bpe
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import IndexedCorpus, binarize_file
from aeqa_model.data.prepare import prepare_dataset
from aeqa_model.io import InputError, read_lines

pytestmark = pytest.mark.fault

SPEC = {"lowercase": False, "aggressive_dash_splits": True, "min_tokens": 1, "max_tokens": 80, "max_ratio": 3.0}
N = 30


def pair(i: int) -> tuple[bytes, bytes]:
    """Pair i: both sides start with the id token ``idN`` so an alignment shift shows."""
    return (f"id{i} this is the English sentence number {i} .".encode(),
            f"id{i} das ist der deutsche Satz Nummer {i} .".encode())


def write_split(orig: Path, split: str, en: list[bytes], de: list[bytes], eol: bytes = b"\n") -> None:
    orig.mkdir(parents=True, exist_ok=True)
    (orig / f"{split}.en").write_bytes(b"".join(line + eol for line in en))
    (orig / f"{split}.de").write_bytes(b"".join(line + eol for line in de))


def corpus(orig: Path, train: dict[int, tuple[bytes, bytes]] | None = None,
           valid: dict[int, tuple[bytes, bytes]] | None = None) -> None:
    """A clean corpus (train N pairs, valid/test 5), with some pairs replaced."""
    for split, n, bad in (("train", N, train or {}), ("valid", 5, valid or {}), ("test", 5, {})):
        pairs = [bad.get(i, pair(i)) for i in range(n)]
        write_split(orig, split, [p[0] for p in pairs], [p[1] for p in pairs])


def prepare(orig: Path, tok: Path) -> dict:
    return prepare_dataset(SPEC, ["en", "de"], orig, tok, log=lambda m: None)


def assert_aligned(tok: Path, split: str = "train") -> list[str]:
    """Both sides have the same number of lines and every line pair has the same id."""
    en, de = read_lines(tok / f"{split}.en"), read_lines(tok / f"{split}.de")
    assert len(en) == len(de)
    ids = []
    for a, b in zip(en, de):
        assert a.split()[0] == b.split()[0], f"misaligned pair: {a[:60]!r} / {b[:60]!r}"
        ids.append(a.split()[0])
    return ids


def dropped(report: dict, split: str = "train") -> dict:
    entry = report["splits"][split]
    assert entry["lines_out"] + sum(entry["dropped"].values()) == entry["lines_in"]
    return {k: v for k, v in entry["dropped"].items() if v}


def expect_error(orig: Path, tok: Path, ledger, *names) -> str:
    with pytest.raises(InputError) as err:
        prepare(orig, tok)
    assert not (tok / "report.json").exists(), "a failed prepare left a completion marker"
    return ledger.message(str(err.value), names=names)


# ------------------------------------------------------------------ errors --
def test_misaligned_line_counts(tmp_path, ledger):
    corpus(tmp_path / "orig")
    de = (tmp_path / "orig/train.de").read_bytes().split(b"\n")
    (tmp_path / "orig/train.de").write_bytes(b"\n".join(de[:5] + de[6:]))  # one line lost in the middle
    msg = expect_error(tmp_path / "orig", tmp_path / "tok", ledger, "train.en", "train.de")
    assert f"{N} lines" in msg and f"{N - 1} lines" in msg


def test_extra_blank_line_at_the_end_of_one_side(tmp_path, ledger):
    corpus(tmp_path / "orig")
    with open(tmp_path / "orig/valid.en", "ab") as handle:
        handle.write(b"\n")
    expect_error(tmp_path / "orig", tmp_path / "tok", ledger, "valid.en", "valid.de")


@pytest.mark.parametrize("side", ["en", "de"])
def test_empty_file(tmp_path, ledger, side):
    corpus(tmp_path / "orig")
    (tmp_path / f"orig/train.{side}").write_bytes(b"")
    msg = expect_error(tmp_path / "orig", tmp_path / "tok", ledger, f"train.{side}")
    assert "empty" in msg


def test_bom_only_file_is_empty(tmp_path, ledger):
    corpus(tmp_path / "orig")
    (tmp_path / "orig/test.de").write_bytes(b"\xef\xbb\xbf")
    expect_error(tmp_path / "orig", tmp_path / "tok", ledger, "test.de")


@pytest.mark.parametrize("line,problem", [(b"id2 kaputt \xff\xfe", "invalid UTF-8"), (b"id2 null \x00 byte", "NUL"),
                                          (b"", "empty"), (b" \t ", "empty"), (b"\x01\x02\x7f", "empty")],
                         ids=["invalid-utf8", "nul", "empty", "blank", "control-only"])
def test_bad_line_in_valid_is_an_error_naming_file_and_line(tmp_path, ledger, line, problem):
    corpus(tmp_path / "orig", valid={2: (pair(2)[0], line)})
    msg = expect_error(tmp_path / "orig", tmp_path / "tok", ledger, "valid.de:3")
    assert problem in msg


# ----------------------------------------------------------- counted drops --
def test_bad_train_lines_are_dropped_and_counted(tmp_path, ledger):
    long_line = " ".join(["lang"] * 25_000).encode()[:100_000]  # a 100k-character line
    bad = {
        3: (b"id3 caf\xe9 latin-1", pair(3)[1]),               # invalid UTF-8
        5: (pair(5)[0], b"id5 mit \x00 NUL"),                   # NUL byte
        7: (b"", b""),                                          # empty pair
        8: (pair(8)[0], b"   "),                                # empty target
        11: (b"id11 " + long_line, pair(11)[1]),                # 100k characters, 25k tokens
        13: (b"id13 " + b"x" * 100_000, pair(13)[1]),           # 100k characters, one token
    }
    corpus(tmp_path / "orig", train=bad)
    report = prepare(tmp_path / "orig", tmp_path / "tok")
    assert dropped(report) == {"invalid_utf8": 1, "nul_byte": 1, "empty": 2, "too_long": 1, "ratio": 1}
    ids = assert_aligned(tmp_path / "tok")
    assert ids == [f"id{i}" for i in range(N) if i not in bad]
    saved = json.loads((tmp_path / "tok/report.json").read_text())
    assert saved["splits"]["train"]["dropped"] == report["splits"]["train"]["dropped"]


def test_100k_character_line_in_valid_is_kept_aligned(tmp_path, ledger):
    corpus(tmp_path / "orig", valid={1: (b"id1 " + b"word " * 20_000, pair(1)[1])})
    report = prepare(tmp_path / "orig", tmp_path / "tok")
    assert report["splits"]["valid"]["lines_out"] == 5
    assert assert_aligned(tmp_path / "tok", "valid") == [f"id{i}" for i in range(5)]


# -------------------------------------------------------- normalized input --
def test_crlf_and_bom_give_the_same_output_as_clean_files(tmp_path, ledger):
    corpus(tmp_path / "clean")
    clean = prepare(tmp_path / "clean", tmp_path / "tok_clean")
    corpus(tmp_path / "orig")
    for name in ("train.en", "valid.de"):  # CRLF on one side only
        path = tmp_path / "orig" / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    for name in ("train.de", "test.en"):  # a UTF-8 BOM on one side only
        path = tmp_path / "orig" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = prepare(tmp_path / "orig", tmp_path / "tok")
    assert report["splits"] == clean["splits"]
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            name = f"{split}.{lang}"
            assert (tmp_path / "tok" / name).read_bytes() == (tmp_path / "tok_clean" / name).read_bytes(), name


SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\ufeff"]


def test_line_separator_characters_inside_lines_never_shift_pairs(tmp_path, ledger):
    """str.splitlines() and universal-newline readers split on these; the files must not."""
    bad = {i + 1: (f"id{i + 1} before{sep}after text .".encode(), pair(i + 1)[1])
           for i, sep in enumerate(SEPARATORS)}
    corpus(tmp_path / "orig", train=bad, valid={0: (pair(0)[0], "id0 vor\u2028nach .".encode())})
    report = prepare(tmp_path / "orig", tmp_path / "tok")
    assert not dropped(report)
    tok = tmp_path / "tok"
    assert assert_aligned(tok) == [f"id{i}" for i in range(N)]
    assert assert_aligned(tok, "valid") == [f"id{i}" for i in range(5)]
    # Downstream readers (universal newlines, str.split) agree on the line count too.
    for name in ("train.en", "valid.de"):
        with open(tok / name, encoding="utf-8") as handle:
            assert sum(1 for _ in handle) == len(read_lines(tok / name))


def test_nasty_corpus_stays_aligned_through_bpe_and_binarization(tmp_path, ledger):
    """Every kind of bad line at once, then BPE and binarization: counts and ids still match."""
    bad = {1: (b"id1 \xff", pair(1)[1]), 2: (b"", b""), 4: ("id4 a\u2028b .".encode(), "id4 c\u0085d .".encode()),
           6: (pair(6)[0], b"id6 \x00"), 9: (b"id9 " + b"y" * 100_000, pair(9)[1])}
    corpus(tmp_path / "orig", train=bad)
    (tmp_path / "orig/train.en").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "orig/train.en").read_bytes()
                                             .replace(b"\n", b"\r\n"))
    report = prepare(tmp_path / "orig", tmp_path / "tok")
    kept = assert_aligned(tmp_path / "tok")
    assert len(kept) == N - 4 and sum(dropped(report).values()) == 4
    tok, out = tmp_path / "tok", tmp_path / "bpe"
    out.mkdir()
    bpe.learn([tok / "train.en", tok / "train.de"], out / "codes", merges=50, log=lambda m: None)
    names = [f"{s}.{l}" for s in ("train", "valid", "test") for l in ("en", "de")]
    bpe.apply(out / "codes", [tok / n for n in names], [out / n for n in names], log=lambda m: None)
    for split in ("train", "valid", "test"):
        a, b = read_lines(out / f"{split}.en"), read_lines(out / f"{split}.de")
        assert len(a) == len(b) == len(read_lines(tok / f"{split}.en"))
        assert [x.split()[0] for x in a] == [y.split()[0] for y in b]
    dictionary = Dictionary.build([out / "train.en", out / "train.de"])
    for lang in ("en", "de"):
        binarize_file(out / f"train.{lang}", dictionary, tmp_path / f"bin.{lang}")
    assert len(IndexedCorpus(tmp_path / "bin.en")) == len(IndexedCorpus(tmp_path / "bin.de")) == len(kept)
