"""Recipes: turn fetched source files into ``orig/{train,valid,test}.{lang}``.

A dataset's ``recipe`` key picks one entry of :data:`RECIPES`. Every recipe
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

Each recipe is one module of this package, named after it, holding the
recipe function, the declaration of its options and the helpers only it uses;
helpers that several recipes share are in :mod:`aeqa_model.data.recipes.common`.

Adding a recipe
---------------
One new file: write ``<name>.py`` here with a function ``<name>(dataset, spec,
paths, out_dir, log=print) -> dict`` that writes the ``{split}.{lang}`` files into
``out_dir`` and returns its manifest fragment (with ``splits``), a frozen dataclass
declaring its ``recipe_options`` (each field a :func:`aeqa_model.declared.declared`
with its default, help line and schema; :class:`~.common.NoOptions` when it takes
none), which the function reads with :func:`~.common.read_options`, and the line
``RECIPE = Recipe(<name>, <Options>)``. :data:`RECIPES` is every module of the
package that sets ``RECIPE``, by module name; nothing else dispatches on recipe
names: the workflow's start-up checks every dataset's ``recipe`` and
``recipe_options`` against it (:func:`recipe_problems`). (tests/test_extension.py
adds a recipe this way and runs it through the workflow.)

The package re-exports each recipe function under its module's name, so
``aeqa_model.data.recipes.<name>`` (and ``import aeqa_model.data.recipes.<name>
as m``) is the function; reach a module's helpers with ``from
aeqa_model.data.recipes.<name> import ...``.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Callable, Mapping

from aeqa_model.io import InputError

from .common import SPLITS, Recipe, option_problems
from .debian_descriptions import debian_descriptions, description_units, parse_translation_file, split_sentences
from .gettext_catalogs import PLACEHOLDER_PREFIX, gettext_catalogs, normalize_pair
from .multi_reference import multi_reference
from .parallel_corpora import IWSLT_SKIP_DEFAULT, extract_members, parallel_corpora, read_segments

__all__ = [
    "SPLITS", "Recipe", "RECIPES", "build_dataset", "recipe_problems",
    "gettext_catalogs", "normalize_pair", "PLACEHOLDER_PREFIX",
    "debian_descriptions", "split_sentences", "parse_translation_file", "description_units",
    "parallel_corpora", "extract_members", "read_segments", "IWSLT_SKIP_DEFAULT",
    "multi_reference",
]

# --------------------------------------------------------------------------

def discover_recipes() -> dict[str, Recipe]:
    """Every module of this package that sets ``RECIPE``, by module name (sorted)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        recipe = getattr(importlib.import_module(f"{__name__}.{info.name}"), "RECIPE", None)
        if recipe is not None:
            if not isinstance(recipe, Recipe) or recipe.function.__name__ != info.name:
                raise TypeError(f"{__name__}.{info.name}.RECIPE must be Recipe({info.name}, <its Options>)")
            found[info.name] = recipe
    return found


RECIPES: dict[str, Recipe] = discover_recipes()


def recipe_problems(dataset: str, spec: Mapping) -> list[str]:
    """Why the dataset's ``recipe`` or ``recipe_options`` would fail (one line each, naming
    the config key; empty if none): checked at the workflow's start-up, before any
    download, as the recipe itself checks them when it runs."""
    recipe = spec.get("recipe")
    if recipe not in RECIPES:
        return [f"datasets.{dataset}.recipe: unknown recipe {recipe!r}; known: {', '.join(sorted(RECIPES))}"]
    return option_problems(RECIPES[recipe].options, recipe, f"datasets.{dataset}.recipe_options",
                           spec.get("recipe_options"))


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
    result = RECIPES[recipe].function(dataset, spec, paths, out_dir, log=log)
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
