"""Rendering tables, figures and the index from fixture metrics.json files (docs/formats.md)."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from aeqa_model.io import InputError, write_json
from aeqa_model.paper.cells import NO_MULTI_REF
from aeqa_model.paper.cli import main
from aeqa_model.paper.grid import FIGURES, TABLES, expand_blocks, load_grid
from aeqa_model.paper.index import summarize_table
from aeqa_model.paper.paperdata import load_table
from aeqa_model.paper.tables import TableRenderer

ROOT = Path(__file__).resolve().parent.parent
PAPER_DIR = ROOT / "config" / "paper"
DEFAULT_DECODING = {"at": "beam4", "cmlm": "mask_predict10", "dat": "lookahead", "aeqa_dat": "lookahead"}
COMET_STATUS = "not available: no local checkpoint for Unbabel/wmt22-comet-da (set evaluate.comet_model)"


def fake_value(*key, lo=1.0, hi=35.0) -> float:
    """A deterministic float with many decimals (so rounding drift would show)."""
    h = int(hashlib.sha256("/".join(map(str, key)).encode()).hexdigest(), 16)
    return lo + (h % 10**9) / 10**9 * (hi - lo)


def metrics_doc(cell, bleu, speedup, arch):
    """A metrics.json document in the shape docs/formats.md and metrics/evaluate.py write."""
    ds, di, da, mo, de = cell
    return {
        "cell": {"run": "demo", "dataset": ds, "direction": di, "src": di[:2], "tgt": di[3:], "data": da,
                 "model": mo, "arch": arch, "decoding": de, "model_config": {"arch": arch}, "decoding_config": {},
                 "default_decoding": "beam4" if arch == "at" else "argmax"},
        "n_sentences": 600,
        "metrics": {
            "bleu_tok": {"score": bleu, "signature": "tokenized BLEU-4"},
            "sacrebleu": {"score": fake_value(*cell, "sacre"), "signature": "nrefs:1|..."},
            "chrf": {"score": fake_value(*cell, "chrf", lo=20, hi=60), "signature": "..."},
            "comet": {"score": None, "status": COMET_STATUS},
            "bleurt": {"score": None, "status": "not available: no local BLEURT-20 checkpoint"},
            "repetition": {"1": 0.05, "2": 0.01, "3": 0.004, "4": 0.0, "formula": "rep_n = ..."},
            "length_buckets": [{"lo": 0, "hi": 10, "n": 120, "bleu_tok": fake_value(*cell, 0)},
                               {"lo": 10, "hi": 20, "n": 80, "bleu_tok": fake_value(*cell, 10)},
                               {"lo": 20, "hi": 1000, "n": 0, "bleu_tok": None}],
            "multi_reference": {"score": None, "n_refs": 1, "status": "not available: no extra references given"},
        },
        "speed": {"latency_ms_per_sentence": 3.1, "at_latency_ms_per_sentence": 40.2, "speedup": speedup,
                  "batch_size": 1, "n_sentences": 50, "warmup": 5, "device": "cpu", "dtype": "float32", "threads": 1},
        "provenance": {"config_sha256": "x", "git_commit": "y", "versions": {"torch": "2.5"}, "seed": 1,
                       "device": "cpu", "created": "2026-11-24T23:59:00Z"},
    }


def arch_of(grid, model):
    if model in grid["models"]:
        return grid["models"][model]["arch"]
    return {"aeqa_nat_ar": "aeqa_nat", "aeqa_nat_dslp": "aeqa_nat", "aeqa_nat_ar_dslp": "aeqa_nat"}.get(model, model)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Fixture metrics for every cell of the demo grid, written where the Snakefile would put them."""
    root = tmp_path_factory.mktemp("paper")
    grid = load_grid(PAPER_DIR / "grid-demo.yaml")
    values, files = {}, {}
    for name, spec in grid["outputs"].items():
        files[name] = []
        for ds, di, da, mo, de in expand_blocks(spec):
            arch = arch_of(grid, mo)
            dec = DEFAULT_DECODING.get(arch, "argmax") if de == "default" else de
            cell = (ds, di, da, mo, dec)
            path = root / "results/demo/eval" / ds / di / da / mo / dec / "metrics.json"
            if cell not in values:
                bleu = fake_value(*cell)
                speedup = 1.0 if arch == "at" else fake_value(*cell, "speed", lo=2, hi=15)
                # Values whose 2-decimal rounding is easy to get wrong in binary floats.
                if cell == ("demo_ende", "en-de", "raw", "vanilla_nat", "argmax"):
                    bleu = 2.675
                if cell == ("demo_ende", "en-de", "raw", "glat", "argmax"):
                    bleu = 26.005
                values[cell] = {"bleu": bleu, "speedup": speedup}
                write_json(path, metrics_doc(cell, bleu, speedup, arch))
            files[name].append(str(path))
    out = root / "paper"
    for name, spec in grid["outputs"].items():
        assert main(["--target", name, "--spec", json.dumps(spec), "--paper-dir", str(PAPER_DIR),
                     "--metrics", *files[name], "--out-dir", str(out)]) == 0
    inputs = [str(out / f"{t}.csv") for t in TABLES] + [str(out / f"{f}.png") for f in FIGURES]
    assert main(["--target", "index", "--spec", "{}", "--inputs", *inputs, "--out-dir", str(out)]) == 0
    return {"grid": grid, "values": values, "out": out, "files": files, "root": root}


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def two_decimals(value) -> str:
    return f"{Decimal(repr(value)).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"


# --------------------------------------------------------------- numbers --
@pytest.mark.parametrize("table", TABLES)
def test_reproduced_numbers_are_exact(demo, table):
    """CSV keeps the metrics value exactly; md and tex show it with exactly 2 decimals, and so does the diff."""
    rows = read_csv(demo["out"] / f"{table}.csv")
    md = (demo["out"] / f"{table}.md").read_text(encoding="utf-8")
    tex = (demo["out"] / f"{table}.tex").read_text(encoding="utf-8")
    checked = 0
    for row in rows:
        if row["status"] != "reproduced":
            continue
        doc = json.loads(Path(row["metrics_file"]).read_text(encoding="utf-8"))
        raw = doc["speed"]["speedup"] if row["metric"] == "speedup" else doc["metrics"][row["metric"]]["score"]
        assert Decimal(row["reproduced"]) == Decimal(repr(raw))
        shown = two_decimals(raw) + ("x" if row["metric"] == "speedup" else "")
        assert shown in md and shown in tex
        if row["paper_value"]:
            diff = Decimal(repr(raw)) - Decimal(row["paper_value"])
            assert Decimal(row["diff"]) == diff
            d = f"{diff.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"
            d = d if d.startswith("-") else "+" + d
            assert f"Δ {d}" in md
        checked += 1
    assert checked > 0


def test_half_up_rounding_without_drift(demo):
    md = (demo["out"] / "table1.md").read_text(encoding="utf-8")
    line = next(l for l in md.splitlines() if "vanilla_nat / argmax" in l)
    assert "2.68 (paper 10.84*; Δ -8.17)" in line  # 2.675 - 10.84 = -8.165
    line = next(l for l in md.splitlines() if "glat / argmax" in l)
    assert "26.01 (paper 18.94*; Δ +7.07)" in line  # 26.005 - 18.94 = 7.065


# ----------------------------------------------------------------- quoted --
def test_quoted_rows_are_verbatim(demo):
    paper = load_table(PAPER_DIR, "table1")
    rows = read_csv(demo["out"] / "table1.csv")
    md_lines = (demo["out"] / "table1.md").read_text(encoding="utf-8").splitlines()
    quoted = [r for r in paper.row_ids() if paper.row_quoted(r)]
    assert "t1_vanilla_nat" in quoted and "t1_aeqa_nat" not in quoted
    for rid in quoted:
        label = paper.row_label(rid)
        line = next(l for l in md_lines if l.startswith(f"| {label} *(quoted)*"))
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for pc in paper.row_cells(rid):
            out = next(r for r in rows if r["row_key"] == rid and r["column"] == _col(pc))
            assert out["paper"] == pc.printed and out["status"] == "quoted" and out["reproduced"] == ""
            assert pc.printed in cells
        assert "quoted: " in line
        cited = [s for s in paper.row_sources(rid) if not s.startswith("this paper")]
        assert all(c in line for c in cited)


def _col(pc):
    return pc.column + {"raw": " Raw", "kd": " KD", "": ""}[pc.data]


def test_reproduced_rows_follow_quoted_rows(demo):
    md = (demo["out"] / "table1.md").read_text(encoding="utf-8").splitlines()
    i = next(i for i, l in enumerate(md) if l.startswith("| GLAT (Qian et al., 2021) *(quoted)*"))
    assert md[i + 1].startswith("| ↳ reproduced: GLAT (Qian et al., 2021) | glat / argmax |")


# ---------------------------------------------------------------- missing --
def test_missing_cells_say_why(demo):
    t1 = {(r["row_key"], r["column"]): r for r in read_csv(demo["out"] / "table1.csv")}
    ro = t1[("t1_vanilla_nat#reproduced", "RO-EN Raw")]
    assert ro["status"] == "missing" and ro["reason"] == "not run in this config"
    md = (demo["out"] / "table1.md").read_text(encoding="utf-8")
    assert "— (not run in this config; paper 21.93*)" in md
    t5 = read_csv(demo["out"] / "table5.csv")
    comet = [r for r in t5 if r["column"] == "COMET" and r["kind"] == "metric"]
    assert comet and all(r["reason"] == "metric not available: no local checkpoint for Unbabel/wmt22-comet-da "
                         "(set evaluate.comet_model)" for r in comet)
    t4 = read_csv(demo["out"] / "table4.csv")
    multi = [r for r in t4 if r["column"] == "Multiple BLEU"]
    assert multi and all(r["reason"] == NO_MULTI_REF for r in multi)
    t2 = read_csv(demo["out"] / "table2.csv")
    iwslt = [r for r in t2 if r["column"] == "IWSLT16 DE-EN"]
    assert iwslt and all(r["reason"].startswith("not run in this config") for r in iwslt)
    t3 = read_csv(demo["out"] / "table3.csv")
    assert all(r["paper"] == "(not given in the text)" for r in t3 if r["column"].startswith("λ="))


def test_demo_notice_in_every_table(demo):
    for table in TABLES:
        assert "NOT comparable" in (demo["out"] / f"{table}.md").read_text(encoding="utf-8")
        assert "NOT comparable" in (demo["out"] / f"{table}.tex").read_text(encoding="utf-8")


# ---------------------------------------------------------------- derived --
def test_table2_gap_is_mean_of_kd_minus_raw(demo):
    v = demo["values"]
    # Every column where both the raw and the KD cell ran: the two EN-DE columns and the
    # demo-only EN-RO and ZH-EN columns (IWSLT16 is not run in the demo).
    cols = [("demo_ende", "en-de"), ("demo_ende", "de-en"), ("demo_enro", "en-ro"), ("demo_zhen", "zh-en")]
    gap = sum(Decimal(repr(v[(d, di, "kd", "vanilla_nat", "argmax")]["bleu"]))
              - Decimal(repr(v[(d, di, "raw", "vanilla_nat", "argmax")]["bleu"])) for d, di in cols) / len(cols)
    row = next(r for r in read_csv(demo["out"] / "table2.csv")
               if r["row_key"] == "t2_vanilla_nat" and r["kind"] == "derived")
    assert Decimal(row["reproduced"]) == gap and row["paper"] == "+7.24"
    md = (demo["out"] / "table2.md").read_text(encoding="utf-8")
    sign = "+" if gap >= 0 else ""
    assert f"{sign}{gap.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f} (paper +7.24;" in md
    assert "mean over 4 of 5 columns" in md


def test_table4_delta_and_table3_best(demo):
    v = demo["values"]
    rows = read_csv(demo["out"] / "table4.csv")
    delta = next(r for r in rows if r["row_key"] == "t4_raw_glat" and r["column"] == "Single Δ")
    expected = (Decimal(repr(v[("demo_ende", "en-de", "raw", "glat", "argmax")]["bleu"]))
                - Decimal(repr(v[("demo_ende", "en-de", "raw", "vanilla_nat", "argmax")]["bleu"])))
    assert Decimal(delta["reproduced"]) == expected and delta["paper"] == "+8.1"
    base = next(r for r in rows if r["row_key"] == "t4_raw_vanilla_nat" and r["column"] == "Single Δ")
    assert base["reason"] == "baseline row"
    t3 = read_csv(demo["out"] / "table3.csv")
    best = next(r for r in t3 if r["row_key"] == "t3_wmt14_ende" and r["column"] == "best λ")
    scores = {lam: v[("demo_ende", "en-de", "raw", "aeqa_nat", f"twopass_l{lam}")]["bleu"]
              for lam in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6")}
    assert Decimal(best["reproduced"]) == Decimal(max(scores, key=scores.get)) and best["paper"] == "0.4"


# ---------------------------------------------------------------- figures --
@pytest.mark.parametrize("figure", FIGURES)
def test_figures_are_written(demo, figure):
    png = demo["out"] / f"{figure}.png"
    pdf = demo["out"] / f"{figure}.pdf"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(demo["out"].glob(f".{figure}*"))  # no temporary files left behind


# ------------------------------------------------------------------ index --
def test_index_counts(demo):
    readme = (demo["out"] / "README.md").read_text(encoding="utf-8")
    for table in TABLES:
        rows = read_csv(demo["out"] / f"{table}.csv")
        n = sum(1 for r in rows if r["status"] == "reproduced")
        diffs = [abs(Decimal(r["diff"])) for r in rows if r["status"] == "reproduced" and r["diff"]]
        mad = f"{(sum(diffs) / len(diffs)).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}" if diffs else "n/a"
        line = next(l for l in readme.splitlines() if l.startswith(f"| [{table}]"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == str(n) and cells[2] == str(len(diffs)) and cells[3] == mad
        assert summarize_table(demo["out"] / f"{table}.csv")["reproduced"] == n
    # Table 1 on the demo: the EN-DE raw column has 12 of its 13 reproduced rows (aeqa_nat_dslp is not run).
    t1 = read_csv(demo["out"] / "table1.csv")
    assert sum(1 for r in t1 if r["column"] == "EN-DE Raw" and r["status"] == "reproduced") == 12
    assert "figure7.png" in readme


# ------------------------------------------------------------ small specs --
def _write(tmp_path, cell, bleu, arch=None):
    path = tmp_path / "eval" / "/".join(cell) / "metrics.json"
    write_json(path, metrics_doc(cell, bleu, 3.0, arch or cell[3]))
    return str(path)


def test_default_decoding_is_resolved_or_refused(tmp_path):
    spec = {"caption": "t", "columns": [{"paper_column": "BLEU", "metric": "bleu_tok"}],
            "defaults": {"dataset": "d", "direction": "en-de", "data": "raw"},
            "rows": [{"paper_row": "t6_line1", "model": "m"}], "blocks": []}
    a = _write(tmp_path, ("d", "en-de", "raw", "m", "argmax"), 12.5)
    r = TableRenderer("table6", spec, PAPER_DIR, [a])
    cell = r.rows[0].cells[0]
    assert cell.repro == Decimal("12.5") and r.rows[0].pipeline.startswith("m / argmax")
    b = _write(tmp_path, ("d", "en-de", "raw", "m", "other"), 13.5)
    # both record the model's default decoding (argmax): the tie is broken that way.
    assert TableRenderer("table6", spec, PAPER_DIR, [a, b]).rows[0].cells[0].repro == Decimal("12.5")
    c = _write(tmp_path, ("d", "en-de", "raw", "m", "third"), 14.5)
    doc = json.loads(Path(a).read_text(encoding="utf-8"))
    doc["cell"]["default_decoding"] = "nothere"
    write_json(a, doc)
    with pytest.raises(InputError, match="default decoding"):
        TableRenderer("table6", spec, PAPER_DIR, [a, b, c])
    spec["default_decodings"] = {"m": "other"}
    assert TableRenderer("table6", spec, PAPER_DIR, [a, b, c]).rows[0].cells[0].repro == Decimal("13.5")


def test_cli_reports_bad_spec(tmp_path, capsys):
    assert main(["--target", "table6", "--spec", "{not json", "--out-dir", str(tmp_path)]) == 2
    assert "--spec" in capsys.readouterr().err
    assert main(["--target", "table9", "--spec", "{}", "--out-dir", str(tmp_path)]) == 2


def test_tex_is_booktabs(demo):
    tex = (demo["out"] / "table1.tex").read_text(encoding="utf-8")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    # Every row has as many cells as the header.
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    header = tex.split("\\toprule\n", 1)[1].split("\\\\", 1)[0]
    n = len(re.split(r"(?<!\\)&", header))
    for line in body.strip().splitlines():
        assert len(re.split(r"(?<!\\)&", line)) == n


def _write_log(root, cell, rows):
    path = root.joinpath("models", *cell, "train_log.csv")
    path.parent.mkdir(parents=True)
    lines = ["update,epoch,lr,loss,valid_loss,valid_bleu"]
    lines += [f"{u},0,0.001,5.0,{vl},{vb}" for u, vl, vb in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_learning_curves_plot_every_validation_point(tmp_path):
    import csv

    from aeqa_model.paper.curves import render_learning_curves

    logs = [
        _write_log(tmp_path, ("demo_ende", "en-de", "raw", "glat"), [(1, "", ""), (2, 6.5, 1.5), (3, "", ""), (4, 6.0, 3.25)]),
        # a resumed run logged update 2 twice: the later record wins
        _write_log(tmp_path, ("demo_ende", "en-de", "kd", "vanilla_nat"), [(2, 7.0, 0.5), (2, 6.9, 0.75), (4, 6.1, 2.0)]),
    ]
    paths = render_learning_curves(logs, tmp_path / "paper")
    assert sorted(p.name for p in paths) == ["learning_curves.csv", "learning_curves.pdf", "learning_curves.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    with open(tmp_path / "paper" / "learning_curves.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    got = [(r["data"], r["model"], int(r["update"]), float(r["valid_bleu"])) for r in rows]
    assert got == [("kd", "vanilla_nat", 2, 0.75), ("kd", "vanilla_nat", 4, 2.0),
                   ("raw", "glat", 2, 1.5), ("raw", "glat", 4, 3.25)]
    assert all(r["train_log"] in logs for r in rows)


def test_learning_curves_refuse_logs_they_cannot_place(tmp_path):
    from aeqa_model.io import InputError
    from aeqa_model.paper.curves import render_learning_curves

    stray = tmp_path / "train_log.csv"
    stray.write_text("update,valid_bleu\n1,2.0\n", encoding="utf-8")
    with pytest.raises(InputError, match="models/<dataset>"):
        render_learning_curves([str(stray)], tmp_path / "out")
    missing = tmp_path / "models" / "d" / "en-de" / "raw" / "m" / "train_log.csv"
    with pytest.raises(InputError, match="training log not found"):
        render_learning_curves([str(missing)], tmp_path / "out")
    with pytest.raises(InputError, match="no training logs"):
        render_learning_curves([], tmp_path / "out")


def test_run_summary_rows_come_from_metrics_and_logs(tmp_path):
    from aeqa_model.paper.summary import main, summary_rows

    cell = tmp_path / "eval/d/en-de/raw/glat/argmax/metrics.json"
    cell.parent.mkdir(parents=True)
    write_json(cell, {"metrics": {"bleu_tok": {"score": 6.861, "sys_len": 150, "ref_len": 100},
                                  "chrf": {"score": 33.04}}, "provenance": {"seed": 2}})
    _write_log(tmp_path, ("d", "en-de", "raw", "glat"), [(100, 6.0, 1.5), (200, 5.5, 3.304)])
    assert summary_rows(tmp_path, "d", "en-de") == ["| raw | glat | argmax | 2 | 6.86 | 33.0 | 1.50 | 3.30 (200) |"]
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(tmp_path)]) == 0                      # the run's only dataset, d
    (tmp_path / "eval/e").mkdir()
    assert main([str(tmp_path)]) == 2                      # two datasets: --dataset needed
    assert main([str(tmp_path), "--dataset", "d"]) == 0
