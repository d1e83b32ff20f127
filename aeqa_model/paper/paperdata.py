"""The paper's own numbers, transcribed into ``config/paper/*.csv``.

Table files (``table1.csv`` ... ``table7.csv``) are long format, one paper cell
per line::

    row,label,column,data,value,mark,source,quoted,note

``row`` is a stable id (``t1_glat``), ``label`` the row name exactly as printed,
``column``/``data`` the paper's column (``EN-DE``/``raw``, ``Speedup``),
``value`` the printed text without its mark (``18.94``, ``-``, ``14.2x``, empty
when the value is not given in the text), ``mark`` the printed mark (``*``
re-implementation, ``†`` the paper's implementation), ``source`` who produced
the number (``this paper`` or the citation it is quoted from), ``quoted``
``yes``/``no``.

Figure files (``figure1.csv`` ...) hold only what the text states about a
figure::

    series,label,x,y,kind,statement,source

``kind`` is ``not_given`` (the data points are not legible in the text copy),
``stated_x`` (the text names an x value, e.g. "AEQA-DAT peaks at L = 3"),
``statement`` (a qualitative claim) or ``table_ref`` (the values are printed in
a table).  ``source`` quotes the sentence.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from aeqa_model.io import InputError

TABLE_FIELDS = ["row", "label", "column", "data", "value", "mark", "source", "quoted", "note"]
FIGURE_FIELDS = ["series", "label", "x", "y", "kind", "statement", "source"]
NOT_GIVEN = "not given in the text"


@dataclass(frozen=True)
class PaperCell:
    row: str
    label: str
    column: str
    data: str
    value: str
    mark: str
    source: str
    quoted: bool
    note: str

    @property
    def printed(self) -> str:
        """The cell as the paper prints it (value plus its ``*`` mark); row marks stay on the label."""
        if self.mark == "*":
            return self.value + "*"
        return self.value


@dataclass
class PaperTable:
    """All cells of one paper table, addressable by (row, column, data)."""

    name: str
    cells: list[PaperCell] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[tuple[str, str, str], PaperCell] = {}
        for cell in self.cells:
            key = (cell.row, cell.column, cell.data)
            if key in self._index:
                raise InputError(f"{self.name}: duplicate paper cell {key}")
            self._index[key] = cell

    def get(self, row: str, column: str, data: str | None = None) -> PaperCell | None:
        """The cell at (row, column, data); ``data`` may be omitted for columns that have none."""
        cell = self._index.get((row, column, data or ""))
        if cell is None and data:
            cell = self._index.get((row, column, ""))
        if cell is None and not data:
            # Rows such as Table 2's "w/ KD" carry their data in the CSV; the
            # spec need not repeat it when the (row, column) pair is unique.
            matches = [c for (r, col, _), c in self._index.items() if r == row and col == column]
            if len(matches) == 1:
                cell = matches[0]
        return cell

    def row_ids(self) -> list[str]:
        """Row ids in the paper's order."""
        seen: dict[str, None] = {}
        for cell in self.cells:
            seen.setdefault(cell.row, None)
        return list(seen)

    def row_cells(self, row: str) -> list[PaperCell]:
        return [c for c in self.cells if c.row == row]

    def row_label(self, row: str) -> str:
        cells = self.row_cells(row)
        if not cells:
            raise InputError(f"{self.name}: no paper row {row!r}")
        return cells[0].label

    def row_quoted(self, row: str) -> bool:
        """A row is quoted when any of its cells is quoted from prior work."""
        return any(c.quoted for c in self.row_cells(row))

    def row_sources(self, row: str) -> list[str]:
        seen: dict[str, None] = {}
        for cell in self.row_cells(row):
            if cell.source:
                seen.setdefault(cell.source, None)
        return list(seen)

    def row_mark(self, row: str) -> str:
        """The row-level mark (``†``), if the paper prints one on this row."""
        return next((c.mark for c in self.row_cells(row) if c.mark == "†"), "")


@dataclass(frozen=True)
class FigureFact:
    series: str
    label: str
    x: str
    y: str
    kind: str
    statement: str
    source: str


def _read_csv(path: Path, fields: list[str]) -> list[dict[str, str]]:
    if not path.exists():
        raise InputError(f"{path}: paper numbers file not found (expected under --paper-dir)")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in fields if f not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; expected header {','.join(fields)}")
        return [{k: (row.get(k) or "") for k in fields} for row in reader]


def load_table(paper_dir: str | Path, name: str) -> PaperTable:
    """Read ``{paper_dir}/{name}.csv``."""
    path = Path(paper_dir) / f"{name}.csv"
    rows = _read_csv(path, TABLE_FIELDS)
    cells = []
    for i, row in enumerate(rows, start=2):
        if row["quoted"] not in ("yes", "no"):
            raise InputError(f"{path}:{i}: quoted must be yes or no, got {row['quoted']!r}")
        if not row["source"]:
            raise InputError(f"{path}:{i}: every paper cell needs a source")
        cells.append(PaperCell(row["row"], row["label"], row["column"], row["data"], row["value"], row["mark"],
                               row["source"], row["quoted"] == "yes", row["note"]))
    return PaperTable(name, cells)


def load_figure(paper_dir: str | Path, name: str) -> list[FigureFact]:
    """Read ``{paper_dir}/{name}.csv`` (an empty list when the file does not exist)."""
    path = Path(paper_dir) / f"{name}.csv"
    if not path.exists():
        return []
    return [FigureFact(**row) for row in _read_csv(path, FIGURE_FIELDS)]
