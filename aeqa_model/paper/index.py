"""``paper/README.md``: per table, how many cells were reproduced and how far they are from the paper."""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from aeqa_model.io import InputError, atomic_open
from aeqa_model.paper.numbers import fmt2, to_decimal


def summarize_table(path: str | Path) -> dict:
    """Counts from one rendered table CSV (the ``status`` and ``diff`` columns)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "status" not in rows[0]:
        raise InputError(f"{path}: not a rendered table CSV (no status column)")
    reproduced = [r for r in rows if r["status"] == "reproduced"]
    diffs = [to_decimal(r["diff"]) for r in reproduced if r["diff"] != ""]
    missing: dict[str, int] = {}
    for r in rows:
        if r["status"] == "missing" and r["kind"] == "metric":
            missing[r["reason"]] = missing.get(r["reason"], 0) + 1
    return {
        "table": rows[0]["table"] if rows else Path(path).stem,
        "reproduced": len(reproduced),
        "compared": len(diffs),
        "mad": (sum((abs(d) for d in diffs), Decimal(0)) / len(diffs)) if diffs else None,
        "derived": sum(1 for r in rows if r["status"] == "derived" and r["reproduced"] != ""),
        "quoted_rows": len({r["row_key"] for r in rows if r["row_kind"] == "quoted"}),
        "missing": missing,
    }


def render_index(inputs: list[str], out_dir: str | Path, notice: str = "") -> Path:
    """Write ``{out_dir}/README.md`` from rendered table CSVs (figure files are listed)."""
    tables = sorted((p for p in inputs if p.endswith(".csv")), key=lambda p: Path(p).stem)
    figures = sorted(p for p in inputs if p.endswith((".png", ".pdf")))
    lines = ["# Reproduced tables and figures", ""]
    if notice:
        lines += [f"> **{notice}**", ""]
    lines += [
        "Reproduced: a table cell with a number from this run's metrics.json. Compared: a reproduced cell the paper",
        "prints a number for; the mean absolute difference (MAD) is over those, in the table's own unit",
        "(BLEU points, or x for speedups, mixed in Table 1 and Table 5). Derived cells (Table 2's gap, Table 4's Δ,",
        "Table 3's best λ) are counted apart. Quoted rows are prior work the paper quotes; they are never reproduced.",
        "",
        "| table | reproduced cells | compared with paper | mean abs. difference | derived cells | quoted rows | missing cells (reason: count) |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in tables:
        s = summarize_table(path)
        missing = "; ".join(f"{reason}: {n}" for reason, n in sorted(s["missing"].items())) or "none"
        mad = fmt2(s["mad"]) if s["mad"] is not None else "n/a"
        lines.append(f"| [{s['table']}]({s['table']}.md) | {s['reproduced']} | {s['compared']} | {mad} | "
                     f"{s['derived']} | {s['quoted_rows']} | {missing.replace('|', '/')} |")
    if figures:
        lines += ["", "Figures:", ""]
        lines += [f"- [{Path(p).name}]({Path(p).name})" for p in figures]
    path = Path(out_dir) / "README.md"
    with atomic_open(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return path
