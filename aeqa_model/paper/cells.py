"""Reproduced numbers: an index of the ``metrics.json`` files the renderer was given.

A pipeline cell is the 5-tuple (dataset, direction, data, model, decoding) of
``results/{run}/eval/{dataset}/{direction}/{data}/{model}/{decoding}/metrics.json``
(docs/formats.md).  The tuple is read from the file's ``cell`` block, and from
its path when the block is absent.

``decoding: default`` in a grid means "the model's default decoding", whose key
the renderer is not told.  It is resolved against the files it was given: among
the files of that (dataset, direction, data, model), the one whose decoding is
not named explicitly anywhere in the output's spec (``default_decodings:
{model: key}`` in the spec overrides this).  Two candidates is an error, not a
guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from aeqa_model.io import InputError, read_json
from aeqa_model.paper.numbers import to_decimal

CELL_KEYS = ("dataset", "direction", "data", "model", "decoding")
NOT_RUN = "not run in this config"
NO_MULTI_REF = "not available: no multi-reference set for this dataset"
# evaluate writes the multi-reference score under "multi_reference"; the older
# contract (docs/formats.md drafts) called it "bleu_multi_ref". Both are read.
MULTI_REF_METRICS = ("multi_reference", "bleu_multi_ref")


@dataclass(frozen=True)
class Metrics:
    path: str
    cell: tuple[str, str, str, str, str]
    doc: dict


@dataclass(frozen=True)
class Value:
    """A reproduced value, or the reason there is none."""

    value: Decimal | None
    raw: float | None
    reason: str
    metrics: Metrics | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


def layered_coords(*layers: dict, keys: tuple = CELL_KEYS, default_decoding: str | None = "default") -> dict:
    """The coordinates ``keys`` of one cell from layered specs (the output's defaults, a
    column, a row, a series, a point), a later layer overriding an earlier one; a cell
    no layer gives a decoding gets ``default_decoding`` (None: it stays without one)."""
    merged: dict = {}
    for layer in layers:
        merged.update({key: layer[key] for key in keys if key in layer})
    if default_decoding is not None:
        merged.setdefault("decoding", default_decoding)
    return merged


def table_coords(*layers: dict) -> dict:
    """A table cell's coordinates with its metric and scale; no default decoding (a cell
    without one reads the model's default, MetricsIndex)."""
    return layered_coords(*layers, keys=(*CELL_KEYS, "metric", "scale"), default_decoding=None)


def _cell_from_path(path: Path) -> tuple[str, ...] | None:
    parts = path.parts
    if len(parts) >= 6 and parts[-1] == "metrics.json":
        return tuple(parts[-6:-1])
    return None


def load_metrics(paths: list[str]) -> list[Metrics]:
    """Read every metrics.json; the cell tuple comes from its ``cell`` block (path as fallback)."""
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"{p}: metrics.json not found; run the workflow for this cell (snakemake {p}), "
                             f"or leave it out of --metrics")
        doc = read_json(p)
        if not isinstance(doc, dict):
            raise InputError(f"{p}: metrics.json must hold a JSON object")
        cell_block = doc.get("cell") or {}
        from_path = _cell_from_path(Path(p))
        cell = []
        for i, key in enumerate(CELL_KEYS):
            value = cell_block.get(key)
            if value is None and from_path is not None:
                value = from_path[i]
            if value is None:
                raise InputError(f"{p}: cannot tell its {key}: no cell.{key} and the path is not "
                                 f".../eval/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/metrics.json")
            cell.append(str(value))
        out.append(Metrics(str(p), tuple(cell), doc))
    return out


class MetricsIndex:
    """Look up reproduced values by pipeline cell."""

    def __init__(self, metrics: list[Metrics], explicit_decodings: set[str] | None = None,
                 default_decodings: dict[str, str] | None = None):
        self._by_cell: dict[tuple, Metrics] = {}
        for m in metrics:
            if m.cell in self._by_cell:
                raise InputError(f"two metrics files for the same cell {m.cell}: {self._by_cell[m.cell].path} and {m.path}")
            self._by_cell[m.cell] = m
        self.explicit = set(explicit_decodings or ()) - {"default"}
        self.default_decodings = dict(default_decodings or {})

    def find(self, dataset, direction, data, model, decoding) -> Metrics | None:
        """The metrics of one cell, resolving ``decoding == "default"``; None when not given."""
        if None in (dataset, direction, data, model, decoding):
            return None
        if decoding != "default":
            return self._by_cell.get((dataset, direction, data, model, decoding))
        if model in self.default_decodings:
            return self._by_cell.get((dataset, direction, data, model, self.default_decodings[model]))
        candidates = [m for (ds, di, da, mo, de), m in self._by_cell.items()
                      if (ds, di, da, mo) == (dataset, direction, data, model) and de not in self.explicit]
        if len(candidates) > 1:
            # Extra files (e.g. a whole eval/ tree passed by hand): fall back to
            # the model's own default, as the workflow defines it.
            preferred = [m for m in candidates if m.cell[4] == _default_of(m.doc)]
            if len(preferred) == 1:
                return preferred[0]
            names = sorted(m.cell[4] for m in candidates)
            raise InputError(f"cannot tell the default decoding of {model} on {dataset}/{direction}/{data}: "
                             f"candidates {names}; name it in the spec's default_decodings")
        return candidates[0] if candidates else None

    def value(self, coords: dict, metric: str, scale: int | float | None = None) -> Value:
        """The reproduced value of ``metric`` at ``coords`` (keys of CELL_KEYS), with a reason when missing."""
        m = self.find(*(coords.get(k) for k in CELL_KEYS))
        if m is None:
            return Value(None, None, NOT_RUN)
        raw, reason = metric_value(m.doc, metric)
        dec = to_decimal(raw)
        if dec is None:
            return Value(None, None, reason or f"metric not available: {metric} is not a number in {m.path}", m)
        if scale not in (None, 1):
            dec = dec * to_decimal(scale)
        return Value(dec, raw, "", m)


def _default_of(doc: dict) -> str | None:
    """The default decoding of a metrics.json's model, as the evaluate rule recorded it
    (``cell.default_decoding``; metrics written before it was recorded: the entry's own
    ``decoding``, else unknown). paper/ keeps no copy of the architectures' defaults."""
    cell = doc.get("cell") or {}
    return cell.get("default_decoding") or (cell.get("model_config") or {}).get("decoding")


def _strip_status(status: str) -> str:
    status = status.strip()
    prefix = "not available:"
    if status.lower().startswith(prefix):
        status = status[len(prefix):].strip()
    return status


def metric_value(doc: dict, metric: str) -> tuple[float | None, str]:
    """(value, reason) of a metric in a metrics.json document.

    ``speedup`` reads ``speed.speedup``; every other name reads
    ``metrics.<name>`` (a number or ``{"score": ..., "status": ...}``).
    """
    if metric == "speedup":
        speed = doc.get("speed")
        if not isinstance(speed, dict) or speed.get("speedup") is None:
            status = (speed or {}).get("status") if isinstance(speed, dict) else None
            return None, "metric not available: " + (_strip_status(status) if status else "no speed measurement in metrics.json")
        return speed["speedup"], ""
    metrics = doc.get("metrics") or {}
    entry = metrics.get(metric)
    if entry is None:
        if metric in MULTI_REF_METRICS:
            return None, NO_MULTI_REF
        if metric not in metrics:
            return None, f"metric not available: {metric} missing from metrics.json"
        return None, f"metric not available: {metric} is null"
    if isinstance(entry, dict):
        score = entry.get("score")
        if score is None:
            status = entry.get("status")
            if metric in MULTI_REF_METRICS:
                # A single-reference test set is the expected case on most
                # datasets; say so plainly rather than echo the evaluator's flag.
                return None, NO_MULTI_REF
            return None, "metric not available: " + (_strip_status(status) if status else f"{metric} has no score")
        return score, ""
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return entry, ""
    return None, f"metric not available: {metric} has an unexpected form"
