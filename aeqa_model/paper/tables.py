"""Render one paper table (Markdown, booktabs LaTeX, long CSV) from metrics.json files.

Layout comes from the output's spec in the grid file (docs/paper.md):

``columns``
    the table's columns, left to right.  A column is one of

    * a metric column: pipeline coordinates (``dataset``, ``direction``,
      ``data``, ``decoding``, ``metric``) and the paper cell it is compared
      with (``paper_column``, ``paper_data``); ``dataset: null`` marks a paper
      column this config has no counterpart for;
    * ``show: paper``: a descriptive column printed from the paper as is
      (``I_dec``, ``K``, ``λs``);
    * ``derive: mean_gap | delta | argmax``: computed from the row's metric
      cells (Table 2's KD - raw gap, Table 4's Δ over the baseline row,
      Table 3's best λ).
``rows``
    ``paper_row`` (an id in ``config/paper/<table>.csv``) mapped to pipeline
    coordinates (``model``, ``decoding``, optionally ``data``, ``dataset``,
    ``direction``, ``metric``).  Row coordinates override column ones, which
    override the spec's ``defaults``.

Every paper row is printed, in the paper's order.  A paper row that quotes
prior work is printed verbatim (value and mark, with its citation) and never
overwritten; when the pipeline reproduces that model, a separate
"reproduced" row follows it.  A row of the paper's own is printed once, each
cell showing ``reproduced (paper X; Δ d)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aeqa_model.io import InputError
from aeqa_model.paper.cells import CELL_KEYS, NOT_RUN, MetricsIndex, Value, load_metrics, table_coords
from aeqa_model.paper.grid import explicit_decodings, require_block_metrics
from aeqa_model.paper.numbers import fmt2, full, parse_paper_number, to_decimal
from aeqa_model.paper.paperdata import NOT_GIVEN, PaperTable, load_table
from aeqa_model.paper.table_text import write_table

@dataclass
class Cell:
    """One rendered table cell."""

    column: str
    kind: str                     # metric | paper | derived
    status: str                   # reproduced | missing | paper_only | quoted | derived
    repro: Decimal | None = None
    repro_full: str = ""
    paper_text: str = ""
    paper_value: Decimal | None = None
    paper_reason: str = ""
    diff: Decimal | None = None
    reason: str = ""
    unit: str = ""
    coords: dict = field(default_factory=dict)
    metric: str = ""
    source: str = ""
    quoted: bool = False
    metrics_file: str = ""
    display_override: str | None = None
    signed: bool = False          # derived differences print their sign (+0.29)
    info: str = ""                # extra context printed inside the parentheses


    def display(self, tex: bool = False) -> str:
        if self.display_override is not None:
            return self.display_override
        if self.kind == "paper" or self.status in ("paper_only", "quoted"):
            return self.paper_text
        paper = self._paper_part()
        if self.repro is None:
            return f"— ({self.reason}; {paper})" if paper else f"— ({self.reason})"
        value = fmt2(self.repro, signed=self.signed) + self.unit
        info = f"; {self.info}" if self.info else ""
        if self.diff is not None:
            delta = fmt2(self.diff, signed=True) + self.unit
            return f"{value} (paper {self.paper_text}; Δ {delta}{info})"
        if paper:
            return f"{value} ({paper}{info})"
        return f"{value} ({self.info})" if self.info else value

    def _paper_part(self) -> str:
        if self.paper_text and self.paper_text != "-":
            return f"paper {self.paper_text}"
        if self.paper_text == "-":
            return "paper: -, not reported"
        if self.paper_reason:
            return f"paper: {self.paper_reason}"
        return ""


@dataclass
class Row:
    key: str
    label: str
    kind: str                      # paper (own row, combined) | quoted | paper_only | reproduced
    pipeline: str = ""
    source: str = ""
    notes: str = ""
    cells: list[Cell] = field(default_factory=list)
    spec: dict = field(default_factory=dict)


def _column_label(col: dict) -> str:
    if col.get("label"):
        return str(col["label"])
    label = str(col.get("paper_column", "?"))
    if col.get("paper_data"):
        label += " " + {"raw": "Raw", "kd": "KD"}.get(col["paper_data"], col["paper_data"])
    return label


def _paper_cell(paper: PaperTable, row_id: str | None, col: dict, row_spec: dict):
    if not row_id or not col.get("paper_column"):
        return None
    data = row_spec.get("paper_data", col.get("paper_data"))
    return paper.get(row_id, str(col["paper_column"]), data)


def _fill_paper(cell: Cell, pc) -> None:
    """Put the paper side of a comparison into ``cell``."""
    if pc is None:
        cell.paper_reason = "no paper counterpart"
        return
    cell.source = pc.source
    cell.quoted = pc.quoted
    if pc.value == "":
        cell.paper_reason = pc.note or NOT_GIVEN
        return
    cell.paper_text = pc.printed
    cell.paper_value = parse_paper_number(pc.value)


class TableRenderer:
    """Builds the rows and cells of one table; writers turn them into md/tex/csv."""

    def __init__(self, target: str, spec: dict, paper_dir: str | Path, metrics_paths: list[str]):
        self.target = target
        self.spec = spec
        for key in ("columns", "rows"):
            if key not in spec:
                raise InputError(f"spec of {target}: missing {key!r}")
        self.paper = load_table(paper_dir, spec.get("paper_table", target))
        self.metrics = load_metrics(metrics_paths)
        self.index = MetricsIndex(self.metrics, explicit_decodings(spec), spec.get("default_decodings"))
        require_block_metrics(target, spec, self.index, metrics_paths)
        self.columns = spec["columns"]
        self.defaults = spec.get("defaults", {})
        for col in self.columns:
            col.setdefault("key", _column_label(col))
        self.rows = self._build_rows()
        self._derive()

    # ---------------------------------------------------------------- rows --
    def _row_key(self, row_spec: dict) -> str:
        if row_spec.get("key"):
            return str(row_spec["key"])
        if row_spec.get("paper_row"):
            return str(row_spec["paper_row"])
        return "/".join(str(row_spec.get(k, "")) for k in ("model", "decoding", "data"))

    def _build_rows(self) -> list[Row]:
        by_paper: dict[str, list[dict]] = {}
        extra = []
        known = set(self.paper.row_ids())
        for row_spec in self.spec["rows"]:
            pid = row_spec.get("paper_row")
            if pid:
                if pid not in known:
                    raise InputError(f"spec of {self.target}: paper_row {pid!r} is not in the paper table")
                by_paper.setdefault(pid, []).append(row_spec)
            else:
                extra.append(row_spec)
        rows = []
        for pid in self.paper.row_ids():
            specs = by_paper.get(pid, [])
            quoted = self.paper.row_quoted(pid)
            if quoted or len(specs) != 1:
                paper_row = self._paper_row(pid, quoted)
                if specs and not quoted:
                    paper_row.pipeline = "— (see the reproduced rows below)"
                rows.append(paper_row)
                for row_spec in specs:
                    rows.append(self._repro_row(row_spec, pid, separate=True))
            else:
                rows.append(self._repro_row(specs[0], pid, separate=False))
        for row_spec in extra:
            rows.append(self._repro_row(row_spec, None, separate=True))
        return rows

    def _row_notes(self, pid: str | None, row_spec: dict | None = None) -> str:
        notes: dict[str, None] = {}
        if pid:
            for pc in self.paper.row_cells(pid):
                if pc.note and pc.note not in (NOT_GIVEN, "'-': not reported", "'-': baseline row"):
                    notes.setdefault(pc.note, None)
        if row_spec and row_spec.get("note"):
            notes.setdefault(str(row_spec["note"]), None)
        return "; ".join(notes)

    def _source_text(self, pid: str) -> str:
        sources = self.paper.row_sources(pid)
        if self.paper.row_quoted(pid):
            return "quoted: " + "; ".join(sources)
        return "; ".join(sources)

    def _paper_row(self, pid: str, quoted: bool) -> Row:
        """A paper row printed verbatim (quoted prior work, or a row this config does not reproduce)."""
        row = Row(key=pid, label=self.paper.row_label(pid), kind="quoted" if quoted else "paper_only",
                  pipeline="— (quoted, not a pipeline cell)" if quoted else f"— ({NOT_RUN})", source=self._source_text(pid), notes=self._row_notes(pid))
        for col in self.columns:
            label = col["key"]
            if col.get("derive") and not col.get("paper_column"):
                row.cells.append(Cell(label, "derived", "paper_only", display_override=""))
                continue
            pc = _paper_cell(self.paper, pid, col, {})
            cell = Cell(label, "paper", "quoted" if quoted else "paper_only")
            if pc is not None:
                cell.paper_text = pc.printed if pc.value else f"({pc.note or NOT_GIVEN})"
                cell.paper_value = parse_paper_number(pc.value)
                cell.source, cell.quoted = pc.source, pc.quoted
                if not quoted and not col.get("show") and pc.value:
                    cell.reason = "not reproduced by this pipeline"
            row.cells.append(cell)
        return row

    def _repro_row(self, row_spec: dict, pid: str | None, separate: bool) -> Row:
        key = self._row_key(row_spec)
        if separate:
            base = row_spec.get("label") or (self.paper.row_label(pid) if pid else str(row_spec.get("model")))
            label = f"↳ reproduced: {base}"
            kind = "reproduced"
            source = "this pipeline" + (f" (compared with the paper row above)" if pid else "")
        else:
            label = row_spec.get("label") or self.paper.row_label(pid)
            kind = "paper"
            source = "this pipeline vs. " + self._source_text(pid)
        row = Row(key=key if not separate or not pid else f"{key}#reproduced", label=label, kind=kind,
                  source=source, notes=self._row_notes(pid, row_spec), spec=row_spec)
        decodings = set()
        for col in self.columns:
            label_c = col["key"]
            if col.get("show"):
                pc = _paper_cell(self.paper, pid, col, row_spec)
                text = pc.printed if pc is not None else ""
                if row_spec.get("show", {}).get(label_c) is not None:
                    text = str(row_spec["show"][label_c])
                row.cells.append(Cell(label_c, "paper", "paper_only", paper_text=text,
                                      source=pc.source if pc else "", quoted=pc.quoted if pc else False))
                continue
            if col.get("derive"):
                cell = Cell(label_c, "derived", "derived")
                _fill_paper(cell, _paper_cell(self.paper, pid, col, row_spec))
                row.cells.append(cell)
                continue
            row.cells.append(self._metric_cell(col, row_spec, pid, decodings))
        model = row_spec.get("model", "?")
        if len(decodings) > 2:
            dec = "decoding per column"
        else:
            dec = "/".join(sorted(decodings)) if decodings else str(row_spec.get("decoding", "default"))
        row.pipeline = f"{model} / {dec}" + (f" / {row_spec['data']}" if row_spec.get("data") else "")
        if row_spec.get("pipeline_note"):
            row.pipeline += f" ({row_spec['pipeline_note']})"
        return row

    def _metric_cell(self, col: dict, row_spec: dict, pid: str | None, decodings: set) -> Cell:
        coords = table_coords(self.defaults, col, row_spec)
        coords.setdefault("decoding", "default")
        metric = coords.get("metric", "bleu_tok")
        unit = "x" if metric == "speedup" else ""
        cell = Cell(col["key"], "metric", "missing", coords={k: coords.get(k) for k in CELL_KEYS},
                    metric=metric, unit=unit)
        _fill_paper(cell, _paper_cell(self.paper, pid, col, row_spec))
        if any(coords.get(k) is None for k in CELL_KEYS):
            cell.reason = col.get("missing") or NOT_RUN
            return cell
        value: Value = self.index.value(coords, metric, coords.get("scale"))
        if value.metrics is not None:
            cell.metrics_file = value.metrics.path
            cell.coords["decoding"] = value.metrics.cell[4]
            decodings.add(value.metrics.cell[4])
        if not value.ok:
            cell.reason = value.reason
            return cell
        cell.status = "reproduced"
        cell.repro = value.value
        cell.repro_full = full(value.value)
        if cell.paper_value is not None:
            cell.diff = value.value - cell.paper_value
        return cell

    # ------------------------------------------------------------- derived --
    def _row_by_key(self, key: str) -> Row | None:
        for row in self.rows:
            if row.kind in ("paper", "reproduced") and self._row_key(row.spec) == key:
                return row
        return None

    def _derive(self) -> None:
        metric_cols = [c for c in self.columns if not c.get("show") and not c.get("derive")]
        for row in self.rows:
            if row.kind not in ("paper", "reproduced"):
                continue
            for i, col in enumerate(self.columns):
                how = col.get("derive")
                if not how:
                    continue
                cell = row.cells[i]
                if how == "mean_gap":
                    self._mean_gap(row, cell, col, metric_cols)
                elif how == "delta":
                    self._delta(row, cell, col)
                elif how == "argmax":
                    self._argmax(row, cell, metric_cols)
                else:
                    raise InputError(f"spec of {self.target}: unknown derive {how!r}")
                if cell.repro is not None:
                    cell.repro_full = full(cell.repro)
                    if cell.paper_value is not None:
                        cell.diff = cell.repro - cell.paper_value

    def _cells_of(self, row: Row, cols: list[dict]) -> list[Cell]:
        keys = {c["key"] for c in cols}
        return [c for c in row.cells if c.column in keys]

    def _mean_gap(self, row: Row, cell: Cell, col: dict, metric_cols: list[dict]) -> None:
        """Mean over the columns of (KD - raw), as Table 2 does; printed on the raw row."""
        other_key = row.spec.get("gap_with")
        if not other_key:
            cell.display_override = ""
            cell.status = "paper_only"
            return
        other = self._row_by_key(other_key)
        if other is None:
            raise InputError(f"spec of {self.target}: gap_with {other_key!r} names no row")
        cols = [c for c in metric_cols if not col.get("of") or c["key"] in col["of"]]
        pairs = [(a, b) for a, b in zip(self._cells_of(row, cols), self._cells_of(other, cols))
                 if a.repro is not None and b.repro is not None]
        if not pairs:
            cell.reason = "no column with both the raw and the KD cell reproduced"
            cell.status = "missing"
            return
        total = sum((b.repro - a.repro for a, b in pairs), Decimal(0))
        cell.repro = total / Decimal(len(pairs))
        cell.signed = True
        cell.info = f"mean over {len(pairs)} of {len(cols)} columns"
        cell.status = "derived"

    def _delta(self, row: Row, cell: Cell, col: dict) -> None:
        """Difference to a baseline row in the same column (Table 4's Δ over Vanilla NAT)."""
        base_key = row.spec.get("baseline")
        of = col.get("of")
        if not base_key or not of:
            cell.status = "missing"
            cell.reason = "no baseline row"
            return
        if base_key == self._row_key(row.spec):
            cell.status = "derived"
            cell.reason = "baseline row"
            return
        base = self._row_by_key(base_key)
        if base is None:
            raise InputError(f"spec of {self.target}: baseline {base_key!r} names no row")
        mine = next((c for c in row.cells if c.column == of), None)
        theirs = next((c for c in base.cells if c.column == of), None)
        if mine is None or theirs is None:
            raise InputError(f"spec of {self.target}: delta column 'of: {of}' names no column")
        if mine.repro is None or theirs.repro is None:
            cell.status = "missing"
            reasons = {r for r in (mine.reason, theirs.reason) if r}
            cell.reason = f"needs {of} of this row and of the baseline row" + (
                f" ({reasons.pop()})" if len(reasons) == 1 else "")
            return
        cell.repro = mine.repro - theirs.repro
        cell.signed = True
        cell.status = "derived"

    def _argmax(self, row: Row, cell: Cell, metric_cols: list[dict]) -> None:
        """The ``x`` of the best metric column (Table 3's best inference sampling ratio)."""
        scored = [(c.repro, to_decimal(col["x"])) for col, c in zip(metric_cols, self._cells_of(row, metric_cols))
                  if "x" in col and c.repro is not None]
        if not scored:
            cell.status = "missing"
            cell.reason = "no reproduced cell in this row"
            return
        best = max(scored, key=lambda t: t[0])
        cell.repro = best[1]
        cell.status = "derived"
        cell.info = f"best of {len(scored)} reproduced values"


def render_table(target: str, spec: dict, paper_dir: str | Path, metrics_paths: list[str], out_dir: str | Path) -> list[Path]:
    """Write ``{out_dir}/{target}.md``, ``.tex`` and ``.csv``."""
    return write_table(TableRenderer(target, spec, paper_dir, metrics_paths), out_dir)
