"""Where a run's files live (aeqa_model/layout.py), tested without Snakemake."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from aeqa_model import config as cfgmod
from aeqa_model import config_facts as facts
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
    dim = facts.model_width(lay.cfg, lay.models["aeqa_nat"])
    assert k512 == f"{lay.results}/sqs/ddtp_ende/K512_D{dim}/sqs.pt"
    assert lay.model_sqs_path("ddtp_ende", "aeqa_k128").endswith(f"/K128_D{dim}/sqs.pt")
    assert lay.model_sqs_path("ddtp_ende", "aeqa_sqs_long").endswith(f"/K512_D{dim}_A1200/sqs.pt")


def test_default_decoding_resolves_in_metrics_paths():
    lay = layout("smoke")
    model = next(m for m, spec in lay.models.items() if spec["arch"] == "at")
    default = facts.default_decoding(lay.models[model])
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
    cells = {(ds, di) for name in lay.cfg["outputs"] for ds, di, *_ in facts.output_cells(lay.cfg, name)}
    for ds, di in cells:  # every trained pair has its teacher
        assert lay.teacher_path(ds, di) in models
    assert models == sorted(set(models))


def test_data_helpers_fill_the_patterns():
    lay = layout("config")  # the paper: wmt14_ende_multiref has 10 extra references
    multi = lay.eval_only[0]
    parent = lay.model_dataset(multi)
    de, en = "de", "en"
    assert lay.data_dir(parent) == lay.path("data", dataset=parent) == f"{lay.results}/data/{parent}"
    assert lay.text_file(parent, "orig", "train", en) == f"{lay.results}/data/{parent}/orig/train.{en}"
    assert lay.text_file(parent, "bpe", "valid", de) == lay.path("text", dataset=parent, stage="bpe", split="valid", lang=de)
    assert lay.bin_prefix(parent, "test", de) == f"{lay.results}/data/{parent}/bin/test.{de}"
    assert lay.dict_path(parent) == lay.path("dict", dataset=parent) == f"{lay.results}/data/{parent}/bin/dict.txt"
    assert lay.path("kd_bin", dataset=parent, direction="en-de", side="src") == \
        f"{lay.results}/data/{parent}/kd/en-de/bin/train.src"
    # text_files: split by split, language by language, then the extra references
    langs = lay.datasets[parent]["langs"]
    assert lay.text_files(parent, "tok") == [lay.text_file(parent, "tok", s, lang)
                                             for s in ("train", "valid", "test") for lang in langs]
    assert lay.text_files(parent, "tok", splits=["train"]) == [lay.text_file(parent, "tok", "train", lang) for lang in langs]
    refs = lay.extra_reference_files(multi, "bpe")
    assert len(refs) == lay.datasets[multi]["extra_references"]["count"]
    assert refs[0] == lay.text_file(multi, "bpe", "test.ref1", lay.datasets[multi]["extra_references"]["lang"])
    assert lay.text_files(multi, "bpe")[-len(refs):] == refs
    assert lay.text_files(multi, "bpe", references=False) == [lay.text_file(multi, "bpe", "test", lang)
                                                               for lang in lay.datasets[multi]["langs"]]
    assert lay.text_files(multi, "bpe", splits=[], references=False) == []


def test_sqs_file_names_the_files_of_both_sqs_directories():
    lay = layout("fidelity")
    fill = dict(dataset="ddtp_ende", k=512, dim=64, file="aligned_encoder.pt")
    assert lay.path("sqs", **fill) == lay.path("sqs_file", variant="K512_D64", **fill)
    assert lay.path("sqs_variant", align=1200, **fill) == lay.path("sqs_file", variant="K512_D64_A1200", **fill)
    for model in ("aeqa_nat", "aeqa_sqs_long"):  # the codes of a model read its own sqs.pt
        sqs = lay.model_sqs_path("ddtp_ende", model)
        variant = sqs.rsplit("/", 2)[-2]
        assert sqs == lay.path("sqs_file", dataset="ddtp_ende", variant=variant, file="sqs.pt")


# a data path built by hand in a rule file: an f-string on data_dir, RESULTS or the
# layout's results folder (log: and benchmark: paths excepted: they are no data)
HAND_BUILT = re.compile(r"\{data_dir\(|\{RESULTS\}|\{LAYOUT\.results\}")
DIRECTIVE = re.compile(r"^\s+([a-z_]+):(\s|$)")


def hand_built_paths(text: str) -> list[str]:
    found, section = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line and not line[0].isspace():
            section = None  # a rule, use rule, def or statement at the top level
        directive = DIRECTIVE.match(line)
        if directive:
            section = directive.group(1)
        if HAND_BUILT.search(line) and section not in ("log", "benchmark"):
            found.append(f"{number}: {line.strip()}")
    return found


def test_the_scan_finds_a_hand_built_path():
    rule = ('rule x:\n    input:\n        a=lambda wc: f"{data_dir(wc.dataset)}/bin/dict.txt",\n'
            '        b="{RESULTS}/sqs/{dataset}/{variant}/sqs.pt".replace("{RESULTS}", RESULTS),\n'
            '    log:\n        f"{RESULTS}/logs/x/{{dataset}}.log",\n'
            '    benchmark: f"{RESULTS}/benchmarks/x/{{dataset}}.tsv"\n'
            'def f(wc):\n    return f"{RESULTS}/data/{wc.dataset}/tok/train.en"\n')
    assert [hit.split(":")[0] for hit in hand_built_paths(rule)] == ["3", "4", "9"]


def test_no_rule_file_builds_a_data_path_by_hand():
    found = [f"{smk.name}:{hit}" for smk in sorted((ROOT / "workflow/rules").glob("*.smk"))
             for hit in hand_built_paths(smk.read_text())]
    assert not found, "paths built by hand (use path(...) or a RunLayout helper):\n" + "\n".join(found)
