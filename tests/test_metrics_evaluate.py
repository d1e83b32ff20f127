"""The evaluate stage (aeqa_model.evaluate.cli) end to end: metrics.json layout, neural metrics missing, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aeqa_model.evaluate.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = {"test_split": "test", "speed_subset": 50, "speed_warmup": 5,
        "length_buckets": [0, 5, 10, 20, 40, 1000], "repetition_max_n": 4,
        "bootstrap_samples": 50, "comet_model": None, "bleurt_checkpoint": None}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def cell_files(tmp_path, monkeypatch):
    # An empty HF cache and hidden packages: COMET/BLEURT must be "not available".
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(sys.modules, "comet", None)
    monkeypatch.setitem(sys.modules, "bleurt_pytorch", None)
    f = {
        "hyp_tok": _write(tmp_path / "hyp.tok", ["das ist ein Haus @-@ Boot .", "ich bin hier hier", "gut ."]),
        "ref_tok": _write(tmp_path / "ref.tok", ["das ist ein Haus @-@ Boot .", "ich bin nicht hier", "sehr gut ."]),
        "hyp_detok": _write(tmp_path / "hyp.detok", ["das ist ein Haus-Boot.", "ich bin hier hier", "gut."]),
        "ref_detok": _write(tmp_path / "ref.detok", ["das ist ein Haus-Boot.", "ich bin nicht hier", "sehr gut."]),
        "src_detok": _write(tmp_path / "src", ["this is a houseboat.", "I am not here", "very good."]),
        "base_tok": _write(tmp_path / "base.tok", ["das ist das Haus .", "ich bin", "gut ."]),
        "ref2_tok": _write(tmp_path / "ref2.tok", ["das ist ein Hausboot .", "ich bin hier", "gut ."]),
        "speed": str(tmp_path / "speed.json"),
    }
    Path(f["speed"]).write_text(json.dumps({"latency_ms_per_sentence": 3.1, "device": "cpu"}))
    return tmp_path, f


def _argv(f, out, **extra):
    argv = ["--hyp-tok", f["hyp_tok"], "--ref-tok", f["ref_tok"], "--hyp-detok", f["hyp_detok"],
            "--ref-detok", f["ref_detok"], "--src-detok", f["src_detok"], "--tgt-lang", "de",
            "--spec", json.dumps(extra.pop("spec", SPEC)), "--cell", json.dumps({"run": "t", "model": "m"}),
            "--provenance", json.dumps({"seed": 1, "versions": {"torch": "x"}}), "--out", str(out),
            "--no-progress"]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    return argv


def test_full_metrics_json(cell_files):
    tmp, f = cell_files
    out = tmp / "eval" / "metrics.json"
    rc = main(_argv(f, out, speed=f["speed"], baseline_hyp_tok=f["base_tok"], baseline_name="at/beam4",
                    extra_refs_tok=[f["ref2_tok"]]))
    assert rc == 0
    data = json.loads(out.read_text())
    assert list(data) == ["cell", "n_sentences", "metrics", "speed", "provenance"]
    assert data["cell"] == {"run": "t", "model": "m"}
    assert data["n_sentences"] == 3
    assert data["speed"] == {"latency_ms_per_sentence": 3.1, "device": "cpu"}
    assert data["provenance"]["seed"] == 1 and data["provenance"]["versions"]["torch"] == "x"
    assert "sacrebleu" in data["provenance"]["versions"]
    m = data["metrics"]
    for key in ("bleu_tok", "sacrebleu", "chrf", "chrf_pp", "ter"):
        assert isinstance(m[key]["score"], float) and m[key]["signature"], key
    assert set(m["bleu_tok"]) >= {"score", "signature", "counts", "totals", "bp"}
    assert "tok:13a" in m["sacrebleu"]["signature"]
    for key in ("comet", "bleurt"):
        assert m[key]["score"] is None and m[key]["status"].startswith("not available:")
    assert m["repetition"]["1"] == pytest.approx(1 / 13)   # "hier hier": 1 of 7+4+2 tokens
    assert set(m["repetition"]) >= {"1", "2", "3", "4", "formula"}
    assert [b["lo"] for b in m["length_buckets"]] == [0, 5, 10, 20, 40]
    assert sum(b["n"] for b in m["length_buckets"]) == 3
    assert m["length_buckets"][2]["bleu_tok"] is None
    assert m["multi_reference"]["n_refs"] == 2
    assert m["multi_reference"]["single_ref_score"] == pytest.approx(m["bleu_tok"]["score"])
    assert m["multi_reference"]["score"] >= m["multi_reference"]["single_ref_score"]
    sig = m["significance"]
    assert sig["baseline"] == "at/beam4" and 0 < sig["p_value"] <= 1
    assert "paired bootstrap" in sig["method"] and "n=50" in sig["method"]


def test_minimal_run_marks_optional_parts(cell_files):
    tmp, f = cell_files
    out = tmp / "metrics.json"
    assert main(_argv(f, out)) == 0
    m = json.loads(out.read_text())
    assert m["speed"]["status"].startswith("not available:")
    assert m["metrics"]["significance"]["p_value"] is None
    assert m["metrics"]["significance"]["status"].startswith("not available:")
    assert m["metrics"]["multi_reference"]["score"] is None


def test_line_count_mismatch_names_files(cell_files, capsys):
    tmp, f = cell_files
    f["ref_tok"] = _write(tmp / "short.tok", ["a", "b"])
    out = tmp / "metrics.json"
    assert main(_argv(f, out)) == 2
    err = capsys.readouterr().err
    assert "hyp.tok" in err and "short.tok" in err and "3" in err and "2" in err
    assert not out.exists()


def test_empty_reference_line_and_bad_spec(cell_files, capsys):
    tmp, f = cell_files
    out = tmp / "metrics.json"
    good_ref = f["ref_tok"]
    f["ref_tok"] = _write(tmp / "holes.tok", ["a", "", "c"])
    assert main(_argv(f, out)) == 2
    assert "holes.tok:2" in capsys.readouterr().err
    f["ref_tok"] = good_ref
    assert main(_argv(f, out, spec={**SPEC, "length_buckets": [0, 10, 5]})) == 2
    assert "length_buckets" in capsys.readouterr().err
    assert main(_argv(f, out, spec={**SPEC, "bootstrap_samples": "many"})) == 2
    assert "bootstrap_samples" in capsys.readouterr().err
    assert not out.exists()


def test_chinese_target_uses_zh_tokenizer(cell_files):
    tmp, f = cell_files
    f["hyp_detok"] = _write(tmp / "h.zh", ["我们今天去学校。", "好", "很好"])
    f["ref_detok"] = _write(tmp / "r.zh", ["我们明天去学校。", "好", "非常好"])
    out = tmp / "metrics.json"
    argv = _argv(f, out)
    argv[argv.index("--tgt-lang") + 1] = "zh"
    assert main(argv) == 0
    assert "tok:zh" in json.loads(out.read_text())["metrics"]["sacrebleu"]["signature"]


def test_script_entry_point(cell_files):
    """The exact command the Snakemake rule runs, in a fresh interpreter."""
    tmp, f = cell_files
    out = tmp / "cli" / "metrics.json"
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    argv = _argv(f, out)
    argv[argv.index("--spec") + 1] = str(spec_file)   # a file path works as well as inline JSON
    env = {**os.environ, "HF_HUB_CACHE": str(tmp / "hub")}
    proc = subprocess.run([sys.executable, "-m", "aeqa_model.evaluate.cli", *argv],
                          capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())["metrics"]
    assert m["comet"]["score"] is None and m["comet"]["status"].startswith("not available:")
    assert m["bleurt"]["score"] is None


def test_multi_reference_taken_from_the_multi_reference_set(cell_files):
    tmp, f = cell_files
    multi = tmp / "multi.json"
    assert main(_argv(f, multi, extra_refs_tok=[f["ref2_tok"]])) == 0
    expected = json.loads(multi.read_text())["metrics"]["multi_reference"]
    out = tmp / "main.json"
    assert main(_argv(f, out, multi_reference_from=str(multi))) == 0
    merged = json.loads(out.read_text())["metrics"]["multi_reference"]
    assert merged["score"] == expected["score"] and merged["n_refs"] == 2
    assert merged["evaluated_on"]["file"] == str(multi)
