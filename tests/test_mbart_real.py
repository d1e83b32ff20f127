"""The mBART path of pretrain_sqs against the real ``transformers`` library (issue 24, item 7).

tests/test_sqs_pretrain.py tests the path's logic (stages, checkpoint, resume) with a
stand-in module. Here a tiny *real* mBART is built locally: a sentencepiece model
trained on the test corpus, ``MBartTokenizer`` over it (mBART's 25 language codes,
en_XX, de_DE, ..., and <mask> come after the pieces, as in mbart-large-cc25) and
``MBartModel`` with random weights from a small ``MBartConfig`` (d_model 48, one layer)
whose vocabulary covers them all, both written with ``save_pretrained`` to a directory
laid out like a mbart-large-cc25 download. Both pre-alignment stages then run as the
pretrain_sqs rules run them (a process each, tests/reliability/sqs_driver.py as a script)
with the hub switched off, and AEQA-NAT trains two updates from the sqs.pt they wrote.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aeqa_model.pretrain_sqs import pretrain
from tests.reliability.faultlib import write_text_corpus, write_tiny_corpus

try:
    import transformers  # noqa: F401
    IMPORT_ERROR = ""
except ImportError as err:   # the only reason to skip: envs/requirements-cpu.txt installs it
    IMPORT_ERROR = f"`import transformers` failed ({err}); pip install -r envs/requirements-cpu.txt"

pytestmark = pytest.mark.skipif(bool(IMPORT_ERROR), reason=IMPORT_ERROR)

ROOT = Path(__file__).resolve().parents[1]
D_MODEL, K, D = 48, 16, 32           # mBART width, codebook size, the AEQA-NAT width of SIZES
SPEC = {"encoder": "mbart", "align_updates": 4, "batch_size": 4, "alpha": 0.5, "ema_decay": 0.99, "lr": 1e-3,
        "save_every": 2, "amp": "auto"}
SIZES = {"t": {"embed_dim": D, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1,
               "dropout": 0.1}}
TRAIN = {"max_updates": 2, "max_tokens": 120, "update_freq": 1, "lr": 1e-3, "warmup_updates": 1,
         "validate_every": 2, "validate_bleu_sentences": 0, "save_every": 2, "keep_last": 1, "average_last": 1,
         "final": "last", "weight_decay": 0.01, "clip_norm": 1.0, "tensorboard": False}
MODEL = {"arch": "aeqa_nat", "size": "t", "codebook_size": K}


def build_tiny_mbart(corpus: Path, out: Path) -> Path:
    """A directory shaped like mbart-large-cc25 (config.json, model.safetensors,
    sentencepiece.bpe.model and the tokenizer's json files) with a tiny random model."""
    import sentencepiece as spm
    from transformers import MBartConfig, MBartModel, MBartTokenizer

    texts = [line for name in ("train.en", "train.de") for line in (corpus / name).read_text().splitlines()]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=proto, vocab_size=48,
                                   model_type="unigram", character_coverage=1.0, num_threads=1, minloglevel=2)
    out.mkdir(parents=True)
    pieces = out.parent / "pieces.model"
    pieces.write_bytes(proto.getvalue())
    tokenizer = MBartTokenizer(vocab_file=str(pieces), src_lang="en_XX", tgt_lang="de_DE")
    torch.manual_seed(0)
    config = MBartConfig(vocab_size=len(tokenizer), d_model=D_MODEL, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                         decoder_ffn_dim=64, max_position_embeddings=128, scale_embedding=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    MBartModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def offline_env(home: Path) -> dict:
    """The hub switched off from process start (transformers reads these on import), an
    empty cache, and an endpoint that refuses at once should anything still ask it."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
            "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def stage(setup: dict, out: Path, name: str, fault: str = "") -> subprocess.CompletedProcess:
    """One stage as its rule runs it, in a process of its own; ``fault``: an AEQA_FAULT of sqs_driver."""
    corpus = setup["corpus"]
    args = ["--stage", name, "--spec", json.dumps({**SPEC, "mbart_path": str(setup["mbart"])}),
            "--src-text", str(corpus / "train.en"), "--tgt-text", str(corpus / "train.de"),
            "--encoder-out", str(out / "encoder.pt"), "--seed", "1", "--threads", "1", "--device", "cpu"]
    if name == "encoder":
        args += ["--codebook-size", "0", "--dim", "0", "--out", "/dev/null", "--stats", str(out / "encoder_stats.json")]
    else:
        args += ["--codebook-size", str(K), "--dim", str(D), "--out", str(out / f"K{K}_D{D}" / "sqs.pt"),
                 "--stats", str(out / f"K{K}_D{D}" / "stats.json"),
                 "--aligned-encoder-out", str(out / f"K{K}_D{D}" / "aligned_encoder.pt")]
    return subprocess.run([sys.executable, str(ROOT / "tests" / "reliability" / "sqs_driver.py"), *args],
                          env={**setup["env"], "AEQA_FAULT": fault}, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbart_real")
    corpus = write_text_corpus(root, 120)
    return {"corpus": corpus, "mbart": build_tiny_mbart(corpus, root / "models" / "mbart.tiny"),
            "env": offline_env(root / "hf_home")}


@pytest.fixture(scope="module")
def aligned(setup, tmp_path_factory):
    """Both stages run uninterrupted: the results directory."""
    out = tmp_path_factory.mktemp("sqs")
    for name in ("encoder", "align"):
        done = stage(setup, out, name)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_tiny_mbart_is_a_real_one(setup):
    """What the stages load: the real classes, the language codes after the pieces, in the vocabulary."""
    from transformers import MBartModel, MBartTokenizer

    path = setup["mbart"]
    assert pretrain.check_mbart_dir(path) == path
    tokenizer = MBartTokenizer.from_pretrained(str(path), local_files_only=True)
    model = MBartModel.from_pretrained(str(path), local_files_only=True)
    assert model.config.d_model == D_MODEL and model.config.vocab_size == len(tokenizer)
    # run_mbart's batches: pad_batch ends each sentence with id 2 and pads with 0 (set to pad_token_id)
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    for code in ("en_XX", "de_DE"):
        assert tokenizer.convert_tokens_to_ids(code) == tokenizer.lang_code_to_id[code] < model.config.vocab_size
    with_specials = tokenizer("word1 wort2", add_special_tokens=True)["input_ids"]
    assert with_specials[-2:] == [tokenizer.eos_token_id, tokenizer.lang_code_to_id["en_XX"]]   # X </s> en_XX
    ids = tokenizer("word1 wort2", add_special_tokens=False)["input_ids"]
    assert ids and tokenizer.unk_token_id not in ids and max(ids) < min(tokenizer.lang_code_to_id.values())


def test_both_stages_write_a_finite_codebook_and_projection(setup, aligned):
    path = setup["mbart"]
    encoder = torch.load(aligned / "encoder.pt", weights_only=False)            # mBART needs no denoising
    assert (encoder["encoder"], encoder["mbart_path"]) == ("mbart", str(path))
    assert json.loads((aligned / "encoder_stats.json").read_text()) == {"encoder": f"mbart:{path}", "updates": 0}
    sqs = torch.load(aligned / f"K{K}_D{D}" / "sqs.pt", weights_only=True)
    assert set(sqs) >= {"codebook", "projection", "encoder", "statistics"} and sqs["encoder"] == f"mbart:{path}"
    assert sqs["codebook"].shape == (K, D) and torch.isfinite(sqs["codebook"]).all()
    projection = sqs["projection"]                                        # nn.Linear(d_model -> D)
    assert projection["weight"].shape == (D, D_MODEL) and projection["bias"].shape == (D,)
    assert all(torch.isfinite(t).all() for t in projection.values())
    stats = json.loads((aligned / f"K{K}_D{D}" / "stats.json").read_text())
    assert stats["encoder"] == f"mbart:{path}" and (stats["codebook_size"], stats["dim"]) == (K, D)
    assert stats["first"]["update"] == 1 and stats["last"]["update"] == SPEC["align_updates"]
    assert all(torch.isfinite(torch.tensor([row[k] for k in ("L_a", "L_x", "L_AL")])).all()
               for row in stats["history"] + [stats["last"]])
    assert 0 < stats["usage"]["used"] <= K == stats["usage"]["codes"]
    assert not list(aligned.rglob("*_checkpoint.pt"))


def test_align_stopped_by_sigterm_resumes_to_the_same_codebook(setup, aligned, tmp_path):
    """The stage's checkpoint holds the real MBartEncoder's state; the rerun resumes it bit-identically."""
    for name in ("encoder.pt", "encoder_stats.json"):
        (tmp_path / name).write_bytes((aligned / name).read_bytes())
    stopped = stage(setup, tmp_path, "align", fault="term_at_update:2")
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert torch.load(tmp_path / f"K{K}_D{D}" / "sqs_checkpoint.pt", weights_only=False)["update"] == 2
    resumed = stage(setup, tmp_path, "align")
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-3000:]
    whole, again = (torch.load(d / f"K{K}_D{D}" / "sqs.pt", weights_only=True) for d in (aligned, tmp_path))
    assert torch.equal(whole["codebook"], again["codebook"])
    assert all(torch.equal(whole["projection"][k], again["projection"][k]) for k in whole["projection"])


def test_aeqa_nat_trains_from_the_mbart_sqs(aligned, tmp_path):
    """AEQA-NAT starts from the pre-aligned codebook (--sqs-init) and trains two updates."""
    from aeqa_model.data.batching import ParallelCorpus
    from aeqa_model.data.dictionary import Dictionary
    from aeqa_model.train import cli as train_cli
    from aeqa_model.train.trainer import Trainer

    sqs_path, data, run = aligned / f"K{K}_D{D}" / "sqs.pt", write_tiny_corpus(tmp_path / "bin"), tmp_path / "run"
    dictionary = Dictionary.load(data / "dict.txt")
    corpora = [ParallelCorpus(data / f"{split}.src", data / f"{split}.tgt", dictionary) for split in ("train", "valid")]
    trainer = Trainer(MODEL, TRAIN, dictionary, *corpora, tmp_path / "probe", device="cpu", sizes=SIZES,
                      sqs_init=str(sqs_path), log=lambda *a: None)
    assert torch.equal(trainer.model.sqs.codebook, torch.load(sqs_path, weights_only=True)["codebook"])
    code = train_cli.main(["--model-spec", json.dumps(MODEL), "--train-spec", json.dumps(TRAIN),
                           "--sizes", json.dumps(SIZES), "--dict", str(data / "dict.txt"),
                           "--train-src", str(data / "train.src"), "--train-tgt", str(data / "train.tgt"),
                           "--valid-src", str(data / "valid.src"), "--valid-tgt", str(data / "valid.tgt"),
                           "--out-dir", str(run), "--output", str(run / "model.pt"), "--seed", "1",
                           "--device", "cpu", "--threads", "1", "--sqs-init", str(sqs_path)])
    assert code == 0
    model = torch.load(run / "model.pt", weights_only=False)
    assert model["train_state"]["update"] == TRAIN["max_updates"]
    assert model["state_dict"]["sqs.codebook"].shape == (K, D)
    assert all(torch.isfinite(t).all() for t in model["state_dict"].values() if t.is_floating_point())


def test_an_mbart_path_under_home_is_the_directory_the_config_check_accepted(setup, tmp_path, monkeypatch):
    """``mbart_path: ~/...``: the start-up check (aeqa_model.config.mbart_problems) expands
    the ~, so the stages must too, not fail every job with 'directory not found'."""
    from aeqa_model.config import mbart_problems
    from aeqa_model.pretrain_sqs import cli

    monkeypatch.setenv("HOME", str(setup["mbart"].parent))
    spec = {**SPEC, "mbart_path": "~/mbart.tiny"}
    assert mbart_problems(spec) == []
    assert pretrain.check_mbart_dir(spec["mbart_path"]) == setup["mbart"]
    corpus = setup["corpus"]
    assert cli.main(["--stage", "encoder", "--spec", json.dumps(spec), "--src-text", str(corpus / "train.en"),
                     "--tgt-text", str(corpus / "train.de"), "--encoder-out", str(tmp_path / "encoder.pt"),
                     "--codebook-size", "0", "--dim", "0", "--out", "/dev/null",
                     "--stats", str(tmp_path / "encoder_stats.json"), "--device", "cpu"]) == 0
    assert torch.load(tmp_path / "encoder.pt", weights_only=False)["mbart_path"] == str(setup["mbart"])


def test_target_codes_from_the_aligned_mbart(setup, aligned, tmp_path):
    """h_y_encoder: pretrained with mBART (docs/method.md #26): the codes stage reads the
    aligned mBART encoder through mBART's own sentencepiece model and gives one code of
    the K per BPE token of every target line."""
    from aeqa_model.data.indexed import IndexedCorpus

    lines = (setup["corpus"] / "train.de").read_text(encoding="utf-8").splitlines()
    bpe = [" ".join(w if len(w) <= 3 else f"{w[:3]}@@ {w[3:]}" for w in line.split()) for line in lines]
    (tmp_path / "train.bpe").write_text("\n".join(bpe) + "\n", encoding="utf-8")
    d = aligned / f"K{K}_D{D}"
    done = subprocess.run([sys.executable, "-m", "aeqa_model.pretrain_sqs.cli", "--stage", "codes", "--sqs",
                           str(d / "sqs.pt"), "--aligned-encoder", str(d / "aligned_encoder.pt"), "--train-tgt",
                           str(tmp_path / "train.bpe"), "--valid-tgt", str(tmp_path / "train.bpe"), "--out-dir",
                           str(tmp_path / "codes"), "--report", str(tmp_path / "codes" / "report.json"),
                           "--device", "cpu"], env=setup["env"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = IndexedCorpus(tmp_path / "codes" / "train", vocab_size=K)
    assert list(codes.sizes) == [len(line.split()) for line in bpe]
    report = json.loads((tmp_path / "codes" / "report.json").read_text())
    assert report["encoder"] == "mbart" and report["splits"]["train"]["codes_used"] >= 1
