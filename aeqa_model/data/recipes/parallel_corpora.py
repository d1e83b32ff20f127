"""Recipes: turn fetched source files into ``orig/{train,valid,test}.{lang}``.

A dataset's ``recipe`` key picks one function of :data:`RECIPES`. Every recipe
writes detokenized, line-aligned text (one segment a line) and returns a
manifest fragment with its counts; :func:`build_dataset` adds the source files
and their checksums and is what ``python -m aeqa_model.download.cli`` calls.

Recipes
-------
``gettext_catalogs``
    Human UI translations from the gettext ``.po`` catalogs inside Python
    wheels (the embedded demo); see :func:`gettext_catalogs`.
``debian_descriptions``
    Human translations of Debian package descriptions (DDTP) from a release's
    ``Translation-en`` / ``Translation-<xx>`` files, served by Debian's
    mirrors (the fidelity testbed); see :func:`debian_descriptions`.
``parallel_corpora``
    The WMT / IWSLT recipes: aligned files (plain text, SGML ``<seg>`` files,
    IWSLT ``train.tags`` files) read from ``.tgz``/``.tar``/``.zip``/``.gz``
    archives, concatenated per split; ``valid`` may be every n-th training
    line (fairseq's ``prepare-wmt14en2de.sh --icml17`` and
    ``prepare-iwslt14.sh``). See :func:`parallel_corpora`.
``multi_reference``
    Ott et al. (2018)'s additional references for newstest2014
    (``S-i`` / ``T-i`` / ``Rk-i`` lines); see :func:`multi_reference`.
"""
from __future__ import annotations

import contextlib
import gzip
import html
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Mapping, Sequence

from aeqa_model.io import InputError, atomic_open, write_lines

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------
# gettext catalogs (the demo)
# --------------------------------------------------------------------------

#: HTML/XML tags. A tag must start with a letter right after ``<`` (or ``</``),
#: so text such as ``a < b`` or ``<Answer: {question}>`` is not a tag.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
#: Tags that separate words when removed (block-level / line breaks).
_BREAK_TAG = re.compile(r"</?(?:br|p|div|li|ul|ol|tr|td|th|h[1-6]|hr)\b[^<>]*>", re.IGNORECASE)
#: Format placeholders, most specific first. Python ``%``-format (named and
#: positional; no space flag, so "50% of" is text), ``{{ name }}`` template
#: variables, and ``str.format`` fields (``{}``, ``{0}``, ``{name}``,
#: ``{order.code}``, ``{x!r:>10}``).
_PLACEHOLDER = re.compile(
    r"\{\{\s*[\w.|]+\s*\}\}"
    r"|%\([^()\s]+\)[#0+\-]*\d*(?:\.\d+)?[a-zA-Z]"
    r"|%(?:\d+\$)?[#0+\-]*\d*(?:\.\d+)?[sdifFeEgGxXcrub]"
    r"|\{(?:[A-Za-z_][\w.]*|\d*)(?:\[[^\]{}]*\])?(?:![rsa])?(?::[^{}]*)?\}"
)
_WS = re.compile(r"\s+")
PLACEHOLDER_PREFIX = "VAR"


def _strip_markup(text: str) -> str:
    """Collapse whitespace, drop HTML tags (keeping their text), unescape entities."""
    text = _BREAK_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    return _WS.sub(" ", text).strip()


def normalize_pair(source: str, target: str) -> tuple[str, str]:
    """Normalize an (English, translation) message pair consistently on both sides.

    * newlines, tabs and runs of whitespace (incl. no-break spaces) become one
      space; leading/trailing space is stripped;
    * HTML tags are dropped and their text kept (``<a href="%(link)s">docs</a>``
      becomes ``docs``); block tags such as ``<br>``/``<p>`` become a space;
      entities are unescaped (``&amp;`` -> ``&``);
    * every format placeholder (``%(name)s``, ``%s``, ``%1$d``, ``{0}``, ``{}``,
      ``{name}``, ``{order.code}``, ``{{ name }}``) becomes ``VAR1``, ``VAR2``, ...
      numbered by first appearance in the English side; the same placeholder
      gets the same token in the translation (so reordering survives), and a
      placeholder found only in the translation takes the next free number.
      These tokens are plain alphanumerics, so Moses, jieba and BPE keep them
      whole and a model can learn to copy them;
    * ``%%`` (a literal percent sign in Python format strings) becomes ``%``.
    """
    source, target = _strip_markup(source), _strip_markup(target)
    mapping: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        key = _WS.sub("", match.group(0))
        if key not in mapping:
            mapping[key] = f"{PLACEHOLDER_PREFIX}{len(mapping) + 1}"
        return mapping[key]

    source = _PLACEHOLDER.sub(replace, source).replace("%%", "%")
    target = _PLACEHOLDER.sub(replace, target).replace("%%", "%")
    return _WS.sub(" ", source).strip(), _WS.sub(" ", target).strip()


def _locale_key(locale: str) -> str:
    return locale.replace("-", "_").lower()


def _other_lang(langs: Sequence[str], dataset: str) -> str:
    if len(langs) != 2 or "en" not in langs:
        raise InputError(f"dataset {dataset!r}: recipe gettext_catalogs needs langs with 'en' and one other "
                         f"language, got {list(langs)}")
    return next(lang for lang in langs if lang != "en")


def gettext_catalogs(dataset: str, spec: Mapping, paths: Mapping[str, str], out_dir: str | os.PathLike,
                     log: Callable[[str], None] = print) -> dict:
    """Build a parallel corpus from the gettext catalogs of Python wheels.

    For each source wheel (in the dataset's ``sources`` order) every
    ``.../locale/<locale>/LC_MESSAGES/*.po`` (sorted by path; ``<locale>`` must
    equal ``recipe_options.locale`` up to case and ``-``/``_``, so ``de`` does
    not pick up ``de_Informal``) is parsed with polib. Entries are kept when
    they have a non-empty ``msgstr``, are not fuzzy, not obsolete and have no
    plural forms. Pairs are normalized with :func:`normalize_pair`, then
    dropped, in this order and each counted, when: either side is empty; the
    source equals the target verbatim; either side has more than
    ``max_words`` (default 100) whitespace-separated words; the exact pair was
    seen before; the English side was seen before (the first pair is kept, so
    no test source also occurs in train). The survivors are sorted, shuffled
    with ``split_seed`` and cut into ``valid_size`` / ``test_size`` / the rest
    for train.
    """
    import polib  # local: only this recipe needs it

    options = dict(spec.get("recipe_options") or {})
    langs = list(spec["langs"])
    other = _other_lang(langs, dataset)
    locale = options.get("locale", other)
    valid_size = int(options.get("valid_size", 400))
    test_size = int(options.get("test_size", 600))
    seed = int(options.get("split_seed", 1))
    max_words = int(options.get("max_words", 100))
    po_pattern = re.compile(r"(?:^|/)locale/([^/]+)/LC_MESSAGES/[^/]+\.po$")

    per_source = []
    pairs: list[tuple[str, str]] = []
    for name in spec["sources"]:
        path = paths[name]
        entries_read = kept_entries = 0
        po_files = []
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise InputError(f"{path} (source {name!r}): not a zip/wheel file; delete it from the cache "
                             f"and run the download again") from None
        with archive:
            members = sorted(m for m in archive.namelist()
                             if (hit := po_pattern.search(m)) and _locale_key(hit.group(1)) == _locale_key(locale))
            for member in members:
                raw = archive.read(member)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(f"{path}!{member}: not UTF-8 ({err.reason}); this recipe expects UTF-8 "
                                     f"catalogs") from None
                try:
                    catalog = polib.pofile(text)
                except (OSError, ValueError) as err:
                    raise InputError(f"{path}!{member}: cannot parse the .po file: {err}") from None
                po_files.append(member)
                for entry in catalog:
                    entries_read += 1
                    if (not entry.msgstr or entry.obsolete or entry.fuzzy or entry.msgid_plural):
                        continue
                    kept_entries += 1
                    pairs.append((entry.msgid, entry.msgstr))
        if not members:
            log(f"[recipe] {dataset}: warning: no locale/{locale}/LC_MESSAGES/*.po in {path}")
        per_source.append({"source": name, "po_files": po_files, "entries_read": entries_read,
                           "translated_entries": kept_entries})
        log(f"[recipe] {dataset}: {name}: {len(po_files)} catalogs, {entries_read} entries, "
            f"{kept_entries} translated (non-fuzzy, non-plural)")

    steps = [{"step": "translated entries (non-empty msgstr, not fuzzy/obsolete/plural)", "remaining": len(pairs)}]
    normalized = [normalize_pair(src, tgt) for src, tgt in pairs]
    sizes = _filter_split_write(dataset, normalized, steps, langs, out_dir, max_words=max_words,
                                valid_size=valid_size, test_size=test_size, seed=seed,
                                what=f"locale {locale!r}", log=log)
    return {"recipe": "gettext_catalogs", "locale": locale, "other_lang": other,
            "normalization": "whitespace collapsed, HTML tags dropped, entities unescaped, "
                             f"placeholders -> {PLACEHOLDER_PREFIX}1..n (see recipes.normalize_pair)",
            "per_source": per_source, "filters": steps, "split_seed": seed, "splits": sizes}


def _filter_split_write(dataset: str, pairs: list[tuple[str, str]], steps: list[dict], langs: Sequence[str],
                        out_dir: str | os.PathLike, *, max_words: int, valid_size: int, test_size: int,
                        seed: int, what: str, log: Callable[[str], None],
                        train_size: int | None = None) -> dict[str, int]:
    """Filter (en, xx) pairs, dedup them, then shuffle and cut valid / test / train.

    Pairs are dropped, in this order and each counted, when either side is
    empty, the source equals the target verbatim (untranslated), or either
    side has more than ``max_words`` whitespace-separated words. Dedup keeps the first occurrence, so the result depends only on the
    (deterministic) reading order; keeping one pair per English side means no
    test source also occurs in train. The survivors are sorted, shuffled with
    ``seed`` and cut into ``valid_size`` / ``test_size`` / the rest for train (its
    first ``train_size`` only, when given: a smaller run on the same data),
    written as ``{split}.{lang}`` (``en`` is column 0). Appends the counts to
    ``steps`` and returns the split sizes.
    """
    filters: list[tuple[str, Callable[[tuple[str, str]], bool]]] = [
        ("non-empty after normalization", lambda p: bool(p[0]) and bool(p[1])),
        ("source != target", lambda p: p[0] != p[1]),
        (f"at most {max_words} words per side", lambda p: len(p[0].split()) <= max_words
         and len(p[1].split()) <= max_words),
    ]
    for label, keep in filters:
        pairs = [p for p in pairs if keep(p)]
        steps.append({"step": label, "remaining": len(pairs)})
    unique_pairs = list(OrderedDict.fromkeys(pairs))
    steps.append({"step": "dedup (en, xx) pair", "remaining": len(unique_pairs)})
    seen: set[str] = set()
    unique_source = []
    for src, tgt in unique_pairs:
        if src not in seen:
            seen.add(src)
            unique_source.append((src, tgt))
    steps.append({"step": "dedup en (first kept)", "remaining": len(unique_source)})

    total = len(unique_source)
    if total <= valid_size + test_size:
        raise InputError(f"dataset {dataset!r}: only {total} pairs for {what} after filtering, "
                         f"not enough for valid_size={valid_size} + test_size={test_size}; "
                         f"lower them or add sources")
    ordered = sorted(unique_source)
    random.Random(seed).shuffle(ordered)
    splits = {"valid": ordered[:valid_size], "test": ordered[valid_size:valid_size + test_size],
              "train": ordered[valid_size + test_size:][:train_size]}
    out_dir = Path(out_dir)
    for split, split_pairs in splits.items():
        for lang in langs:
            column = 0 if lang == "en" else 1
            write_lines(out_dir / f"{split}.{lang}", (p[column] for p in split_pairs))
    sizes = {split: len(splits[split]) for split in SPLITS}
    log(f"[recipe] {dataset}: {total} pairs -> train {sizes['train']}, valid {sizes['valid']}, "
        f"test {sizes['test']}")
    return sizes


# --------------------------------------------------------------------------
# Debian package descriptions (DDTP)
# --------------------------------------------------------------------------

#: A sentence end: ``.``, ``!``, ``?`` or ``:`` then space then what can start
#: a sentence (a capital, a digit, a quote or a bracket).
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[\"'(\[0-9A-ZÄÖÜÀ-Ý])")
#: Words whose final period does not end a sentence (lower-cased, period dropped).
_ABBREVIATIONS = frozenset("""e.g i.e etc vs cf approx incl z.b d.h u.a bzw ca usw ggf evtl inkl
    nr dr mr mrs ms prof st no vol fig resp""".split())
#: A line that starts a list item inside a paragraph of a long description.
_LIST_ITEM = re.compile(r"^(?:[*+\-o\u2022]|\d+[.)])\s")


def split_sentences(text: str) -> list[str]:
    """Split running text at sentence ends, not after abbreviations or initials (one letter).

    Conservative by design: a wrong split on one side only changes the count,
    and a unit whose two sides differ in count is kept whole
    (:func:`debian_descriptions`).
    """
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start:match.start()].split()
        last = before[-1].rstrip(".!?:").lower() if before else ""
        if text[match.start() - 1] == "." and ((len(last) == 1 and last.isalpha()) or last in _ABBREVIATIONS
                                               or re.fullmatch(r"(?:\w\.)+\w?", last)):
            continue
        pieces.append(text[start:match.start()].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [piece for piece in pieces if piece]


def _read_text(path: str) -> str:
    """A Translation file, plain or compressed (``.xz``, ``.bz2``, ``.gz``), as text."""
    import bz2
    import lzma
    opener = {".xz": lzma.open, ".bz2": bz2.open, ".gz": gzip.open}.get(Path(path).suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the Translation file ({err}); delete it from the cache "
                         f"and download again") from None


def parse_translation_file(path: str) -> tuple[str | None, dict[str, list[str]]]:
    """Parse a Debian ``Translation-<lang>`` file (deb822 stanzas).

    Returns the language of its ``Description-<lang>`` fields and a map
    ``Description-md5`` -> description lines (the synopsis, then the long
    description's continuation lines without their first space; ``.`` marks
    a paragraph break). A stanza without an md5 or a description is skipped.
    """
    lang = None
    descriptions: dict[str, list[str]] = {}
    for stanza in _read_text(path).split("\n\n"):
        md5, lines = None, []
        stanza_lines = stanza.split("\n")
        for index, line in enumerate(stanza_lines):
            if line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
            elif line.startswith("Description-") and ":" in line:
                field, synopsis = line.split(":", 1)
                lang = lang or field[len("Description-"):]
                lines = [synopsis.strip()]
                for more in stanza_lines[index + 1:]:
                    if not more.startswith(" "):
                        break
                    lines.append(more[1:])
        if md5 and lines and lines[0]:
            descriptions[md5] = lines
    return lang, descriptions


def description_units(lines: Sequence[str]) -> list[str]:
    """The translatable units of one description: the synopsis, then each paragraph
    of the long description, with list items as units of their own."""
    units = [lines[0]]
    current: list[str] = []

    def close() -> None:
        if current:
            units.append(_WS.sub(" ", " ".join(current)).strip())
            current.clear()

    for line in lines[1:]:
        if line.strip() == ".":
            close()
        elif _LIST_ITEM.match(line.strip()):
            close()
            current.append(_LIST_ITEM.sub("", line.strip(), count=1))
        else:
            current.append(line.strip())
    close()
    return [unit for unit in units if unit]


def debian_descriptions(dataset: str, spec: Mapping, paths: Mapping[str, str], out_dir: str | os.PathLike,
                        log: Callable[[str], None] = print) -> dict:
    """Human translations of Debian package descriptions (the Debian Description
    Translation Project), from a release's ``Translation-en`` and ``Translation-<xx>``.

    ``sources`` names the English file first, then the translated one (plain,
    ``.xz``, ``.bz2`` or ``.gz``); the second file's ``Description-<xx>``
    field must match ``recipe_options.locale``. Descriptions are joined on
    their ``Description-md5`` (the md5 of the English text a translation was
    made from, so a pair is never a stale translation). Each description is
    cut into units (:func:`description_units`: synopsis, paragraphs, list
    items); a description whose two sides have a different number of units is
    dropped. With ``sentence_split`` (default true) each unit pair is split
    into sentences (:func:`split_sentences`) where both sides have the same
    number, and kept whole otherwise. Then, each counted: empty sides,
    source == target (untranslated), more than ``max_words`` (default 80)
    words a side, and the dedup and split of :func:`_filter_split_write`.
    """
    options = dict(spec.get("recipe_options") or {})
    langs = list(spec["langs"])
    other = _other_lang(langs, dataset)
    locale = options.get("locale", other)
    valid_size = int(options.get("valid_size", 1000))
    test_size = int(options.get("test_size", 1000))
    seed = int(options.get("split_seed", 1))
    max_words = int(options.get("max_words", 80))
    sentence_split = bool(options.get("sentence_split", True))
    train_size = int(options["train_size"]) if options.get("train_size") else None  # e.g. the GPU tier's rehearsal
    if len(spec["sources"]) != 2:
        raise InputError(f"dataset {dataset!r}: recipe debian_descriptions needs two sources, the "
                         f"Translation-en file then the Translation-{locale} file; got {list(spec['sources'])}")
    english_name, translated_name = spec["sources"]
    english_lang, english = parse_translation_file(paths[english_name])
    found_lang, translated = parse_translation_file(paths[translated_name])
    for name, want, got in ((english_name, "en", english_lang), (translated_name, locale, found_lang)):
        if got is None or _locale_key(got) != _locale_key(want):
            raise InputError(f"{paths[name]} (source {name!r}): expected Description-{want} fields, found "
                             f"{'none' if got is None else 'Description-' + got}; list the Translation-en "
                             f"source first and the Translation-{locale} one second")
    shared = sorted(set(english) & set(translated))
    steps = [{"step": f"descriptions in both files (of {len(english)} en, {len(translated)} {locale})",
              "remaining": len(shared)}]
    unit_pairs: list[tuple[str, str]] = []
    for md5 in shared:
        src_units, tgt_units = description_units(english[md5]), description_units(translated[md5])
        if len(src_units) == len(tgt_units):
            unit_pairs.extend(zip(src_units, tgt_units))
    steps.append({"step": "units of descriptions with as many units a side", "remaining": len(unit_pairs)})
    pairs: list[tuple[str, str]] = []
    if sentence_split:
        for src, tgt in unit_pairs:
            src_sentences, tgt_sentences = split_sentences(src), split_sentences(tgt)
            if len(src_sentences) == len(tgt_sentences):
                pairs.extend(zip(src_sentences, tgt_sentences))
            else:
                pairs.append((src, tgt))
        steps.append({"step": "sentence split where both sides agree", "remaining": len(pairs)})
    else:
        pairs = unit_pairs
    pairs = [(_WS.sub(" ", s).strip(), _WS.sub(" ", t).strip()) for s, t in pairs]
    sizes = _filter_split_write(dataset, pairs, steps, langs, out_dir, max_words=max_words,
                                valid_size=valid_size, test_size=test_size, seed=seed,
                                what=f"locale {locale!r}", log=log, train_size=train_size)
    return {"recipe": "debian_descriptions", "locale": locale, "other_lang": other,
            "sentence_split": sentence_split, "descriptions": {"en": len(english), locale: len(translated)},
            "filters": steps, "split_seed": seed, "splits": sizes}


# --------------------------------------------------------------------------
# archives and line readers (WMT / IWSLT)
# --------------------------------------------------------------------------

class _ConcatReader(io.RawIOBase):
    """Read several files as one stream (archives split into parts, e.g. UNv1.0 ``.tar.gz.00``)."""

    def __init__(self, paths: Sequence[str]):
        self._paths = list(paths)
        self._handle: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._handle is None:
                if not self._paths:
                    return 0
                self._handle = open(self._paths.pop(0), "rb")
            count = self._handle.readinto(buffer)
            if count:
                return count
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        super().close()


def _is_tar(paths: Sequence[str]) -> bool:
    name = paths[0].lower()
    return name.endswith((".tgz", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz")) or ".tar.gz." in name \
        or ".tgz." in name


def extract_members(paths: Sequence[str], members: Iterable[str], dest: str | os.PathLike,
                    source_name: str = "") -> dict[str, Path]:
    """Extract the named ``members`` of an archive (given as one path or its parts) into ``dest``.

    Tar archives (any compression, also split into parts) are read in one
    streaming pass; zip archives by name. A member name ``None`` or ``""``
    means the file itself (``.gz`` files are decompressed). Returns
    member -> extracted path. A missing member is an InputError that lists a
    few members that do exist.
    """
    wanted = list(dict.fromkeys(members))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    label = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"
    found: dict[str, Path] = {}
    if any(not m for m in wanted):
        if len(paths) != 1:
            raise InputError(f"source {source_name!r}: a multi-part source needs member names")
        path = Path(paths[0])
        if path.name.lower().endswith(".gz") and not _is_tar(paths):
            target = dest / path.name[:-3]
            try:
                with gzip.open(path, "rb") as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (OSError, EOFError) as err:
                raise InputError(f"{path} (source {source_name!r}): not a valid gzip file ({err}); "
                                 f"delete it from the cache and download again") from None
            found[""] = target
        else:
            found[""] = path
        wanted = [m for m in wanted if m]
    if not wanted:
        return found
    try:
        if _is_tar(paths):
            with _ConcatReader(paths) as raw, io.BufferedReader(raw, 1 << 20) as buffered, \
                    tarfile.open(fileobj=buffered, mode="r|*") as tar:
                for info in tar:
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    if name in wanted and info.isfile():
                        target = dest / f"{len(found)}_{Path(name).name}"
                        with tar.extractfile(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        found[name] = target
                        if all(m in found for m in wanted):
                            break
            available_hint = ""
            if not all(m in found for m in wanted):
                with _ConcatReader(paths) as raw, io.BufferedReader(raw, 1 << 20) as buffered, \
                        tarfile.open(fileobj=buffered, mode="r|*") as tar:
                    names = [i.name for i in tar if i.isfile()][:15]
                available_hint = ", ".join(names)
        elif paths[0].lower().endswith(".zip"):
            with zipfile.ZipFile(paths[0]) as archive:
                names = archive.namelist()
                for member in wanted:
                    if member in names:
                        target = dest / f"{len(found)}_{Path(member).name}"
                        with archive.open(member) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        found[member] = target
                available_hint = ", ".join(names[:15])
        else:
            raise InputError(f"{label} (source {source_name!r}): members {wanted} requested, but the file is "
                             f"not a .tgz/.tar/.zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(f"{label} (source {source_name!r}): cannot read the archive ({err}); "
                         f"delete it from the cache and download again") from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise InputError(f"{label} (source {source_name!r}): member(s) {missing} not in the archive; "
                         f"it has e.g. {available_hint}. Fix 'files' in the dataset's recipe_options.")
    return found


_SEG = re.compile(rb"<seg[^>]*>\s*(.*?)\s*</seg>", re.IGNORECASE)
#: Metadata lines fairseq's prepare-iwslt14.sh removes with ``grep -v`` (a substring anywhere).
IWSLT_SKIP_DEFAULT = ("<url>", "<talkid>", "<keywords>")
_IWSLT_DROP_TAGS = re.compile(rb"</?(?:title|description)>")


def read_segments(path: str | os.PathLike, fmt: str, skip: Sequence[str] | None = None) -> Iterator[bytes]:
    """Yield the segments of a corpus file as bytes lines (without line ends).

    ``text``: one segment a line (split on ``\\n`` only, a trailing ``\\r``
    removed; other separators such as U+2028 stay inside the line, so lines
    never shift). ``sgm``/``xml``: the text of every ``<seg ...>`` line, tags
    and surrounding space removed (as fairseq's ``grep '<seg id' | sed``).
    ``iwslt_tags``: an IWSLT ``train.tags`` file: lines containing one of
    ``skip`` (default :data:`IWSLT_SKIP_DEFAULT`, fairseq's
    ``prepare-iwslt14.sh``: ``<url>``, ``<talkid>``, ``<keywords>``) are
    dropped, ``<title>``/``<description>`` tags removed (their text kept) and
    the line stripped.
    """
    skip_bytes = [s.encode("utf-8") for s in (IWSLT_SKIP_DEFAULT if skip is None else skip)]
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            if fmt == "text":
                yield line
            elif fmt in ("sgm", "xml"):
                if b"<seg" in line:
                    match = _SEG.search(line)
                    if match is None:
                        raise InputError(f"{path}: cannot parse the <seg> line {line[:80]!r}")
                    yield match.group(1)
            elif fmt == "iwslt_tags":
                if any(tag in line for tag in skip_bytes):
                    continue
                yield _IWSLT_DROP_TAGS.sub(b"", line).strip()
            else:
                raise InputError(f"{path}: unknown corpus format {fmt!r} (text, sgm, xml, iwslt_tags)")


def _apply_replacements(line: bytes, replacements: Sequence[Sequence[str]]) -> bytes:
    for old, new in replacements:
        line = line.replace(old.encode("utf-8"), new.encode("utf-8"))
    return line


def _corpus_pairs(entry: Mapping, langs: Sequence[str], paths: Mapping[str, str], workdir: Path,
                  dataset: str) -> tuple[Iterator[tuple[bytes, ...]], dict]:
    """Aligned segment tuples (one per lang) of one corpus entry of ``recipe_options``.

    ``source`` is a source name, a list of names (the parts of one split
    archive, read as one stream), or a mapping ``{lang: name}`` when each
    language comes from its own source (e.g. two local text files).
    """
    spec_source = entry.get("source")
    if isinstance(spec_source, Mapping):
        per_lang = {lang: [spec_source.get(lang)] for lang in langs}
    else:
        names = spec_source if isinstance(spec_source, list) else [spec_source]
        per_lang = {lang: names for lang in langs}
    label = spec_source if isinstance(spec_source, str) else json.dumps(spec_source, ensure_ascii=False)
    for names in per_lang.values():
        for source in names:
            if source not in paths:
                raise InputError(f"dataset {dataset!r}: corpus entry {label} uses source {source!r}, which is "
                                 f"not in the dataset's sources list")
    files = entry.get("files") or {}
    missing = [lang for lang in langs if lang not in files]
    if missing:
        raise InputError(f"dataset {dataset!r}: corpus entry {label} has no file for language(s) {missing} "
                         f"under 'files' (use null for the source file itself)")
    fmt = entry.get("format", "text")
    files_by_lang: dict[str, Path] = {}
    groups: dict[tuple[str, ...], list[str]] = {}
    for lang in langs:
        groups.setdefault(tuple(per_lang[lang]), []).append(lang)
    for names, group_langs in groups.items():
        extracted = extract_members([paths[n] for n in names], [files[lang] for lang in group_langs],
                                    workdir / f"x{len(list(workdir.iterdir()))}", names[0])
        for lang in group_langs:
            files_by_lang[lang] = extracted[files[lang] or ""]
    replacements = entry.get("replace") or []
    skip = entry.get("skip")
    info = {"source": spec_source, "files": {lang: files[lang] for lang in langs}, "format": fmt, "lines": 0}

    def generate() -> Iterator[tuple[bytes, ...]]:
        iterators = [read_segments(files_by_lang[lang], fmt, skip) for lang in langs]
        count = 0
        while True:
            row = [next(it, None) for it in iterators]
            if all(item is None for item in row):
                break
            if any(item is None for item in row):
                counts = {lang: count + sum(1 for _ in it) + (row[i] is not None)
                          for i, (lang, it) in enumerate(zip(langs, iterators))}
                raise InputError(
                    f"dataset {dataset!r}: {label}: files are not aligned: "
                    + ", ".join(f"{files[lang] or paths[per_lang[lang][0]]} has {counts[lang]} segments"
                                for lang in langs)
                    + "; check the 'files' and 'format' of this corpus entry")
            count += 1
            yield tuple(_apply_replacements(item, replacements) for item in row)
        info["lines"] = count

    return generate(), info


def parallel_corpora(dataset: str, spec: Mapping, paths: Mapping[str, str], out_dir: str | os.PathLike,
                     log: Callable[[str], None] = print) -> dict:
    """Concatenate aligned corpus files per split (the WMT and IWSLT recipes).

    ``recipe_options`` keys:

    ``train``, ``valid``, ``test``
        Lists of corpus entries ``{source: NAME (or a list of parts), files:
        {lang: member path inside the archive, or null for the file itself},
        format: text|sgm|xml|iwslt_tags, replace: [[old, new], ...]}``,
        concatenated in order. ``valid`` (and ``test``) may instead be
        ``{every_nth_train: N}``: every N-th line of the concatenated training
        data (1-based, ``awk 'NR % N == 0'``) goes there and is removed from
        train, as in fairseq's WMT14 ``--icml17`` (N=100) and IWSLT14 (N=23)
        recipes.

    Lines are copied as bytes, so invalid UTF-8 in a raw corpus reaches the
    prepare stage, which counts and drops it on train. The text is not
    otherwise changed (no tokenization, no cleaning).
    """
    options = dict(spec.get("recipe_options") or {})
    langs = list(spec["langs"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nth: dict[str, int] = {}
    for split in ("valid", "test"):
        value = options.get(split)
        if isinstance(value, Mapping):
            if "every_nth_train" not in value:
                raise InputError(f"dataset {dataset!r}: recipe_options.{split} must be a list of corpus "
                                 f"entries or {{every_nth_train: N}}")
            nth[split] = int(value["every_nth_train"])
    if not options.get("train"):
        raise InputError(f"dataset {dataset!r}: recipe_options.train lists no corpus")
    manifest: dict = {"recipe": "parallel_corpora", "corpora": {}, "splits": {}}
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=out_dir) as tmp:
        workdir = Path(tmp)
        # Train first, routing every n-th line to the held-out split(s).
        with _SplitWriter(out_dir, langs, ["train", *nth]) as writer:
            line_no = 0
            manifest["corpora"]["train"] = []
            for entry in options["train"]:
                pairs, info = _corpus_pairs(entry, langs, paths, workdir, dataset)
                for row in pairs:
                    line_no += 1
                    target = next((s for s, n in nth.items() if line_no % n == 0), "train")
                    writer.write(target, row)
                manifest["corpora"]["train"].append(info)
                log(f"[recipe] {dataset}: train: {info['source']}: {info['lines']} lines")
                _clear(workdir)
            manifest["splits"].update(writer.counts)
        for split in ("valid", "test"):
            if split in nth:
                manifest["corpora"][split] = {"every_nth_train": nth[split]}
                continue
            entries = options.get(split) or []
            if not entries:
                raise InputError(f"dataset {dataset!r}: recipe_options.{split} lists no corpus")
            manifest["corpora"][split] = []
            with _SplitWriter(out_dir, langs, [split]) as writer:
                for entry in entries:
                    pairs, info = _corpus_pairs(entry, langs, paths, workdir, dataset)
                    for row in pairs:
                        writer.write(split, row)
                    manifest["corpora"][split].append(info)
                    log(f"[recipe] {dataset}: {split}: {info['source']}: {info['lines']} lines")
                    _clear(workdir)
                manifest["splits"].update(writer.counts)
    for split in SPLITS:
        if not manifest["splits"].get(split):
            raise InputError(f"dataset {dataset!r}: split {split} came out empty; check recipe_options")
    manifest["splits"] = {split: manifest["splits"][split] for split in SPLITS}
    log(f"[recipe] {dataset}: " + ", ".join(f"{s} {n}" for s, n in manifest["splits"].items()))
    return manifest


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


class _SplitWriter:
    """Atomic binary writers for ``{split}.{lang}`` files, committed together on success."""

    def __init__(self, out_dir: Path, langs: Sequence[str], splits: Sequence[str]):
        self.out_dir, self.langs, self.splits = out_dir, list(langs), list(splits)
        self.counts = {split: 0 for split in splits}
        self._handles: dict[tuple[str, str], IO[bytes]] = {}

    def __enter__(self) -> "_SplitWriter":
        self._stack = contextlib.ExitStack()
        self._stack.__enter__()
        for split in self.splits:
            for lang in self.langs:
                self._handles[split, lang] = self._stack.enter_context(
                    atomic_open(self.out_dir / f"{split}.{lang}", "wb"))
        return self

    def write(self, split: str, row: Sequence[bytes]) -> None:
        for lang, item in zip(self.langs, row):
            self._handles[split, lang].write(item + b"\n")
        self.counts[split] += 1

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)


# --------------------------------------------------------------------------
# multiple references (Ott et al. 2018)
# --------------------------------------------------------------------------

_MULTI_REF_LINE = re.compile(r"^(S|T|R(\d+))-(\d+)\s(.*)$")


def multi_reference(dataset: str, spec: Mapping, paths: Mapping[str, str], out_dir: str | os.PathLike,
                    log: Callable[[str], None] = print) -> dict:
    """Unpack Ott et al. (2018)'s additional newstest2014 references.

    The file (gzip or plain) has lines ``S-i<TAB>source``, ``T-i<TAB>original
    reference`` and ``Rk-i<TAB>k-th additional reference`` where ``i`` is the
    sentence's index in the WMT'14 test set. Writes, for the sentences in
    increasing ``i``: ``test.{src}`` (sources), ``test.{tgt}`` (original
    references), ``test.ref{k}.{tgt}`` for k = 1..K, and ``test.ids`` (the
    indices ``i``). This is an evaluation-only dataset: there is no train or
    valid split. ``recipe_options.src_lang`` (default ``en``) names the
    language of the ``S`` lines.
    """
    options = dict(spec.get("recipe_options") or {})
    langs = list(spec["langs"])
    src = options.get("src_lang", "en")
    tgt = next(lang for lang in langs if lang != src)
    name = spec["sources"][0]
    path = Path(paths[name])
    opener = gzip.open if path.name.endswith(".gz") else open
    rows: dict[int, dict[str, str]] = {}
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                match = _MULTI_REF_LINE.match(line)
                if match is None:
                    raise InputError(f"{path}:{line_no}: expected 'S-i', 'T-i' or 'Rk-i' followed by a tab "
                                     f"and text, got {line[:60]!r}")
                kind, index, text = match.group(1), int(match.group(3)), match.group(4).strip()
                if kind in rows.setdefault(index, {}):
                    raise InputError(f"{path}:{line_no}: duplicate {kind}-{index}")
                rows[index][kind] = text
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the multi-reference file ({err})") from None
    if not rows:
        raise InputError(f"{path}: no S-/T-/R- lines found")
    ref_kinds = sorted({k for row in rows.values() for k in row if k.startswith("R")}, key=lambda k: int(k[1:]))
    out_dir = Path(out_dir)
    ids = sorted(rows)
    for index in ids:
        missing = [k for k in ["S", "T", *ref_kinds] if k not in rows[index]]
        if missing:
            raise InputError(f"{path}: sentence {index} lacks {missing}")
    write_lines(out_dir / f"test.{src}", (rows[i]["S"] for i in ids))
    write_lines(out_dir / f"test.{tgt}", (rows[i]["T"] for i in ids))
    for kind in ref_kinds:
        write_lines(out_dir / f"test.ref{kind[1:]}.{tgt}", (rows[i][kind] for i in ids))
    write_lines(out_dir / "test.ids", (str(i) for i in ids))
    log(f"[recipe] {dataset}: {len(ids)} sentences, {len(ref_kinds)} additional references each")
    return {"recipe": "multi_reference", "sentences": len(ids), "additional_references": len(ref_kinds),
            "files": [f"test.{src}", f"test.{tgt}"] + [f"test.ref{k[1:]}.{tgt}" for k in ref_kinds] + ["test.ids"],
            "splits": {"test": len(ids)}}


# --------------------------------------------------------------------------

RECIPES: dict[str, Callable[..., dict]] = {
    "gettext_catalogs": gettext_catalogs,
    "debian_descriptions": debian_descriptions,
    "parallel_corpora": parallel_corpora,
    "multi_reference": multi_reference,
}


def build_dataset(dataset: str, spec: Mapping, fetched: Mapping, out_dir: str | os.PathLike,
                  log: Callable[[str], None] = print) -> dict:
    """Run the dataset's recipe on fetched sources and return the full manifest.

    ``fetched`` maps source name -> :class:`~aeqa_model.data.download.FetchedSource`
    (or a plain path). The manifest lists the source files with their sha256
    and the recipe's counts; writing it is left to the caller, which writes it
    last so that its presence means the split files are complete.
    """
    recipe = spec.get("recipe")
    if recipe not in RECIPES:
        raise InputError(f"dataset {dataset!r}: unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    if not spec.get("langs") or not spec.get("sources"):
        raise InputError(f"dataset {dataset!r}: needs 'langs' and 'sources'")
    paths = {name: str(getattr(item, "path", item)) for name, item in fetched.items()}
    missing = [name for name in spec["sources"] if name not in paths]
    if missing:
        raise InputError(f"dataset {dataset!r}: sources {missing} were not fetched")
    result = RECIPES[recipe](dataset, spec, paths, out_dir, log=log)
    sources = []
    for name in spec["sources"]:
        item = fetched[name]
        if hasattr(item, "to_dict"):
            entry = item.to_dict()
        else:
            from aeqa_model.data.download import file_digest
            entry = {"name": name, "path": paths[name], "sha256": file_digest(paths[name]),
                     "size": os.path.getsize(paths[name])}
        entry["file"] = os.path.basename(entry["path"])
        sources.append(entry)
    return {"dataset": dataset, "langs": list(spec["langs"]), "recipe": recipe,
            "recipe_options": dict(spec.get("recipe_options") or {}), "sources": sources, **result}
