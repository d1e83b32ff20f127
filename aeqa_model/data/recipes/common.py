"""What several recipes share: the split names (:data:`SPLITS`), the
whitespace pattern, the language/locale checks and the filter / dedup / split /
write step.

``gettext_catalogs`` and ``debian_descriptions`` both build (en, xx) pairs of
one dataset language and hand them to :func:`_filter_split_write`, which
filters, dedups, shuffles, cuts and writes the splits; both check their
``langs`` and locale with :func:`_other_lang` and :func:`_locale_key`.
"""
from __future__ import annotations

import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from aeqa_model.declared import closed_schema, declared, from_values
from aeqa_model.io import InputError, write_lines

SPLITS = ("train", "valid", "test")
_WS = re.compile(r"\s+")

POSINT = {"minimum": 1}


class Recipe(NamedTuple):
    """A recipe: its function, ``function(dataset, spec, paths, out_dir, log=print) ->
    manifest fragment``, and the dataclass declaring its ``recipe_options``. A module of
    this package that sets ``RECIPE = Recipe(...)`` is the recipe named after it."""

    function: Callable[..., dict]
    options: type


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    """The ``recipe_options`` of a recipe that takes none."""


@dataclass(frozen=True, kw_only=True)
class HeldOutOptions:
    """What the recipes that cut their own held-out splits from one pool of pairs
    (gettext_catalogs, debian_descriptions) share; each declares its sizes and word
    limit itself, with its own defaults."""

    locale: str | None = declared(None, "locale of the translated side (default: the dataset's non-English "
                                        "language)", schema={"type": ["string", "null"]})
    split_seed: int = declared(1, "seed of the shuffle that cuts valid / test / train", schema={"minimum": 0})


def option_problems(options, recipe: str, where: str, values) -> list[str]:
    """Why ``values`` (a dataset's ``recipe_options``, at config path ``where``) are not
    valid options of ``recipe`` (declared in ``options``): one line each, naming the key."""
    import jsonschema

    rules = closed_schema(options)
    problems = []
    for err in jsonschema.Draft202012Validator(rules).iter_errors({} if values is None else values):
        key = ".".join([where, *map(str, err.absolute_path)])
        if err.validator == "additionalProperties" and isinstance(err.instance, dict) and not err.absolute_path:
            known = ", ".join(rules["properties"]) or "(none)"
            problems += [f"{where}.{name}: unknown option of recipe {recipe} (known: {known})"
                         for name in sorted(set(err.instance) - set(rules["properties"]))]
        else:
            problems.append(f"{key}: {err.message}")
    return sorted(problems)


def read_options(options, recipe: str, dataset: str, spec: Mapping):
    """The dataset's ``recipe_options`` as an instance of the recipe's ``options``
    dataclass, every key it does not give at its declared default; InputError naming
    every bad key (the workflow's start-up checks the same, aeqa_model.config)."""
    values = spec.get("recipe_options")
    problems = option_problems(options, recipe, f"datasets.{dataset}.recipe_options", values)
    if problems:
        raise InputError(f"dataset {dataset!r}: " + "; ".join(problems))
    return from_values(options, values or {}, {})


def _locale_key(locale: str) -> str:
    return locale.replace("-", "_").lower()


def _other_lang(langs: Sequence[str], dataset: str) -> str:
    if len(langs) != 2 or "en" not in langs:
        raise InputError(f"dataset {dataset!r}: recipe gettext_catalogs needs langs with 'en' and one other "
                         f"language, got {list(langs)}")
    return next(lang for lang in langs if lang != "en")


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
