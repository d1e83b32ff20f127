"""aeqa_model.config directly (no Snakemake): loading, the schema check, the reference
and resource checks with the messages tests/reliability/test_bad_config.py expects
through `snakemake -n`, and the model facts taken from the models."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aeqa_model import config as cfgmod
from aeqa_model import config_facts as facts
from aeqa_model.models import model_class

ROOT = Path(__file__).resolve().parents[1]


def smoke() -> dict:
    return yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))


def problems(cfg: dict) -> str:
    with pytest.raises(ValueError) as err:
        cfgmod.load(cfg, ROOT)
    return str(err.value)


@pytest.mark.parametrize("name", ["smoke", "demo", "fidelity", "config"])
def test_every_shipped_config_loads(name):
    cfg = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text(encoding="utf-8"))
    assert cfgmod.load(cfg, ROOT) is cfg
    if cfg.get("paper_grid"):
        assert cfg["outputs"], "the paper grid's outputs were merged in"


def test_every_evaluate_setting_the_evaluator_reads_can_be_set():
    """The evaluator reads the declared evaluate settings; the schema used to reject three
    of them (bootstrap_seed, comet_batch_size, bleurt_batch_size), so they could never be
    set from a config (issue 28). Now the schema is generated from the declarations."""
    from aeqa_model.metrics.settings import DEFAULTS

    cfg = smoke()
    cfg["evaluate"].update({key: value for key, value in DEFAULTS.items() if value is not None})
    cfgmod.load(cfg, ROOT)
    bad = smoke()
    bad["evaluate"]["bootstrap_samples"] = 0          # the evaluator needs >= 1: refused at start-up
    assert "bootstrap_samples" in problems(bad)


def test_schema_lists_every_problem_on_one_line_each():
    cfg = smoke()
    cfg["bogus_key"] = 3
    cfg["training"]["lr"] = "fast"
    cfg["distill"]["shards"] = -2
    message = problems(cfg)
    assert message.startswith("invalid config (3 problem(s)")
    assert "bogus_key: unknown key (allowed here:" in message
    assert "training.lr: 'fast' is not of type 'number'" in message
    assert "distill.shards: -2 is less than the minimum of 1" in message
    assert "Failed validating" not in message


def test_schema_checks_models_the_paper_grid_adds(tmp_path):
    grid = {"models": {"extra": {"arch": "vanilla_nat", "size": "smoke", "seed": -1}}, "decodings": {}, "outputs": {}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid), encoding="utf-8")
    cfg = smoke()
    cfg["paper_grid"] = str(tmp_path / "grid.yaml")
    assert "models.extra.seed: -1 is less than the minimum of 0" in problems(cfg)


def test_paper_grid_clash_and_missing_file(tmp_path):
    cfg = smoke()
    cfg["paper_grid"] = str(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="config key paper_grid: .*nope.yaml does not exist"):
        cfgmod.merge_paper_grid(cfg, ROOT)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"models": {"at": {"arch": "at", "size": "big"}}}))
    cfg["paper_grid"] = str(tmp_path / "grid.yaml")
    with pytest.raises(ValueError, match=r"models \['at'\] are already defined in the config with other values"):
        cfgmod.merge_paper_grid(cfg, ROOT)


def test_model_defaults_reach_the_models_that_take_them():
    cfg = smoke()
    cfg["model_defaults"] = {"softcopy_tau": 0.5}
    cfgmod.load(cfg, ROOT)
    assert cfg["models"]["vanilla_nat"]["softcopy_tau"] == 0.5
    assert "softcopy_tau" not in cfg["models"]["at"]
    cfg = smoke()
    cfg["models"] = {"at": cfg["models"]["at"]}
    cfg["model_defaults"] = {"softcopy_tau": 0.5}
    assert "model_defaults.softcopy_tau: no model's architecture takes this option" in problems(cfg)


@pytest.mark.parametrize("edit, says", [
    (lambda c: c["datasets"]["smoke_ende"].update(sources=["nope"]), "datasets.smoke_ende.sources: unknown source 'nope'"),
    (lambda c: c["models"]["at"].update(size="huge"), "models.at.size: unknown size 'huge'"),
    (lambda c: c["models"]["at"].update(codebook_szie=3), "models.at.codebook_szie: unknown option for arch 'at'"),
    (lambda c: c["distill"].update(teacher="nope"), "distill.teacher: unknown model 'nope'"),
    (lambda c: c["pretrain_sqs"].update(encoder="mbart", mbart_path="/nonexistent/mbart-large-cc25"),
     "pretrain_sqs.mbart_path: /nonexistent/mbart-large-cc25 is not a directory"),
    (lambda c: c["evaluate"].update(comet_model="/nonexistent/wmt22-comet-da"), "evaluate.comet_model"),
])
def test_references(edit, says):
    cfg = smoke()
    edit(cfg)
    message = problems(cfg)
    assert message.startswith("invalid config (fix these before anything runs):")
    assert says in message


def test_mbart_directory_without_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    [problem] = cfgmod.mbart_problems({"encoder": "mbart", "mbart_path": str(tmp_path)})
    assert "incomplete mBART directory, missing sentencepiece.bpe.model" in problem
    assert cfgmod.mbart_problems({"encoder": "embedded"}) == []


def test_resources():
    cfg = smoke()
    cfg["resources"] = {"prepare": {"runtime": "throughput"}}
    with pytest.raises(ValueError, match=r"resources.prepare.runtime: 'throughput' is only for the training stages"):
        cfgmod.check_resources(cfg)
    cfg["resources"] = {"train_nat": {"runtime": 10, "signal_before_s": 600}}
    with pytest.raises(ValueError, match=r"resources.train_nat.signal_before_s \(600 s\) must be shorter"):
        cfgmod.check_resources(cfg)
    cfg["resources"] = {}
    cfg["datasets"]["smoke_ende"]["resources"] = {"decode": {"slurm_partition": "gpu"}}
    with pytest.raises(ValueError, match=r"datasets.smoke_ende.resources.decode.slurm_partition: set resources.decode"):
        cfgmod.check_resources(cfg)


def test_model_facts_come_from_the_models():
    cfg = cfgmod.load(smoke(), ROOT)
    for spec in cfg["models"].values():
        assert facts.default_decoding(spec) == (spec.get("decoding") or model_class(spec["arch"]).default_decoding)
    assert facts.default_decoding({"arch": "at", "decoding": "greedy"}) == "greedy"
    assert facts.model_width(cfg, cfg["models"]["aeqa_nat"]) == cfg["model_sizes"]["smoke"]["embed_dim"]
    assert facts.model_width(cfg, {"arch": "at", "size": "big"}) == 1024
    assert facts.model_width(cfg, {"arch": "at", "size": "base", "embed_dim": 256}) == 256
    assert facts.codebook_size(cfg["models"]["aeqa_nat"]) == 32
    assert facts.codebook_size({"arch": "aeqa_nat"}) == facts.codebook_size({"arch": "aeqa_dat"}) == 2048
    assert facts.needs_sqs({"arch": "aeqa_dat"}) and not facts.needs_sqs({"arch": "aeqa_nat", "sqs_init": "random"})
    assert not facts.needs_sqs({"arch": "glat"})


def test_output_cells_resolve_default_decodings():
    cfg = cfgmod.load(smoke(), ROOT)
    for name in cfg["outputs"]:
        cells = facts.output_cells(cfg, name)
        assert cells == sorted(set(cells))
        assert all(dec != "default" for *_, dec in cells)
    paper = cfgmod.load(yaml.safe_load((ROOT / "config/config.yaml").read_text(encoding="utf-8")), ROOT)
    multi = facts.multi_reference_cells(paper)
    assert multi and all(cell[1] == "en-de" for cell in multi)


def test_load_leaves_the_config_it_was_given_usable():
    cfg = smoke()
    before = copy.deepcopy(cfg)
    cfgmod.load(cfg, ROOT)
    assert set(before) <= set(cfg)


def test_each_job_reads_only_its_settings():
    """The narrowed settings the rules hash into their params (what-reruns-what is
    tested end to end in tests/reliability/test_targeted_reruns.py)."""
    from aeqa_model import cluster

    cfg = cfgmod.load(smoke(), ROOT)
    dataset = next(iter(cfg["datasets"].values()))
    spec = facts.download_spec({**dataset, "prepare": {"max_ratio": 9}, "bpe": {"merges": 7}})
    assert set(spec) <= set(facts.DOWNLOAD_KEYS) and spec["recipe"] == dataset["recipe"]
    encoder = facts.encoder_stage_spec(cfg)
    assert not set(encoder) & set(facts.ALIGN_ONLY_KEYS)
    assert set(encoder) | set(facts.ALIGN_ONLY_KEYS) >= set(cfg["pretrain_sqs"])
    aeqa = cfg["models"]["aeqa_nat"]
    assert facts.size_entry(cfg, aeqa) == {aeqa["size"]: cfg["model_sizes"][aeqa["size"]]}
    assert facts.size_entry(cfg, {"arch": "at", "size": "base"}) == {}
    assert facts.model_seed(cfg, {"arch": "at", "seed": 7}) == 7
    assert facts.model_seed(cfg, {"arch": "at"}) == cfg["seed"]
    assert facts.needs_sqs(aeqa) == (aeqa.get("sqs_init", "pretrained") == "pretrained")
    assert not facts.needs_sqs({**aeqa, "sqs_init": "random"})
    assert not facts.needs_sqs({"arch": "glat"})
    assert cluster.launcher("py", 0) == cluster.launcher("py", 1) == ["py"]
    assert cluster.launcher("py", 4)[1:3] == ["-m", "torch.distributed.run"]
    assert cluster.launcher("py", 4)[-1] == "4"


def test_every_decoding_option_has_a_rule_and_every_rule_an_option():
    from aeqa_model.decode import OPTION_RULES, STRATEGIES

    assert set(OPTION_RULES) == {option for strategy in STRATEGIES.values() for option in strategy.options}


def test_the_shipped_configs_pass_the_decoding_option_checks():
    """Their types and ranges (issue 24; each bad value: tests/reliability/test_bad_settings.py)."""
    from aeqa_model.decode import check_decoding

    for path in [*sorted((ROOT / "config").glob("*.yaml")), *sorted((ROOT / "config/paper").glob("grid-*.yaml"))]:
        for name, decoding in (yaml.safe_load(path.read_text(encoding="utf-8")).get("decodings") or {}).items():
            assert check_decoding(name, decoding) == [], path


def test_architecture_names_come_from_the_one_registry(monkeypatch):
    """The schema names no architecture itself (issue 28): a model entry's arch and the
    throughput table's keys follow models.ARCHS, so a new arch is one registry line."""
    from aeqa_model import models

    cfg = smoke()
    cfg["models"][next(iter(cfg["models"]))]["arch"] = "nonesuch"
    assert "arch: 'nonesuch' is not one of" in problems(cfg)
    cfg = smoke()
    cfg.setdefault("throughput", {"tokens_per_s": {}, "safety_factor": 1.5})["tokens_per_s"]["newarch"] = 1000.0
    assert "newarch" in problems(cfg)
    monkeypatch.setitem(models.ARCHS, "newarch", models.ARCHS["vanilla_nat"])
    rules = cfgmod.with_model_options(yaml.safe_load(cfgmod.SCHEMA.read_text(encoding="utf-8")))
    assert "newarch" in rules["$defs"]["model"]["properties"]["arch"]["enum"]
    pattern = next(iter(rules["properties"]["throughput"]["properties"]["tokens_per_s"]["patternProperties"]))
    assert "newarch" in pattern.strip("^$()").split("|")
    graph = rules["properties"]["throughput"]["properties"]["graph_factor"]["patternProperties"]
    assert list(graph) == ["^(aeqa_dat|dat)$"]
