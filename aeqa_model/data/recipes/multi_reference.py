"""Recipe ``multi_reference``: Ott et al. (2018)'s additional references for
newstest2014 (``S-i`` / ``T-i`` / ``Rk-i`` lines)."""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from aeqa_model.declared import declared
from aeqa_model.io import InputError, write_lines

from .common import Recipe, read_options


@dataclass(frozen=True, kw_only=True)
class MultiReferenceOptions:
    """The ``recipe_options`` of :func:`multi_reference`."""

    src_lang: str = declared("en", "language of the file's S (source) lines")

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
    options = read_options(MultiReferenceOptions, "multi_reference", dataset, spec)
    langs = list(spec["langs"])
    src = options.src_lang
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


RECIPE = Recipe(multi_reference, MultiReferenceOptions)
