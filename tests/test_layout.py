"""Where a run's files live (aeqa_model/layout.py), tested without Snakemake."""
from __future__ import annotations

from pathlib import Path

import yaml

from aeqa_model import config as cfgmod
from aeqa_model.layout import PATTERNS, RunLayout

ROOT = Path(__file__).resolve().parents[1]


def layout(name: str) -> RunLayout:
    cfg = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())
    return RunLayout(cfgmod.load(cfg, ROOT))


def test_patterns_fill_only_the_wildcards_given():
    lay = layout("smoke")
    assert lay.results == f"results/{lay.cfg['run_name']}"
    assert lay.path("model") == f"{lay.results}/models/{{dataset}}/{{direction}}/{{data}}/{{model}}/model.pt"
    assert lay.path("model", data="raw") == f"{lay.results}/models/{{dataset}}/{{direction}}/raw/{{model}}/model.pt"
    for name in PATTERNS:  # every pattern lives under the run's folder, once filled
        assert lay.path(name).startswith(lay.results + "/") and "{RESULTS}" not in lay.path(name)


def test_evaluation_only_sets_use_the_models_of_the_set_they_evaluate():
    lay = layout("config")  # the paper: newstest2014 multi-reference is evaluation-only
    assert lay.eval_only, "the paper config has an evaluation-only dataset"
    multi = lay.eval_only[0]
    parent = lay.datasets[multi]["evaluation_of"]
    assert lay.model_dataset(multi) == parent and lay.splits_of(multi) == ["test"]
    assert lay.dict_path(multi) == f"{lay.data_dir(parent)}/bin/dict.txt"
    assert lay.model_path(multi, "en-de", "raw", "at") == lay.model_path(parent, "en-de", "raw", "at")
    assert lay.splits_of(parent) == ["train", "valid", "test"]


def test_sqs_path_follows_codebook_width_and_alignment_length():
    lay = layout("fidelity")
    k512 = lay.model_sqs_path("ddtp_ende", "aeqa_nat")
    dim = cfgmod.model_width(lay.cfg, lay.models["aeqa_nat"])
    assert k512 == f"{lay.results}/sqs/ddtp_ende/K512_D{dim}/sqs.pt"
    assert lay.model_sqs_path("ddtp_ende", "aeqa_k128").endswith(f"/K128_D{dim}/sqs.pt")
    assert lay.model_sqs_path("ddtp_ende", "aeqa_sqs_long").endswith(f"/K512_D{dim}_A1200/sqs.pt")


def test_default_decoding_resolves_in_metrics_paths():
    lay = layout("smoke")
    model = next(m for m, spec in lay.models.items() if spec["arch"] == "at")
    default = cfgmod.default_decoding(lay.models[model])
    assert lay.metrics_path("x", "en-de", "raw", model, "default") == lay.metrics_path("x", "en-de", "raw", model, default)
    assert f"/{default}/metrics.json" in lay.metrics_path("x", "en-de", "raw", model, "default")


def test_paper_targets_cover_every_output_and_the_teachers():
    lay = layout("smoke")
    targets = lay.paper_targets()
    assert lay.paper_index in targets and lay.learning_curves["png"] in targets
    for name in lay.cfg["outputs"]:
        assert lay.paper_file(name) in targets
        kind = lay.output_kind(name)
        assert set(lay.paper_outputs(name)) == ({"md", "tex", "csv"} if kind == "table" else {"png", "pdf"})
    models = lay.trained_models()
    cells = {(ds, di) for name in lay.cfg["outputs"] for ds, di, *_ in cfgmod.output_cells(lay.cfg, name)}
    for ds, di in cells:  # every trained pair has its teacher
        assert lay.teacher_path(ds, di) in models
    assert models == sorted(set(models))
