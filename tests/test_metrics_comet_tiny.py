"""A real (tiny, randomly initialised) COMET model through comet_score.

unbabel-comet is pinned in envs/requirements-cpu.txt (and a dependency in
pyproject.toml), so it is imported unconditionally: a missing or broken install
fails here instead of skipping, and Table 5's COMET column stays tested in CI.
The model is a COMET RegressionMetric over a 2-layer BERT encoder with a
hand-written word-piece vocabulary, built in tmp_path with HF_HUB_OFFLINE=1, so
nothing is downloaded.
"""
import json

import comet  # noqa: F401  (a pinned dependency: fail, never skip, without it)
import pytest
import torch

from aeqa_model.metrics.neural import comet_score  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "das", "ist", "ein", "haus", "."]


def _tiny_encoder_dir(path):
    path.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": len(vocab), "hidden_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 64, "type_vocab_size": 2}))
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return path


def _tiny_comet(tmp_path):
    from comet.models import RegressionMetric
    import pytorch_lightning as pl
    import yaml

    encoder = _tiny_encoder_dir(tmp_path / "encoder")
    torch.manual_seed(0)
    model = RegressionMetric(encoder_model="BERT", pretrained_model=str(encoder),
                             load_pretrained_weights=False, hidden_sizes=[8], layer="mix",
                             local_files_only=True)
    model_dir = tmp_path / "tiny-comet"
    (model_dir / "checkpoints").mkdir(parents=True)
    hparams = dict(model.hparams)
    hparams["class_identifier"] = "regression_metric"
    (model_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__},
               model_dir / "checkpoints" / "model.ckpt")
    return model_dir


def test_tiny_comet_model_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model_dir = _tiny_comet(tmp_path)
    out = comet_score(["the cat sat", "a dog"], ["das ist ein haus .", "the mat"],
                      ["das ist ein haus .", "a dog sat"], str(model_dir), batch_size=2, gpus=0,
                      progress=False)
    assert out["score"] is not None, out.get("status")
    assert out["score"] == pytest.approx(100 * out["system_score"])
    assert out["model"].endswith("model.ckpt") and "COMET" in out["signature"]


def test_evaluate_cli_fills_comet(tmp_path, monkeypatch):
    from aeqa_model.evaluate.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model_dir = _tiny_comet(tmp_path)
    files = {}
    for name, lines in {"h": ["das ist ein haus .", "the cat"], "r": ["das ist ein haus .", "the dog"],
                        "s": ["the cat sat", "a dog"]}.items():
        files[name] = tmp_path / name
        files[name].write_text("\n".join(lines) + "\n")
    out = tmp_path / "metrics.json"
    spec = {"length_buckets": [0, 5, 10], "repetition_max_n": 2, "bootstrap_samples": 10,
            "comet_model": str(model_dir), "bleurt_checkpoint": None}
    rc = main(["--hyp-tok", str(files["h"]), "--ref-tok", str(files["r"]), "--hyp-detok", str(files["h"]),
               "--ref-detok", str(files["r"]), "--src-detok", str(files["s"]), "--tgt-lang", "de",
               "--spec", json.dumps(spec), "--cell", "{}", "--provenance", "{}", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert isinstance(metrics["comet"]["score"], float)
    assert metrics["bleurt"]["score"] is None
