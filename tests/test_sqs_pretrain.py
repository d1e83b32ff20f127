"""pretrain_sqs on a device (issue 15): --device, bf16 autocast on CUDA, torchrun/DDP.

Resume and fault handling are tested in tests/reliability/test_sqs_resume.py.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aeqa_model.pretrain_sqs import cli, pretrain
from tests.reliability.faultlib import write_text_corpus

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"encoder": "embedded", "mbart_path": None,
        "embedded": {"embed_dim": 16, "ffn_dim": 32, "heads": 2, "layers": 1, "denoise_updates": 6,
                     "sentencepiece_vocab": 100, "batch_size": 4},
        "align_updates": 6, "batch_size": 4, "alpha": 0.5, "ema_decay": 0.99, "lr": 1e-3, "save_every": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("corpus"), 120)


def argv(corpus: Path, out: Path, stage: str, device: str = "cpu", spec=SPEC) -> list[str]:
    args = ["--stage", stage, "--spec", json.dumps(spec), "--src-text", str(corpus / "train.en"),
            "--tgt-text", str(corpus / "train.de"), "--encoder-out", str(out / "encoder.pt"), "--seed", "1",
            "--threads", "1", "--device", device]
    if stage == "encoder":
        return args + ["--codebook-size", "0", "--dim", "0", "--out", "/dev/null",
                       "--stats", str(out / "encoder_stats.json")]
    return args + ["--codebook-size", "32", "--dim", "8", "--out", str(out / "K32_D8" / "sqs.pt"),
                   "--stats", str(out / "K32_D8" / "stats.json")]


def check_outputs(out: Path) -> None:
    """The output formats of docs/formats.md, with CPU tensors whatever the device."""
    encoder = torch.load(out / "encoder.pt", map_location="meta", weights_only=False)
    assert set(encoder) == {"state_dict", "vocab_size", "spec", "spm", "denoise_loss"}
    assert len(encoder["denoise_loss"]) == SPEC["embedded"]["denoise_updates"]
    for path in (out / "encoder.pt", out / "K32_D8" / "sqs.pt"):
        payload = torch.load(path, weights_only=False)     # no map_location: must load without a GPU
        tensors = [payload.get("codebook")] + list((payload.get("state_dict") or payload["projection"]).values())
        assert all(t.device.type == "cpu" for t in tensors if t is not None)
    sqs = torch.load(out / "K32_D8" / "sqs.pt", weights_only=False)
    assert set(sqs) == {"codebook", "projection", "encoder", "statistics"}
    assert sqs["codebook"].shape == (32, 8) and torch.isfinite(sqs["codebook"]).all()
    stats = json.loads((out / "K32_D8" / "stats.json").read_text())
    assert stats["last"]["update"] == SPEC["align_updates"] and stats["usage"]["used"] > 0
    # and without dropout, on a fixed sample of both sides (a collapsed encoder shows only here)
    quiet = stats["usage_without_dropout"]
    assert quiet["codes"] == 32 and 1 <= quiet["used"] <= 32 and quiet["sentences"] > 0
    rows = (out / "K32_D8" / "sqs_log.csv").read_text().splitlines()
    assert rows[0] == "update,lr,L_a,L_x,L_AL" and len(rows) == 1 + SPEC["align_updates"]
    assert (out / "encoder_log.csv").read_text().splitlines()[0] == "update,lr,loss"
    assert not list(out.rglob("*_checkpoint.pt"))


def test_cpu_run_writes_every_output_and_log(corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    for stage in ("encoder", "align"):
        assert cli.main(argv(corpus, tmp_path, stage)) == 0
    check_outputs(tmp_path)
    assert "pretrain_sqs align on cpu" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_device_cuda_without_a_gpu_is_a_clear_error(corpus, tmp_path, capsys):
    assert cli.main(argv(corpus, tmp_path, "encoder", device="cuda")) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA GPU" in err
    assert not (tmp_path / "encoder.pt").exists()


def test_fp16_is_refused_with_the_key_named(corpus, tmp_path, capsys):
    assert cli.main(argv(corpus, tmp_path, "encoder", spec={**SPEC, "amp": "fp16"})) == 2
    assert "pretrain_sqs.amp" in capsys.readouterr().err


def test_auto_device_and_bf16_only_on_cuda():
    rt = pretrain.setup_runtime("cpu", "auto")
    assert rt.device.type == "cpu" and rt.amp is None                  # CPU runs stay fp32
    assert pretrain.setup_runtime("auto", "auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_with_bf16_writes_the_same_formats(corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    for stage in ("encoder", "align"):
        assert cli.main(argv(corpus, tmp_path, stage, device="cuda")) == 0
    assert "pretrain_sqs align on cuda (bf16 autocast)" in caplog.text
    check_outputs(tmp_path)


@pytest.mark.timeout(600)
def test_torchrun_with_two_processes_trains_both_stages(corpus, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP over the encoder and projection, the
    quantizer's EMA all-reduced; rank 0 writes the same outputs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for stage in ("encoder", "align"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "aeqa_model.pretrain_sqs.cli", *argv(corpus, tmp_path, stage)],
                              capture_output=True, text=True, timeout=500, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "2 processes" in done.stderr
    check_outputs(tmp_path)


class _FakeTokenizer:
    pad_token_id = 1

    @classmethod
    def from_pretrained(cls, path, local_files_only=True):
        return cls()

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + sum(map(ord, word)) % 60 for word in text.split()]}


class _FakeEncoder(torch.nn.Module):
    """Stands in for MBartModel(...).get_encoder(): embeddings + a linear layer, d_model 12."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"d_model": 12})()
        self.embed = torch.nn.Embedding(64, 12)
        self.layer = torch.nn.Linear(12, 12)

    def forward(self, input_ids, attention_mask):
        state = self.layer(self.embed(input_ids)) * attention_mask[..., None]
        return type("Output", (), {"last_hidden_state": state})()


class _FakeModel:
    @classmethod
    def from_pretrained(cls, path, local_files_only=True):
        torch.manual_seed(0)
        return cls()

    def get_encoder(self):
        return _FakeEncoder()


def test_mbart_encoder_path_runs_both_stages_and_resumes(corpus, tmp_path, monkeypatch):
    """The mBART path's logic with a stand-in for `transformers` (tests/test_mbart_real.py
    runs it against the real library): the encoder stage records the mBART directory
    (mBART needs no denoising), the align stage trains with its checkpoint, and a
    SIGTERM-stopped run resumes to the same codebook."""
    import signal
    import types

    fake = types.ModuleType("transformers")
    fake.MBartModel, fake.MBartTokenizer = _FakeModel, _FakeTokenizer
    monkeypatch.setitem(sys.modules, "transformers", fake)
    mbart = tmp_path / "mbart"
    mbart.mkdir()
    for name in ("config.json", "sentencepiece.bpe.model", "model.safetensors"):
        (mbart / name).write_text("stand-in")
    spec = {**SPEC, "encoder": "mbart", "mbart_path": str(mbart)}
    outs = {}
    for name, stop_at in (("whole", None), ("stopped", 3)):
        out = tmp_path / name
        assert cli.main(argv(corpus, out, "encoder", spec=spec)) == 0
        assert torch.load(out / "encoder.pt", weights_only=False) == {"encoder": "mbart", "mbart_path": str(mbart)}
        if stop_at:
            step, calls = torch.optim.AdamW.step, [0]

            def stopping(self, *a, **k):
                calls[0] += 1
                if calls[0] == stop_at:
                    signal.raise_signal(signal.SIGTERM)
                return step(self, *a, **k)

            monkeypatch.setattr(torch.optim.AdamW, "step", stopping)
            assert cli.main(argv(corpus, out, "align", spec=spec)) == 75
            assert torch.load(out / "K32_D8" / "sqs_checkpoint.pt", weights_only=False)["update"] == stop_at
            monkeypatch.setattr(torch.optim.AdamW, "step", step)
        assert cli.main(argv(corpus, out, "align", spec=spec)) == 0
        outs[name] = torch.load(out / "K32_D8" / "sqs.pt", weights_only=False)
    assert outs["whole"]["encoder"] == f"mbart:{mbart}"
    assert torch.equal(outs["whole"]["codebook"], outs["stopped"]["codebook"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_alignment_can_keep_the_denoising_task(corpus, tmp_path):
    """align_denoise_weight > 0 (docs/method.md #28): L = L_AL + w L_denoise, logged per
    update; the batches are those of w = 0 (the noise has a stream of its own), and the
    mBART stage refuses it (it loads no decoder)."""
    assert cli.main(argv(corpus, tmp_path, "encoder")) == 0
    plain, tasked = tmp_path / "plain", tmp_path / "tasked"
    for out, spec in ((plain, SPEC), (tasked, {**SPEC, "align_denoise_weight": 1.0})):
        args = argv(corpus, tmp_path, "align", spec=spec)
        args[args.index("--out") + 1] = str(out / "sqs.pt")
        args[args.index("--stats") + 1] = str(out / "stats.json")
        assert cli.main(args) == 0
    rows = (tasked / "sqs_log.csv").read_text().splitlines()
    assert rows[0] == "update,lr,L_a,L_x,L_AL,L_denoise" and len(rows) == 1 + SPEC["align_updates"]
    assert all(float(r.split(",")[-1]) > 0 for r in rows[1:])
    first = [json.loads((o / "stats.json").read_text())["first"] for o in (plain, tasked)]
    assert first[0] == first[1]   # update 1 sees the same batch and the same weights
    mbart = {**SPEC, "encoder": "mbart", "mbart_path": str(tmp_path), "align_denoise_weight": 1.0}
    assert cli.main(argv(corpus, tmp_path / "m", "align", spec=mbart)) == 2
