"""Reading a paper grid file (``config/paper/grid-*.yaml``): its layout resolved.

The paper's tables and figures are laid out once, in ``config/paper/layout.yaml``, in
terms of dataset *roles* (``wmt14_ende``: "the paper's WMT14 EN-DE", ...). A run's
grid file says which of its datasets plays each role and what the run does
differently, so that the demo and the paper run share one layout instead of two
copies that drift apart::

    layout: config/paper/layout.yaml     # relative to the repository root
    roles: {wmt14_ende: demo_ende, ..., iwslt16_deen: null}   # null: no dataset in this run
    notice: ...                          # optional: shown on every output of the run
    models: {...}                        # the sweep / stand-in models the run adds
    decodings: {...}                     # decodings it adds to the layout's
    overrides:                           # optional, per output; each key says what it does
      table7:
        caption: ...                     # any spec key: replaces the layout's value
        drop_rows: [t7_lend0.1]          # rows (by paper_row) the run does not show
        patch_rows: {t7_lend0.4: {pipeline_note: ...}}   # keys set on a row (a stand-in model, a note)
        add_legend: ["Demo: ..."]        # lines after the layout's legend

Overrides are written in roles too; the roles are replaced by datasets last. A grid
may instead give ``outputs`` itself (the fidelity and smoke grids, whose tables are
not the paper's layout). Either way the result has the one shape the workflow and
the renderer read: ``{models, decodings, outputs, notice?}`` with dataset names.

This module imports only the base layer: the config loader (config.py) and the paper
package (grid.py) both read grids through it (tests/test_layers.py).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import yaml

from aeqa_model.io import InputError

ROOT = Path(__file__).resolve().parents[2]
INLINE_KEYS = {"models", "decodings", "outputs", "notice"}
LAYOUT_GRID_KEYS = {"layout", "roles", "models", "decodings", "notice", "overrides"}
LAYOUT_KEYS = {"roles", "decodings", "outputs"}
#: Override keys that edit a list instead of replacing a spec key.
EDIT_KEYS = {"drop_rows", "patch_rows", "add_legend"}


def safe_load(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_grid(path: str | Path, load: Callable[[Path], Any] = safe_load, root: Path = ROOT) -> dict:
    """A grid file with its layout resolved: ``{models, decodings, outputs}`` (and
    ``notice``), sections the file lacks left out (the callers decide whether that is
    an error). ``load`` reads a YAML file (config.py passes its duplicate-key check)."""
    path = Path(path)
    grid = load(path) or {}
    if not isinstance(grid, dict):
        raise InputError(f"{path}: a grid file is a mapping (models, decodings, outputs or layout)")
    if "layout" not in grid:
        _refuse_unknown(path, "top-level key(s)", set(grid) - INLINE_KEYS)
        return _with_notice(grid)
    _refuse_unknown(path, "top-level key(s)", set(grid) - LAYOUT_GRID_KEYS)
    if "outputs" in grid:
        raise InputError(f"{path}: give either layout or outputs, not both")
    if not isinstance(grid.get("roles"), dict):
        raise InputError(f"{path}: missing top-level key 'roles' (the layout's roles -> this run's datasets)")
    layout_path = Path(grid["layout"]) if Path(grid["layout"]).is_absolute() else Path(root) / grid["layout"]
    if not layout_path.exists():
        raise InputError(f"{path}: layout {grid['layout']} does not exist")
    layout = load(layout_path) or {}
    for key in sorted(LAYOUT_KEYS):
        if key not in layout:
            raise InputError(f"{layout_path}: missing top-level key {key!r}")
    _refuse_unknown(layout_path, "top-level key(s)", set(layout) - LAYOUT_KEYS)
    roles = layout["roles"]
    _refuse_unknown(path, f"role(s) in roles (the roles of {grid['layout']}: {', '.join(roles)})",
                    set(grid["roles"]) - set(roles))

    decodings = dict(layout["decodings"])
    clash = sorted(k for k in set(grid.get("decodings") or {}) & set(decodings)
                   if grid["decodings"][k] != decodings[k])
    if clash:
        raise InputError(f"{path}: decodings {clash} are defined in {grid['layout']} with other values")
    decodings.update(grid.get("decodings") or {})

    overrides = grid.get("overrides") or {}
    _refuse_unknown(path, f"output(s) in overrides (the outputs of {grid['layout']})",
                    set(overrides) - set(layout["outputs"]))
    outputs = {}
    for name, spec in layout["outputs"].items():
        spec = _overridden(copy.deepcopy(spec), overrides.get(name) or {}, f"{path}: overrides.{name}")
        _check_roles(spec, roles, layout_path, f"outputs.{name}")
        outputs[name] = _with_datasets(spec, grid["roles"], path, layout_path, f"outputs.{name}")
    resolved = {"decodings": decodings, "outputs": outputs}
    if "models" in grid:
        resolved["models"] = grid["models"] or {}
    if "notice" in grid:
        resolved["notice"] = grid["notice"]
    return _with_notice(resolved)


def _refuse_unknown(path: Path, what: str, unknown: set) -> None:
    if unknown:
        raise InputError(f"{path}: unknown {what}: {sorted(unknown)}")


def _with_notice(grid: dict) -> dict:
    """The grid's ``notice`` goes on each of its outputs (one that sets its own keeps it)."""
    if grid.get("notice"):
        for spec in (grid.get("outputs") or {}).values():
            if isinstance(spec, dict):
                spec.setdefault("notice", grid["notice"])
    return grid


def _overridden(spec: dict, override: dict, where: str) -> dict:
    for key, value in override.items():
        if key not in EDIT_KEYS:
            spec[key] = value
    rows = {row.get("paper_row"): row for row in spec.get("rows", []) if row.get("paper_row")}
    for row_id in list(override.get("drop_rows") or []) + list(override.get("patch_rows") or {}):
        if row_id not in rows:
            raise InputError(f"{where}: no row with paper_row {row_id!r} (rows: {', '.join(rows)})")
    dropped = set(override.get("drop_rows") or [])
    if dropped:
        spec["rows"] = [row for row in spec["rows"] if row.get("paper_row") not in dropped]
    for row_id, changes in (override.get("patch_rows") or {}).items():
        rows[row_id].update(changes)
    if override.get("add_legend"):
        spec["legend"] = list(spec.get("legend", [])) + list(override["add_legend"])
    return spec


def _dataset_slots(spec: Any, where: str):
    """(container, key or index, where) of every dataset value in a spec: ``dataset``
    keys (defaults, columns, rows, series, points) and the blocks' ``datasets`` lists."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            here = f"{where}.{key}"
            if key == "dataset" and value is not None:
                yield spec, key, here
            elif key == "datasets" and isinstance(value, list):
                for i in range(len(value)):
                    yield value, i, f"{here}[{i}]"
            else:
                yield from _dataset_slots(value, here)
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            yield from _dataset_slots(value, f"{where}[{i}]")


def _check_roles(spec: dict, roles: dict, layout_path: Path, where: str) -> None:
    for container, key, here in _dataset_slots(spec, where):
        if container[key] not in roles:
            raise InputError(f"{layout_path}: {here}: {container[key]!r} is not a role of the layout "
                             f"(roles: {', '.join(roles)})")


def _with_datasets(spec: dict, mapping: dict, path: Path, layout_path: Path, where: str) -> dict:
    for container, key, here in list(_dataset_slots(spec, where)):
        role = container[key]
        if mapping.get(role) is None:
            said = "maps it to no dataset (null)" if role in mapping else "does not map it"
            raise InputError(f"{path}: roles: {role!r} is used by {here} ({layout_path} or this grid's "
                             f"overrides) but this grid {said}; map it to a dataset, or override what uses it")
        container[key] = mapping[role]
    return spec
