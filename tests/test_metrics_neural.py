"""COMET / BLEURT: offline resolution, the not-available path, and the code path with stand-in packages.

These tests inject tiny fake modules so the calling code is exercised
without real models (unbabel-comet itself runs in test_metrics_comet_tiny.py;
bleurt-pytorch is optional).
"""
import os
import sys
import types

import pytest
import torch

from aeqa_model.metrics import neural


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _hide(monkeypatch, module):
    # None in sys.modules makes the import raise ImportError even if installed.
    monkeypatch.setitem(sys.modules, module, None)


def test_comet_not_available_without_package_or_checkpoint(empty_cache, monkeypatch):
    _hide(monkeypatch, "comet")
    out = neural.comet_score(["s"], ["h"], ["r"], None, progress=False)
    assert out["score"] is None
    assert out["status"].startswith("not available:")
    assert "unbabel-comet" in out["status"] and "evaluate.comet_model" in out["status"]


def test_no_checkpoint_does_not_import_the_package(empty_cache, monkeypatch):
    """Without a checkpoint an evaluate job only looks for unbabel-comet (installed
    by default): importing it costs seconds and ~0.5 GB for nothing."""
    def no_import(module):
        raise AssertionError(f"{module} imported without a checkpoint")

    monkeypatch.setattr(neural, "_import", no_import)
    monkeypatch.setattr(neural, "_find", lambda module: (True, None))
    out = neural.comet_score(["s"], ["h"], ["r"], None, progress=False)
    assert out["score"] is None and "no local checkpoint" in out["status"]
    assert "unbabel-comet" not in out["status"]  # installed: only the checkpoint is missing
    assert neural.bleurt_score(["h"], ["r"], None, progress=False)["score"] is None


def test_comet_missing_path_is_named(empty_cache, tmp_path):
    out = neural.comet_score(["s"], ["h"], ["r"], str(tmp_path / "nope"), progress=False)
    assert out["score"] is None and "nope" in out["status"]


def test_resolve_comet_checkpoint(tmp_path, empty_cache):
    model_dir = tmp_path / "wmt22-comet-da"
    (model_dir / "checkpoints").mkdir(parents=True)
    ckpt = model_dir / "checkpoints" / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert neural.resolve_comet_checkpoint(str(model_dir)) == (ckpt, "")
    assert neural.resolve_comet_checkpoint(str(ckpt)) == (ckpt, "")
    path, why = neural.resolve_comet_checkpoint(str(tmp_path))
    assert path is None and "checkpoints/model.ckpt" in why
    # The same layout inside the HF cache is found with no setting at all.
    snap = empty_cache / "models--Unbabel--wmt22-comet-da" / "snapshots" / "abc123" / "checkpoints"
    snap.mkdir(parents=True)
    (snap / "model.ckpt").write_bytes(b"x")
    assert neural.resolve_comet_checkpoint(None) == (snap / "model.ckpt", "")
    assert neural.resolve_comet_checkpoint("Unbabel/wmt22-comet-da") == (snap / "model.ckpt", "")


def _fake_comet(system_score=0.8, fail=False):
    mod = types.ModuleType("comet")
    mod.__version__ = "fake"
    calls = {}

    class Model:
        def predict(self, data, batch_size, gpus, progress_bar):
            calls.update(data=data, batch_size=batch_size, gpus=gpus)
            return types.SimpleNamespace(system_score=system_score, scores=[system_score] * len(data))

    def load_from_checkpoint(path):
        calls["path"] = path
        if fail:
            raise OSError("cannot read xlm-roberta-large")
        return Model()
    mod.load_from_checkpoint = load_from_checkpoint
    return mod, calls


def test_comet_code_path_with_stand_in(tmp_path, empty_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    mod, calls = _fake_comet(0.8)
    monkeypatch.setitem(sys.modules, "comet", mod)
    out = neural.comet_score(["s1", "s2"], ["h1", "h2"], ["r1", "r2"], str(ckpt), batch_size=4,
                             gpus=0, progress=False)
    assert out["score"] == pytest.approx(80.0) and out["system_score"] == pytest.approx(0.8)
    assert calls["data"] == [{"src": "s1", "mt": "h1", "ref": "r1"}, {"src": "s2", "mt": "h2", "ref": "r2"}]
    assert calls["path"] == str(ckpt) and calls["batch_size"] == 4
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_comet_load_failure_is_not_available(tmp_path, empty_cache, monkeypatch):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    mod, _ = _fake_comet(fail=True)
    monkeypatch.setitem(sys.modules, "comet", mod)
    out = neural.comet_score(["s"], ["h"], ["r"], str(ckpt), gpus=0, progress=False)
    assert out["score"] is None and "xlm-roberta-large" in out["status"]


def test_bleurt_not_available(empty_cache, monkeypatch):
    _hide(monkeypatch, "bleurt_pytorch")
    out = neural.bleurt_score(["h"], ["r"], None, progress=False)
    assert out["score"] is None and out["status"].startswith("not available:")
    assert "bleurt-pytorch" in out["status"] and "evaluate.bleurt_checkpoint" in out["status"]


def test_bleurt_code_path_with_stand_in(tmp_path, empty_cache, monkeypatch):
    ckpt = tmp_path / "BLEURT-20"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    mod = types.ModuleType("bleurt_pytorch")

    class Enc(dict):
        def to(self, device):
            return self

    class Tokenizer:
        @classmethod
        def from_pretrained(cls, path):
            return cls()

        def __call__(self, refs, hyps, **kw):
            # Score = 1.0 when hypothesis equals reference, else 0.5.
            return Enc(same=torch.tensor([float(r == h) for r, h in zip(refs, hyps)]))

    class Model:
        @classmethod
        def from_pretrained(cls, path):
            return cls()

        def to(self, device):
            return self

        def eval(self):
            return self

        def __call__(self, same):
            return types.SimpleNamespace(logits=(0.5 + 0.5 * same).unsqueeze(1))

    mod.BleurtTokenizer, mod.BleurtForSequenceClassification = Tokenizer, Model
    monkeypatch.setitem(sys.modules, "bleurt_pytorch", mod)
    out = neural.bleurt_score(["a", "b", "c"], ["a", "x", "c"], str(ckpt), batch_size=2,
                              device="cpu", progress=False)
    assert out["score"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    # A directory without config.json is refused with the reason.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = neural.bleurt_score(["a"], ["a"], str(empty), progress=False)
    assert out["score"] is None and "config.json" in out["status"]


def test_evaluate_runs_comet_on_the_device_it_is_given(tmp_path, empty_cache, monkeypatch):
    """issue 28: the config's device reaches evaluate; under device: cpu COMET gets no GPU
    even where torch sees one (it used to pick one whenever torch did)."""
    from aeqa_model.metrics.evaluate import evaluate

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    mod, calls = _fake_comet(0.5)
    monkeypatch.setitem(sys.modules, "comet", mod)
    monkeypatch.setattr(neural, "_cuda_count", lambda: 1)          # a machine with a GPU
    lines = ["a b c", "d e f"]
    spec = {"comet_model": str(ckpt)}
    for device, gpus in (("cpu", 0), ("cuda", 1), ("auto", 1)):
        evaluate(hyp_tok=lines, ref_tok=lines, hyp_detok=lines, ref_detok=lines, src_detok=lines, tgt_lang="de",
                 spec=spec, progress=False, device=device)
        assert calls["gpus"] == gpus, device
