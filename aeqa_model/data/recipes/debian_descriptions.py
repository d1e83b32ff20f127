"""Recipe ``debian_descriptions``: human translations of Debian package
descriptions (DDTP) from a release's ``Translation-en`` / ``Translation-<xx>``
files, served by Debian's mirrors (the fidelity testbed)."""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from aeqa_model.declared import declared
from aeqa_model.io import InputError

from .common import _WS, POSINT, HeldOutOptions, Recipe, _filter_split_write, _locale_key, _other_lang, read_options


@dataclass(frozen=True, kw_only=True)
class DebianDescriptionsOptions(HeldOutOptions):
    """The ``recipe_options`` of :func:`debian_descriptions`."""

    valid_size: int = declared(1000, "pairs cut for the valid split", schema=POSINT)
    test_size: int = declared(1000, "pairs cut for the test split", schema=POSINT)
    max_words: int = declared(80, "pairs with a longer side (whitespace-separated words) are dropped", schema=POSINT)
    sentence_split: bool = declared(True, "split each unit pair into sentences where both sides have as many")
    train_size: int | None = declared(None, "keep only this many training pairs (null: all; e.g. the GPU tier's "
                                            "rehearsal)", schema={"type": ["integer", "null"], "minimum": 1})

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
    options = read_options(DebianDescriptionsOptions, "debian_descriptions", dataset, spec)
    langs = list(spec["langs"])
    other = _other_lang(langs, dataset)
    locale = options.locale or other
    valid_size, test_size, seed, max_words = options.valid_size, options.test_size, options.split_seed, options.max_words
    sentence_split, train_size = options.sentence_split, options.train_size
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


RECIPE = Recipe(debian_descriptions, DebianDescriptionsOptions)
