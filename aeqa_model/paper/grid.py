"""Paper grid files (``config/paper/grid-*.yaml``): loading, block expansion, checks.

A grid file, once read (:func:`aeqa_model.paper.grid_file.read_grid`: the paper's
layout, ``config/paper/layout.yaml``, resolved with the run's dataset roles and
overrides), has three top-level keys:

``models``
    extra model configurations the sweeps need (same schema as the run
    config's ``models:``), merged into the run config by the Snakefile.
``decodings``
    extra decodings (same schema as the run config's ``decodings:``).
``outputs``
    output name (``table1`` ... ``figure7``) -> spec.  ``blocks`` lists
    cartesian products of pipeline cells; the Snakefile expands them to
    metrics.json paths and passes exactly those to the renderer.  The other
    keys are the renderer's layout (see docs/paper.md).

The helpers here let tests (and the Snakefile, if it wants) check that every
cell a table or figure shows is produced by a block, and count the training
runs a grid costs.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from aeqa_model.io import InputError
from aeqa_model.paper.cells import CELL_KEYS, MetricsIndex, layered_coords
from aeqa_model.paper.grid_file import read_grid

BLOCK_KEYS = ("datasets", "directions", "data", "models", "decodings")
#: The paper's own numbers, one CSV per table and figure (``tableN.csv``, ``figureN.csv``).
PAPER_DIR = Path(__file__).resolve().parents[2] / "config" / "paper"


def paper_outputs(paper_dir: str | Path = PAPER_DIR) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tables, figures) of the paper: discovered from the transcribed numbers in
    ``paper_dir``, so a table or figure is added by adding its CSV, not a name here."""
    def numbered(prefix: str) -> tuple[str, ...]:
        names = [p.stem for p in Path(paper_dir).glob(f"{prefix}*.csv") if p.stem[len(prefix):].isdigit()]
        return tuple(sorted(names, key=lambda name: int(name[len(prefix):])))
    return numbered("table"), numbered("figure")


TABLES, FIGURES = paper_outputs()
OUTPUTS = TABLES + FIGURES


def load_grid(path: str | Path) -> dict:
    """Read a grid file (its layout resolved: grid_file.read_grid) and check its shape."""
    grid = read_grid(path)
    for key in ("models", "decodings", "outputs"):
        if key not in grid:
            raise InputError(f"{path}: missing top-level key {key!r}")
    for name, spec in grid["outputs"].items():
        if name not in OUTPUTS:
            raise InputError(f"{path}: outputs.{name}: not one of {', '.join(OUTPUTS)}")
        for key in ("caption", "kind", "blocks"):
            if key not in spec:
                raise InputError(f"{path}: outputs.{name}: missing {key!r}")
        if spec["kind"] != ("table" if name.startswith("table") else "figure"):
            raise InputError(f"{path}: outputs.{name}.kind must be {'table' if name.startswith('table') else 'figure'}")
        for i, block in enumerate(spec["blocks"]):
            missing = [k for k in BLOCK_KEYS if not block.get(k)]
            if missing:
                raise InputError(f"{path}: outputs.{name}.blocks[{i}]: missing or empty {missing}")
    return grid


def expand_blocks(spec: dict) -> list[tuple[str, str, str, str, str]]:
    """All (dataset, direction, data, model, decoding) cells of a spec's blocks, in order, without repeats."""
    seen: dict[tuple, None] = {}
    for block in spec.get("blocks", []):
        for cell in itertools.product(*(block[k] for k in BLOCK_KEYS)):
            seen.setdefault(tuple(cell), None)
    return list(seen)


def require_block_metrics(target: str, spec: dict, index: MetricsIndex, metrics_paths: list[str]) -> None:
    """Every cell the spec's blocks produce must come with its metrics.json: the workflow
    passes each one, so one missing is a file lost or left out by hand, and its cells
    used to read "not run in this config" (exit 0), which is what the layout's cells
    that no block produces say. Blocks without all their keys cannot be expanded here
    (the directions come from the run's config) and are not checked."""
    blocks = [{**block, "decodings": block.get("decodings") or ["default"]} for block in spec.get("blocks", [])]
    cells = expand_blocks({"blocks": [b for b in blocks if all(b.get(k) for k in BLOCK_KEYS)]})
    missing = [cell for cell in cells if index.find(*cell) is None]
    if not missing:
        return
    given = [Path(p) for p in metrics_paths if len(Path(p).parts) > 6 and Path(p).name == "metrics.json"]
    root = f"{given[0].parents[5]}/" if given else ".../eval/"
    shown = ", ".join(f"{root}{'/'.join(cell)}/metrics.json" for cell in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise InputError(f"{target}: no metrics.json given for {len(missing)} cell(s) its blocks produce: {shown}{more} "
                     f"(decoding 'default': the model's default decoding). Run the workflow for {target} (it "
                     f"evaluates every cell and passes every file), or pass the missing files with --metrics")


def metrics_path(run: str, cell: tuple[str, ...]) -> str:
    """The metrics.json path of a cell (docs/formats.md)."""
    dataset, direction, data, model, decoding = cell
    return f"results/{run}/eval/{dataset}/{direction}/{data}/{model}/{decoding}/metrics.json"


def training_runs(grid: dict, teacher: str | None = "at",
                  significance_baseline: str | None = "vanilla_nat") -> set[tuple[str, str, str, str]]:
    """Distinct (dataset, direction, data, model) cells the grid's outputs need trained.

    Every decode also times the AT teacher of its (dataset, direction), and KD
    data needs it, so the teacher's raw run is counted for every pair used;
    evaluate's significance test decodes the baseline model
    (``evaluate.significance_baseline``) on every (dataset, direction, data).
    """
    runs = set()
    for spec in grid["outputs"].values():
        runs.update(cell[:4] for cell in expand_blocks(spec))
    used = list(runs)
    if teacher:
        runs.update((ds, di, "raw", teacher) for ds, di, _, _ in used)
    if significance_baseline:
        runs.update((ds, di, da, significance_baseline) for ds, di, da, _ in used)
    return runs


def referenced_cells(spec: dict) -> list[tuple]:
    """Cells that a table or figure spec shows (used to check the blocks cover them)."""
    defaults = spec.get("defaults", {})
    cells = []
    if spec["kind"] == "table":
        metric_cols = [c for c in spec.get("columns", []) if not c.get("show") and not c.get("derive")]
        for row in spec.get("rows", []):
            if "model" not in row:
                continue
            for col in metric_cols:
                c = layered_coords(defaults, col, row)
                if all(c.get(k) is not None for k in CELL_KEYS):
                    cells.append(tuple(c[k] for k in CELL_KEYS))
    else:
        for series in spec.get("series", []):
            base = layered_coords(defaults, series)
            points = list(series.get("points", []))
            if "baseline" in series:
                points.append(series["baseline"])
            if not points:
                points = [{}]
            for point in points:
                c = {**base, **{k: v for k, v in point.items() if k in CELL_KEYS}}
                if all(c.get(k) is not None for k in CELL_KEYS):
                    cells.append(tuple(c[k] for k in CELL_KEYS))
    return cells


def explicit_decodings(spec: dict) -> set[str]:
    """Decoding keys a spec names explicitly (anything but ``default``)."""
    names = set()
    for block in spec.get("blocks", []):
        names.update(block.get("decodings", []))

    def walk(obj):
        if isinstance(obj, dict):
            if isinstance(obj.get("decoding"), str):
                names.add(obj["decoding"])
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    walk({k: v for k, v in spec.items() if k != "blocks"})
    names.discard("default")
    return names


def check_grid(grid: dict, base_models: set[str], base_decodings: set[str], datasets: dict[str, list[str]] | None = None) -> list[str]:
    """Problems in a grid: unknown models/decodings/datasets, shown cells no block produces."""
    problems = []
    models = set(base_models) | set(grid["models"])
    decodings = set(base_decodings) | set(grid["decodings"]) | {"default"}
    for name, spec in grid["outputs"].items():
        produced = set(expand_blocks(spec))
        for cell in produced:
            ds, di, _, mo, de = cell
            if mo not in models:
                problems.append(f"{name}: unknown model {mo}")
            if de not in decodings:
                problems.append(f"{name}: unknown decoding {de}")
            if datasets is not None and (ds not in datasets or di not in datasets[ds]):
                problems.append(f"{name}: unknown dataset/direction {ds}/{di}")
        shown = set(referenced_cells(spec))
        for cell in produced - shown:
            problems.append(f"{name}: block cell {cell} is not shown by any row/column/series (wasted run)")
    return sorted(set(problems))


def unproduced_cells(spec: dict) -> list[tuple]:
    """Cells the layout has room for but no block produces: they render as "not run in this config"."""
    produced = set(expand_blocks(spec))
    return [c for c in referenced_cells(spec) if c not in produced]
