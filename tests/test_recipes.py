"""Recipes on small archives built by the tests: gettext wheels, WMT/IWSLT tarballs, multi-references."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import polib
import pytest

from aeqa_model.data.recipes import build_dataset, normalize_pair, read_segments
from aeqa_model.io import InputError, read_lines

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- gettext

def po_text(entries: list[dict]) -> str:
    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for fields in entries:
        catalog.append(polib.POEntry(**fields))
    return str(catalog)


def numbered(n: int, start: int = 0) -> list[dict]:
    return [{"msgid": f"Message number {i}", "msgstr": f"Nachricht Nummer {i}"} for i in range(start, start + n)]


SPECIAL = [
    {"msgid": "Enter a valid %(protocol)s address.", "msgstr": "Bitte eine gültige %(protocol)s-Adresse."},
    {"msgid": "Between {min} and {max}\nitems.", "msgstr": "Zwischen {max}   und {min} Elementen."},
    {"msgid": 'See <a href="%(link)s">the docs</a> &amp; more', "msgstr": 'Siehe <a href="%(link)s">Doku</a> &amp; mehr'},
    {"msgid": "Fuzzy one", "msgstr": "Unscharf", "flags": ["fuzzy"]},
    {"msgid": "Obsolete one", "msgstr": "Veraltet", "obsolete": True},
    {"msgid": "%(n)s item", "msgid_plural": "%(n)s items", "msgstr_plural": {0: "%(n)s Ding", 1: "%(n)s Dinge"}},
    {"msgid": "Untranslated", "msgstr": ""},
    {"msgid": "<b></b>", "msgstr": "<i> </i>"},                      # empty after normalization
    {"msgid": "%s KB", "msgstr": "%s KB"},                           # source == target
    {"msgid": " ".join(["word"] * 101), "msgstr": "zu lang"},        # > 100 words
    {"msgid": "Message number 1", "msgstr": "Nachricht Nummer 1"},   # duplicate pair
    {"msgid": "Message number 2", "msgstr": "Zweite Übersetzung"},   # duplicate source
]


def make_wheel(path: Path, catalogs: dict[str, list[dict]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member, entries in catalogs.items():
            archive.writestr(member, po_text(entries))
        archive.writestr("pkg/__init__.py", "")
    return path


@pytest.fixture()
def wheels(tmp_path):
    one = make_wheel(tmp_path / "one-1.0-py3-none-any.whl", {
        "one/locale/de/LC_MESSAGES/django.po": numbered(40) + SPECIAL,
        "one/locale/de_Informal/LC_MESSAGES/django.po": numbered(5, 500),   # another locale: ignored
        "one/locale/ro/LC_MESSAGES/django.po": numbered(5, 600),
    })
    two = make_wheel(tmp_path / "two-1.0-py3-none-any.whl", {
        "two/locale/de/LC_MESSAGES/djangojs.po": numbered(20, 40) + numbered(3),  # 3 cross-source duplicates
    })
    return {"one": str(one), "two": str(two)}


SPEC = {"recipe": "gettext_catalogs", "langs": ["en", "de"], "sources": ["one", "two"],
        "recipe_options": {"locale": "de", "valid_size": 5, "test_size": 7, "split_seed": 3}}


def test_gettext_catalogs_filters_and_splits(wheels, tmp_path):
    manifest = build_dataset("toy", SPEC, wheels, tmp_path / "orig", log=lambda m: None)
    steps = {step["step"]: step["remaining"] for step in manifest["filters"]}
    # 40 + 12 special + 23 entries; fuzzy, obsolete, plural, untranslated are not "translated".
    assert list(steps.values()) == [40 + 8 + 23, 40 + 7 + 23, 40 + 6 + 23, 40 + 5 + 23, 40 + 4 + 20, 40 + 3 + 20]
    assert manifest["splits"] == {"train": 63 - 12, "valid": 5, "test": 7}
    assert [s["po_files"] for s in manifest["per_source"]] == [["one/locale/de/LC_MESSAGES/django.po"],
                                                               ["two/locale/de/LC_MESSAGES/djangojs.po"]]
    assert manifest["sources"][0]["sha256"] and manifest["sources"][0]["file"] == "one-1.0-py3-none-any.whl"
    orig = tmp_path / "orig"
    en = sum((read_lines(orig / f"{s}.en") for s in ("train", "valid", "test")), [])
    de = sum((read_lines(orig / f"{s}.de") for s in ("train", "valid", "test")), [])
    pairs = dict(zip(en, de))
    assert len(en) == len(set(en)) == 63
    assert pairs["Enter a valid VAR1 address."] == "Bitte eine gültige VAR1-Adresse."
    assert pairs["Between VAR1 and VAR2 items."] == "Zwischen VAR2 und VAR1 Elementen."
    assert pairs["See the docs & more"] == "Siehe Doku & mehr"
    assert pairs["Message number 2"] == "Nachricht Nummer 2"   # the first translation is kept
    assert not any("500" in line or "600" in line for line in en)
    # test sources never occur in train
    assert not set(read_lines(orig / "test.en")) & set(read_lines(orig / "train.en"))


def test_gettext_catalogs_is_deterministic_and_seeded(wheels, tmp_path):
    build_dataset("toy", SPEC, wheels, tmp_path / "a", log=lambda m: None)
    build_dataset("toy", SPEC, wheels, tmp_path / "b", log=lambda m: None)
    other = {**SPEC, "recipe_options": {**SPEC["recipe_options"], "split_seed": 4}}
    build_dataset("toy", other, wheels, tmp_path / "c", log=lambda m: None)
    for name in ("train.en", "train.de", "valid.de", "test.en"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "test.en").read_bytes() != (tmp_path / "c" / "test.en").read_bytes()


def test_gettext_output_names_follow_langs(wheels, tmp_path):
    spec = {**SPEC, "langs": ["de", "en"]}
    build_dataset("toy", spec, wheels, tmp_path / "orig", log=lambda m: None)
    assert "Nachricht" in (tmp_path / "orig" / "train.de").read_text() + (tmp_path / "orig" / "test.de").read_text()


def test_gettext_too_few_pairs(wheels, tmp_path):
    spec = {**SPEC, "recipe_options": {**SPEC["recipe_options"], "locale": "ro"}}
    with pytest.raises(InputError, match="not enough"):
        build_dataset("toy", spec, wheels, tmp_path / "orig", log=lambda m: None)


def test_normalize_pair_placeholders():
    assert normalize_pair("%(a)s of %(b)d", "%(b)d von %(a)s") == ("VAR1 of VAR2", "VAR2 von VAR1")
    assert normalize_pair("{0} and {}", "{} und {0}") == ("VAR1 and VAR2", "VAR2 und VAR1")
    assert normalize_pair("Use {{ branch }}", "Nutze {{branch}}") == ("Use VAR1", "Nutze VAR1")
    assert normalize_pair("50% of %s", "50% von %s") == ("50% of VAR1", "50% von VAR1")
    assert normalize_pair("incl. %(rate)s %%", "inkl. %(rate)s %%") == ("incl. VAR1 %", "inkl. VAR1 %")
    assert normalize_pair("a<br>b", "a<br/>b") == ("a b", "a b")


def test_download_cli_builds_orig(wheels, tmp_path):
    spec = {**SPEC, "sources": ["one"]}
    sources = {"one": {"type": "local", "path": wheels["one"]}}
    result = subprocess.run(
        [sys.executable, "-m", "aeqa_model.download.cli", "--dataset", "toy", "--dataset-spec",
         json.dumps(spec), "--sources-spec", json.dumps(sources), "--cache-dir", str(tmp_path / "cache"),
         "--out-dir", str(tmp_path / "orig")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "orig" / "manifest.json").read_text())
    assert manifest["splits"]["train"] == len(read_lines(tmp_path / "orig" / "train.en"))


# ---------------------------------------------------------------- WMT / IWSLT

def add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def sgm(lines: list[str], kind: str) -> str:
    body = "\n".join(f'<seg id="{i + 1}"> {line} </seg>' for i, line in enumerate(lines))
    return f'<{kind}set setid="x">\n<doc docid="d">\n<p>\n{body}\n</p>\n</doc>\n</{kind}set>\n'


@pytest.fixture()
def wmt_sources(tmp_path):
    train_a = tmp_path / "europarl.tgz"
    with tarfile.open(train_a, "w:gz") as tar:
        add(tar, "training/ep.de-en.en", "".join(f"en {i}\n" for i in range(150)))
        add(tar, "training/ep.de-en.de", "".join(f"de {i}\r\n" for i in range(150)))
    train_b = tmp_path / "nc.zip"
    with zipfile.ZipFile(train_b, "w") as archive:
        archive.writestr("nc.en", "".join(f"nc en {i}\n" for i in range(60)))
        archive.writestr("nc.de", "".join(f"nc de {i}\n" for i in range(60)))
    test = tmp_path / "test-full.tgz"
    with tarfile.open(test, "w:gz") as tar:
        add(tar, "test-full/newstest2014-deen-src.en.sgm", sgm(["It’s one.", "Two &amp; three"], "src"))
        add(tar, "test-full/newstest2014-deen-ref.de.sgm", sgm(["Es ist eins.", "Zwei &amp; drei"], "ref"))
    return {"ep": str(train_a), "nc": str(train_b), "test": str(test)}


WMT_SPEC = {
    "recipe": "parallel_corpora", "langs": ["en", "de"], "sources": ["ep", "nc", "test"],
    "recipe_options": {
        "train": [{"source": "ep", "files": {"en": "training/ep.de-en.en", "de": "training/ep.de-en.de"}},
                  {"source": "nc", "files": {"en": "nc.en", "de": "nc.de"}}],
        "valid": {"every_nth_train": 100},
        "test": [{"source": "test", "format": "sgm", "replace": [["’", "'"]],
                  "files": {"en": "test-full/newstest2014-deen-src.en.sgm",
                            "de": "test-full/newstest2014-deen-ref.de.sgm"}}],
    },
}


def test_parallel_corpora_every_nth_and_sgm(wmt_sources, tmp_path):
    manifest = build_dataset("wmt", WMT_SPEC, wmt_sources, tmp_path / "orig", log=lambda m: None)
    orig = tmp_path / "orig"
    assert manifest["splits"] == {"train": 208, "valid": 2, "test": 2}
    # Lines 100 and 200 of the concatenation (awk NR % 100 == 0) are the validation set.
    assert read_lines(orig / "valid.en") == ["en 99", "nc en 49"]
    assert read_lines(orig / "valid.de") == ["de 99", "nc de 49"]
    train_en = read_lines(orig / "train.en")
    assert train_en[98:100] == ["en 98", "en 100"] and len(train_en) == 208
    assert "\r" not in (orig / "train.de").read_text()
    assert read_lines(orig / "test.en") == ["It's one.", "Two &amp; three"]
    assert read_lines(orig / "test.de") == ["Es ist eins.", "Zwei &amp; drei"]
    assert [c["lines"] for c in manifest["corpora"]["train"]] == [150, 60]
    assert not list(orig.glob(".extract-*"))


def test_parallel_corpora_missing_member(wmt_sources, tmp_path):
    spec = json.loads(json.dumps(WMT_SPEC))
    spec["recipe_options"]["train"][0]["files"]["de"] = "training/nope.de"
    with pytest.raises(InputError, match="nope.de"):
        build_dataset("wmt", spec, wmt_sources, tmp_path / "orig", log=lambda m: None)


def test_parallel_corpora_misaligned(tmp_path):
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        add(tar, "a.en", "1\n2\n3\n")
        add(tar, "a.de", "1\n2\n")
    spec = {"recipe": "parallel_corpora", "langs": ["en", "de"], "sources": ["bad"],
            "recipe_options": {"train": [{"source": "bad", "files": {"en": "a.en", "de": "a.de"}}],
                               "valid": {"every_nth_train": 2}, "test": {"every_nth_train": 3}}}
    with pytest.raises(InputError, match=r"a.en has 3 segments, a.de has 2 segments"):
        build_dataset("bad", spec, {"bad": str(bad)}, tmp_path / "orig", log=lambda m: None)


def test_iwslt_tags_and_split_parts(tmp_path):
    train = ("<url>http://x</url>\n<talkid>1</talkid>\n<title>A talk</title>\n"
             "<description>About it</description>\n  Hello there.  \n<reviewer>x</reviewer>\nBye.\n")
    train_de = ("<url>http://x</url>\n<talkid>1</talkid>\n<title>Ein Vortrag</title>\n"
                "<description>Darüber</description>\nHallo.\n<reviewer>x</reviewer>\nTschüss.\n")
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w:gz") as tar:
        add(tar, "de-en/train.tags.de-en.en", train)
        add(tar, "de-en/train.tags.de-en.de", train_de)
        add(tar, "de-en/IWSLT14.TED.tst2010.de-en.en.xml", sgm(["Test ’one’."], "ref"))
        add(tar, "de-en/IWSLT14.TED.tst2010.de-en.de.xml", sgm(["Test eins."], "src"))
    data = whole.getvalue()
    # The archive split in two parts (as UNv1.0's .tar.gz.00/.01) must read the same.
    parts = [tmp_path / "de-en.tar.gz.00", tmp_path / "de-en.tar.gz.01"]
    parts[0].write_bytes(data[: len(data) // 2])
    parts[1].write_bytes(data[len(data) // 2:])
    spec = {"recipe": "parallel_corpora", "langs": ["de", "en"], "sources": ["p0", "p1"],
            "recipe_options": {
                "train": [{"source": ["p0", "p1"], "format": "iwslt_tags",
                           "skip": ["<url>", "<talkid>", "<keywords>", "<reviewer"],
                           "files": {"de": "de-en/train.tags.de-en.de", "en": "de-en/train.tags.de-en.en"}}],
                "valid": {"every_nth_train": 3},
                "test": [{"source": ["p0", "p1"], "format": "xml", "replace": [["’", "'"]],
                          "files": {"de": "de-en/IWSLT14.TED.tst2010.de-en.de.xml",
                                    "en": "de-en/IWSLT14.TED.tst2010.de-en.en.xml"}}]}}
    build_dataset("iwslt", spec, {"p0": str(parts[0]), "p1": str(parts[1])}, tmp_path / "orig",
                  log=lambda m: None)
    orig = tmp_path / "orig"
    assert read_lines(orig / "train.en") == ["A talk", "About it", "Bye."]
    assert read_lines(orig / "valid.en") == ["Hello there."]
    assert read_lines(orig / "train.de")[:2] == ["Ein Vortrag", "Darüber"]
    assert read_lines(orig / "test.en") == ["Test 'one'."]


def test_per_language_sources(tmp_path):
    (tmp_path / "c.zh").write_text("一\n二\n", encoding="utf-8")
    (tmp_path / "c.en").write_text("one\ntwo\n", encoding="utf-8")
    gz = tmp_path / "c2.en.gz"
    gz.write_bytes(gzip.compress(b"three\n"))
    (tmp_path / "c2.zh").write_text("三\n", encoding="utf-8")
    spec = {"recipe": "parallel_corpora", "langs": ["zh", "en"], "sources": ["zh", "en", "zh2", "en2"],
            "recipe_options": {"train": [{"source": {"zh": "zh", "en": "en"}, "files": {"zh": None, "en": None}}],
                               "valid": {"every_nth_train": 2},
                               "test": [{"source": {"zh": "zh2", "en": "en2"}, "files": {"zh": None, "en": None}}]}}
    paths = {"zh": tmp_path / "c.zh", "en": tmp_path / "c.en", "zh2": tmp_path / "c2.zh", "en2": gz}
    build_dataset("cwmt", spec, paths, tmp_path / "orig", log=lambda m: None)
    assert read_lines(tmp_path / "orig" / "train.zh") == ["一"]
    assert read_lines(tmp_path / "orig" / "valid.en") == ["two"]
    assert read_lines(tmp_path / "orig" / "test.en") == ["three"]


def test_read_segments_text_keeps_unicode_separators(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("a\u2028b\nc\x85d\n\xff\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff"))
    assert list(read_segments(path, "text")) == ["a\u2028b".encode(), "c\x85d".encode(), b"\xff"]


# ---------------------------------------------------------------- multi-reference

def test_multi_reference(tmp_path):
    lines = []
    for i in (17, 3):
        lines += [f"S-{i}\tsource {i}", f"T-{i}\tref {i}"] + [f"R{k}-{i}\tref{k} {i}" for k in (1, 2, 10)]
    path = tmp_path / "wmt14-en-de.extra_refs.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    spec = {"recipe": "multi_reference", "langs": ["en", "de"], "sources": ["refs"]}
    manifest = build_dataset("refs", spec, {"refs": str(path)}, tmp_path / "orig", log=lambda m: None)
    orig = tmp_path / "orig"
    assert manifest["splits"] == {"test": 2} and manifest["additional_references"] == 3
    assert read_lines(orig / "test.en") == ["source 3", "source 17"]
    assert read_lines(orig / "test.de") == ["ref 3", "ref 17"]
    assert read_lines(orig / "test.ref10.de") == ["ref10 3", "ref10 17"]
    assert read_lines(orig / "test.ids") == ["3", "17"]


# ---------------------------------------------------------------- Debian descriptions (DDTP)

def _translation_file(path: Path, lang: str, stanzas: list[tuple[str, str, list[str]]]) -> str:
    """A Translation-<lang> file: (package, md5, description lines) per stanza, compressed by suffix."""
    import bz2
    import lzma
    text = "".join(f"Package: {pkg}\nDescription-md5: {md5}\nDescription-{lang}: {lines[0]}\n"
                   + "".join(f" {line}\n" for line in lines[1:]) + "\n" for pkg, md5, lines in stanzas)
    data = text.encode("utf-8")
    compress = {".xz": lzma.compress, ".bz2": bz2.compress, ".gz": gzip.compress}.get(path.suffix, lambda b: b)
    path.write_bytes(compress(data))
    return str(path)


def _ddtp_sources(tmp_path, n_filler=12):
    english = [
        ("alpha", "m1", ["tool for alpha things", "Alpha reads files. It writes them back.", ".",
                         "Features:", " * fast output", " * small memory use"]),
        ("beta", "m2", ["beta library", "Beta has one paragraph only."]),          # units differ: dropped
        ("gamma", "m3", ["gamma viewer", "It shows e.g. images and text. Nothing else."]),
        ("delta", "m4", ["delta", "Delta is untranslated."]),                       # no German stanza
        ("same", "m5", ["Python", "Same words."]),                                   # synopsis untranslated
    ]
    german = [
        ("alpha", "m1", ["Werkzeug für Alpha-Dinge", "Alpha liest Dateien. Es schreibt sie zurück.", ".",
                         "Funktionen:", " * schnelle Ausgabe", " * wenig Speicherbedarf"]),
        ("beta", "m2", ["Beta-Bibliothek", "Beta hat einen Absatz.", ".", "Und noch einen."]),
        ("gamma", "m3", ["Gamma-Betrachter", "Es zeigt z. B. Bilder und Text. Sonst nichts.", "Ja."]),
        ("same", "m5", ["Python", "Gleiche Wörter."]),
    ]
    for i in range(n_filler):
        english.append((f"pkg{i}", f"f{i}", [f"filler package number {i}"]))
        german.append((f"pkg{i}", f"f{i}", [f"Füllpaket Nummer {i}"]))
    return {"en": _translation_file(tmp_path / "Translation-en.xz", "en", english),
            "de": _translation_file(tmp_path / "Translation-de.bz2", "de", german)}


def test_debian_descriptions_pairs_units_and_sentences(tmp_path):
    paths = _ddtp_sources(tmp_path)
    spec = {"recipe": "debian_descriptions", "langs": ["en", "de"], "sources": ["en", "de"],
            "recipe_options": {"locale": "de", "valid_size": 2, "test_size": 2, "split_seed": 3}}
    manifest = build_dataset("ddtp", spec, paths, tmp_path / "orig", log=lambda m: None)
    orig = tmp_path / "orig"
    pairs = set()
    for split in ("train", "valid", "test"):
        pairs |= set(zip(read_lines(orig / f"{split}.en"), read_lines(orig / f"{split}.de")))
    # sentences split where both sides agree, list items as their own units
    assert ("Alpha reads files.", "Alpha liest Dateien.") in pairs
    assert ("It writes them back.", "Es schreibt sie zurück.") in pairs
    assert ("Features:", "Funktionen:") in pairs and ("fast output", "schnelle Ausgabe") in pairs
    # "e.g." and "z. B." do not end a sentence; the paragraph's sentence counts differ (2 vs 3), so
    # the unit stays whole
    assert ("It shows e.g. images and text. Nothing else.",
            "Es zeigt z. B. Bilder und Text. Sonst nichts. Ja.") in pairs
    # beta: different unit counts -> the whole description is dropped; delta: no translation;
    # "Python" = "Python": untranslated
    assert not any("Beta" in en or "elta" in en or en == "Python" for en, _ in pairs)
    assert ("Same words.", "Gleiche Wörter.") in pairs
    assert manifest["splits"] == {"train": len(pairs) - 4, "valid": 2, "test": 2}
    assert manifest["descriptions"] == {"en": 17, "de": 16}
    steps = {s["step"]: s["remaining"] for s in manifest["filters"]}
    assert steps["descriptions in both files (of 17 en, 16 de)"] == 16
    # the same inputs and seed give the same files
    build_dataset("ddtp", spec, paths, tmp_path / "again", log=lambda m: None)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "again" / f"{split}.de").read_bytes() == (orig / f"{split}.de").read_bytes()


def test_debian_descriptions_checks_the_languages(tmp_path):
    paths = _ddtp_sources(tmp_path)
    spec = {"recipe": "debian_descriptions", "langs": ["en", "de"], "sources": ["de", "en"],
            "recipe_options": {"locale": "de", "valid_size": 2, "test_size": 2}}
    with pytest.raises(InputError, match="expected Description-en fields, found Description-de"):
        build_dataset("ddtp", spec, paths, tmp_path / "orig", log=lambda m: None)
    (tmp_path / "bad.xz").write_bytes(b"not xz")
    with pytest.raises(InputError, match="bad.xz: cannot read the Translation file"):
        build_dataset("ddtp", {**spec, "sources": ["en", "de"]}, {"en": str(tmp_path / "bad.xz"), "de": paths["de"]},
                      tmp_path / "orig", log=lambda m: None)


@pytest.mark.parametrize("text, expected", [
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("Use e.g. this. Or z.B. that.", ["Use e.g. this.", "Or z.B. that."]),
    ("Version 2. It works.", ["Version 2.", "It works."]),
    ("A. Smith wrote it. Yes.", ["A. Smith wrote it.", "Yes."]),
    ("lower. case stays", ["lower. case stays"]),
])
def test_split_sentences(text, expected):
    from aeqa_model.data.recipes import split_sentences
    assert split_sentences(text) == expected


def test_unknown_recipe(tmp_path):
    with pytest.raises(InputError, match="unknown recipe"):
        build_dataset("x", {"recipe": "magic", "langs": ["en", "de"], "sources": []}, {}, tmp_path)


# ---------------------------------------------------------------- the paper's config

def _fake_sources(spec: dict, sources: dict, tmp: Path) -> dict[str, str]:
    """Archives with the members that a dataset's recipe_options name, 250 aligned lines each."""
    members: dict[tuple[str, ...], dict[str, str]] = {}
    for split in ("train", "valid", "test"):
        entries = spec["recipe_options"].get(split)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            fmt = entry.get("format", "text")
            for lang in spec["langs"]:
                src = entry["source"]
                names = (src[lang],) if isinstance(src, dict) else tuple(src if isinstance(src, list) else [src])
                lines = [f"{split} {lang} line {i}" for i in range(250)]
                if fmt in ("sgm", "xml"):
                    text = sgm(lines, "src")
                elif fmt == "iwslt_tags":
                    text = "<url>http://x</url>\n<talkid>1</talkid>\n<keywords>k</keywords>\n" + "\n".join(lines) + "\n"
                else:
                    text = "\n".join(lines) + "\n"
                members.setdefault(names, {})[entry["files"][lang] or ""] = text
    paths = {}
    for names, files in members.items():
        first = sources[names[0]]
        filename = first.get("filename") or first.get("urls", [first.get("url", "x")])[0].rsplit("/", 1)[-1]
        if first["type"] == "local":
            path = tmp / f"{names[0]}.txt"
            path.write_text(files[""], encoding="utf-8")
            paths[names[0]] = str(path)
            continue
        path = tmp / filename
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path, "w") as archive:
                for member, text in files.items():
                    archive.writestr(member, text)
            data = None
        else:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for member, text in files.items():
                    add(tar, member, text)
            data = buffer.getvalue()
        if data is not None and len(names) == 1:
            path.write_bytes(data)
        if len(names) == 1:
            paths[names[0]] = str(path)
        else:  # a split archive: cut the bytes into parts
            step = len(data) // len(names) + 1
            for k, name in enumerate(names):
                part = tmp / sources[name]["urls"][0].rsplit("/", 1)[-1]
                part.write_bytes(data[k * step:(k + 1) * step])
                paths[name] = str(part)
    return paths


@pytest.mark.parametrize("dataset", ["wmt14_ende", "wmt16_enro", "wmt17_zhen", "iwslt14_deen"])
def test_paper_config_recipes_run(dataset, tmp_path):
    import yaml

    config = yaml.safe_load((ROOT / "config" / "datasets-paper.yaml").read_text(encoding="utf-8"))
    spec = config["datasets"][dataset]
    paths = _fake_sources(spec, config["sources"], tmp_path)
    assert set(paths) == set(spec["sources"])
    manifest = build_dataset(dataset, spec, paths, tmp_path / "orig", log=lambda m: None)
    assert all(manifest["splits"][s] > 0 for s in ("train", "valid", "test"))
    for split in ("train", "valid", "test"):
        counts = {len(read_lines(tmp_path / "orig" / f"{split}.{lang}")) for lang in spec["langs"]}
        assert counts == {manifest["splits"][split]}


# ------------------------------------------------------- declared options

def test_every_recipe_declares_its_options_with_help_lines():
    from dataclasses import fields

    from aeqa_model.data.recipes import RECIPES

    for name, recipe in RECIPES.items():
        assert recipe.function.__name__ == name
        assert all(f.metadata["help"] for f in fields(recipe.options)), name


def test_recipe_options_are_checked_at_start_up_naming_the_key():
    """A typo used to be ignored (the recipe read the options with .get and a default):
    ``valid_sise: 5`` cut the default 400 sentences without a word (issue 28)."""
    from aeqa_model.data.recipes import recipe_problems

    assert recipe_problems("toy", SPEC) == [] and recipe_problems("wmt", WMT_SPEC) == []
    typo = {**SPEC, "recipe_options": {"valid_sise": 5, "max_words": "100"}}
    assert recipe_problems("toy", typo) == [
        "datasets.toy.recipe_options.max_words: '100' is not of type 'integer'",
        "datasets.toy.recipe_options.valid_sise: unknown option of recipe gettext_catalogs "
        "(known: locale, split_seed, valid_size, test_size, max_words)"]
    bad_entry = json.loads(json.dumps(WMT_SPEC))
    bad_entry["recipe_options"]["test"][0]["format"] = "sgml"
    del bad_entry["recipe_options"]["train"]
    problems = recipe_problems("wmt", bad_entry)
    assert "datasets.wmt.recipe_options: 'train' is a required property" in problems
    assert any(p.startswith("datasets.wmt.recipe_options.test: ") for p in problems)
    assert recipe_problems("x", {"recipe": "gettext"})[0].startswith("datasets.x.recipe: unknown recipe 'gettext'")


def test_the_workflow_refuses_a_bad_recipe_option_before_any_job():
    import yaml

    from aeqa_model import config as cfgmod

    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))
    name = next(iter(cfg["datasets"]))
    cfg["datasets"][name].setdefault("recipe_options", {})["test_sise"] = 3
    with pytest.raises(ValueError, match=rf"datasets\.{name}\.recipe_options\.test_sise: unknown option"):
        cfgmod.load(cfg, ROOT)


def test_a_recipe_reads_its_declared_defaults_and_refuses_bad_options(wheels, tmp_path):
    from aeqa_model.data.recipes.common import read_options
    from aeqa_model.data.recipes.gettext_catalogs import GettextCatalogsOptions

    options = read_options(GettextCatalogsOptions, "gettext_catalogs", "toy", {"recipe_options": {"locale": "de"}})
    assert (options.valid_size, options.test_size, options.max_words, options.split_seed) == (400, 600, 100, 1)
    with pytest.raises(InputError, match="valid_size: 0 is less than the minimum of 1"):
        build_dataset("toy", {**SPEC, "recipe_options": {"valid_size": 0}}, wheels, tmp_path / "orig",
                      log=lambda m: None)
    assert not (tmp_path / "orig").exists()
