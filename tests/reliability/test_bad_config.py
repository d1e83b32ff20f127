"""Bad configs through Snakemake (config/smoke.yaml with one mistake each): an unknown key,
a wrong type, a negative size, a missing checkpoint path, an mBART directory without its
tokenizer. Each fails at start-up, before any job runs, with an error naming the key (and
the path) and saying what to do."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.reliability.faultlib import ROOT, run_snakemake

pytestmark = pytest.mark.fault

SMOKE = yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))


def set_key(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value
    return cfg


def run_bad(tmp_path: Path, cfg: dict, ledger, *names) -> str:
    """Run the workflow with ``cfg``; it must fail before any job, naming each of ``names``."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    results = tmp_path / "results"
    proc = run_snakemake(tmp_path, config, results, "--dry-run", timeout=120)  # start-up only: no job can run
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert not results.exists(), "a job ran although the config is invalid"
    assert "rule download" not in output and "Building DAG" not in output, output[-3000:]
    error = output[output.index("Error") if "Error" in output else 0:]
    return ledger.message(error[:3000], names=names)


UNKNOWN_KEYS = [
    ("bogus_key", 3, ["bogus_key"]),                                     # top level
    ("training.max_update", 20, ["training.max_update"]),                # a typo of max_updates
    ("sources.django.sha265", "0" * 64, ["sources.django.sha265"]),      # a typo that disabled the checksum
    ("datasets.smoke_ende.prepare.max_tokes", 50, ["datasets.smoke_ende.prepare.max_tokes"]),
    ("evaluate.comet", "x", ["evaluate.comet"]),
]


@pytest.mark.parametrize("key,value,names", UNKNOWN_KEYS, ids=[k for k, _, _ in UNKNOWN_KEYS])
def test_unknown_key(tmp_path, ledger, key, value, names):
    msg = run_bad(tmp_path, set_key(SMOKE, key, value), ledger, *names)
    assert "unknown key" in msg


WRONG = [
    ("training.lr", "fast", ["training.lr", "fast"]),
    ("seed", "one", ["seed"]),
    ("datasets.smoke_ende.langs", "en-de", ["datasets.smoke_ende.langs"]),
    ("model_sizes.smoke.embed_dim", -32, ["model_sizes.smoke.embed_dim", "-32"]),
    ("training.max_tokens", -800, ["training.max_tokens", "-800"]),
    ("datasets.smoke_ende.bpe.merges", 0, ["datasets.smoke_ende.bpe.merges"]),
    ("distill.shards", -2, ["distill.shards"]),
]


@pytest.mark.parametrize("key,value,names", WRONG, ids=[f"{k}={v}" for k, v, _ in WRONG])
def test_wrong_type_or_negative_size(tmp_path, ledger, key, value, names):
    run_bad(tmp_path, set_key(SMOKE, key, value), ledger, *names)


@pytest.mark.parametrize("key,value", [("evaluate.comet_model", "/nonexistent/wmt22-comet-da"),
                                       ("evaluate.bleurt_checkpoint", "./checkpoints/BLEURT-20")])
def test_missing_metric_checkpoint_path(tmp_path, ledger, key, value):
    run_bad(tmp_path, set_key(SMOKE, key, value), ledger, key, value)


def test_metric_checkpoint_directory_without_the_checkpoint(tmp_path, ledger):
    empty = tmp_path / "wmt22-comet-da"
    empty.mkdir()
    run_bad(tmp_path, set_key(SMOKE, "evaluate.comet_model", str(empty)), ledger, "evaluate.comet_model",
            empty, "model.ckpt")


def mbart_config(path) -> dict:
    cfg = set_key(SMOKE, "pretrain_sqs.encoder", "mbart")
    return set_key(cfg, "pretrain_sqs.mbart_path", str(path))


def test_missing_mbart_directory(tmp_path, ledger):
    run_bad(tmp_path, mbart_config(tmp_path / "mbart-large-cc25"), ledger, "pretrain_sqs.mbart_path",
            tmp_path / "mbart-large-cc25")


def test_mbart_directory_without_its_tokenizer(tmp_path, ledger):
    mbart = tmp_path / "mbart-large-cc25"
    mbart.mkdir()
    (mbart / "config.json").write_text('{"model_type": "mbart", "d_model": 1024}')
    (mbart / "model.safetensors").write_bytes(b"\0" * 64)
    run_bad(tmp_path, mbart_config(mbart), ledger, "pretrain_sqs.mbart_path", mbart, "sentencepiece.bpe.model")


def test_missing_local_source_file(tmp_path, ledger):
    cfg = set_key(SMOKE, "sources.cwmt", {"type": "local", "path": str(tmp_path / "cwmt.tgz")})
    cfg = set_key(cfg, "datasets.smoke_ende.sources", ["django", "cwmt"])
    run_bad(tmp_path, cfg, ledger, "sources.cwmt.path", tmp_path / "cwmt.tgz")
