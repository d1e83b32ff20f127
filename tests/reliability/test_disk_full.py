"""A full disk (ENOSPC, simulated by patching the write of the output's temporary file)
during checkpointing, preprocessing, binarization and download: the job fails with a
message naming the file, and the previous good file is still there, unchanged."""
from __future__ import annotations

import errno
import os
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from aeqa_model.data import download
from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import IndexedCorpus, write_indexed
from aeqa_model.data.prepare import prepare_dataset
from aeqa_model.io import InputError
from aeqa_model.train import cli
from aeqa_model.train.trainer import Trainer
from tests.reliability.faultlib import disk_full, write_tiny_corpus

pytestmark = pytest.mark.fault

MODEL = {"arch": "vanilla_nat", "size": "t"}
SIZES = {"t": {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1,
               "dropout": 0.1}}
SPEC = {"max_updates": 8, "max_tokens": 120, "lr": 1e-3, "warmup_updates": 3, "validate_every": 4,
        "save_every": 4, "keep_last": 2, "tensorboard": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("bin"))


def trainer(data: Path, out: Path, spec=SPEC) -> Trainer:
    d = Dictionary.load(data / "dict.txt")
    return Trainer(MODEL, spec, d, ParallelCorpus(data / "train.src", data / "train.tgt", d),
                   ParallelCorpus(data / "valid.src", data / "valid.tgt", d), out, seed=5, device="cpu",
                   sizes=SIZES, log=lambda *a: None)


def assert_disk_full(err: BaseException, path: Path, ledger) -> None:
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC, repr(err)
    ledger.message(str(err), names=[path])


def test_disk_full_during_checkpoint_keeps_the_previous_one(data, tmp_path, ledger, monkeypatch):
    out = tmp_path / "run"
    reference = trainer(data, tmp_path / "reference")
    assert reference.train() == 0

    run = trainer(data, out)
    save = run.save

    def save_then_protect(tag):
        save(tag)
        if run.state.update == 4:  # the first good checkpoint: it must survive the failed second one
            ledger.protect(out / "checkpoint_last.pt", out / "checkpoint_4.pt")

    run.save = save_then_protect
    with disk_full(monkeypatch, "checkpoint_last.pt", budget=10_000, nth=2) as failed:
        with pytest.raises(OSError) as err:
            run.train()
    assert failed and run.state.update == 8
    assert_disk_full(err.value, out / "checkpoint_last.pt", ledger)
    assert torch.load(out / "checkpoint_last.pt", weights_only=False)["state"]["update"] == 4
    assert not list(out.glob(".*.tmp")), "the torn temporary file was left behind"

    # Space freed: the rerun resumes from update 4 and ends where an uninterrupted run does.
    ledger.verify()  # then released: the rerun legitimately replaces checkpoint_last.pt
    resumed = trainer(data, out)
    assert resumed.train() == 0
    for (name, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_disk_full_writing_the_final_model_keeps_the_old_one(data, tmp_path, ledger, monkeypatch, capsys):
    """The command line ends in one line naming the file (issue 24: it was ~50 lines of
    traceback before it), exit 1."""
    out = tmp_path / "run"
    argv = ["--model-spec", json.dumps(MODEL), "--train-spec", json.dumps(SPEC), "--sizes", json.dumps(SIZES),
            "--dict", str(data / "dict.txt"), "--train-src", str(data / "train.src"),
            "--train-tgt", str(data / "train.tgt"), "--valid-src", str(data / "valid.src"),
            "--valid-tgt", str(data / "valid.tgt"), "--out-dir", str(out), "--output", str(out / "model.pt"),
            "--device", "cpu"]
    assert cli.main(argv) == 0
    ledger.protect(out / "model.pt")
    capsys.readouterr()
    with disk_full(monkeypatch, "model.pt", budget=4096) as failed:
        code = cli.main(argv)  # e.g. a --forcerun of the job, on a full disk
    assert failed and code == cli.WRITE_FAILED_EXIT_CODE
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err and "No space left on device" in errors[0], err
    ledger.message(errors[0], names=[out / "model.pt", "free disk space"])
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("stage", ["encoder", "align"])
def test_disk_full_writing_a_pre_alignment_output_is_one_line(tmp_path, ledger, monkeypatch, capsys, stage):
    """encoder.pt / sqs.pt on a full disk: torch.save's own error ("[enforce fail at
    inline_container.cc] unexpected pos") under a traceback used to end the stage; now
    one line naming the file, exit 1, and nothing under the output's name."""
    from aeqa_model.pretrain_sqs import cli as sqs_cli
    from tests.reliability.faultlib import write_text_corpus
    from tests.reliability.test_sqs_resume import SPEC as SQS_SPEC

    (tmp_path / "corpus").mkdir()
    corpus = write_text_corpus(tmp_path / "corpus", 60)
    out = tmp_path / "run"

    def argv(stage):
        args = ["--stage", stage, "--spec", json.dumps(dict(SQS_SPEC, save_every=100)), "--src-text",
                str(corpus / "train.en"), "--tgt-text", str(corpus / "train.de"), "--encoder-out",
                str(out / "encoder.pt"), "--seed", "1", "--threads", "1", "--device", "cpu"]
        if stage == "encoder":
            return args + ["--codebook-size", "0", "--dim", "0", "--out", "/dev/null",
                           "--stats", str(out / "encoder_stats.json")]
        return args + ["--codebook-size", "8", "--dim", "8", "--out", str(out / "sqs.pt"),
                       "--stats", str(out / "stats.json")]

    if stage == "align":
        assert sqs_cli.main(argv("encoder")) == 0
    target = out / ("encoder.pt" if stage == "encoder" else "sqs.pt")
    capsys.readouterr()
    with disk_full(monkeypatch, target.name, budget=512) as failed:
        code = sqs_cli.main(argv(stage))
    assert failed and code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err and "enforce fail" not in err, err
    ledger.message(errors[0], names=[target, "No space left on device", "free disk space"])
    assert not target.exists() and not list(out.glob(".*.tmp"))


def test_disk_full_writing_the_hypotheses_is_one_line(data, tmp_path, ledger, monkeypatch, capsys):
    """decode (and distill, which runs it): one line naming the file, exit 1, no traceback."""
    from aeqa_model.decode.cli import main as decode_main

    out = tmp_path / "run"
    assert cli.main(["--model-spec", json.dumps(MODEL), "--train-spec", json.dumps(dict(SPEC, max_updates=4)),
                     "--sizes", json.dumps(SIZES), "--dict", str(data / "dict.txt"),
                     "--train-src", str(data / "train.src"), "--train-tgt", str(data / "train.tgt"),
                     "--valid-src", str(data / "valid.src"), "--valid-tgt", str(data / "valid.tgt"),
                     "--out-dir", str(out), "--output", str(out / "model.pt"), "--device", "cpu"]) == 0
    hyp = tmp_path / "hyp.tok"
    capsys.readouterr()
    with disk_full(monkeypatch, "hyp.tok", budget=10) as failed:
        code = decode_main(["--model", str(out / "model.pt"), "--dict", str(data / "dict.txt"),
                            "--src-prefix", str(data / "valid.src"), "--tgt-prefix", str(data / "valid.tgt"),
                            "--decoding", '{"strategy": "argmax"}', "--tgt-lang", "de", "--out-tok", str(hyp),
                            "--device", "cpu"])
    assert failed and code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    ledger.message(errors[0], names=[hyp, "free disk space"])
    assert not hyp.exists()


def _corpus(orig: Path) -> None:
    orig.mkdir(parents=True)
    for split, n in (("train", 40), ("valid", 5), ("test", 5)):
        (orig / f"{split}.en").write_text("".join(f"This is {split} sentence number {i} .\n" for i in range(n)))
        (orig / f"{split}.de").write_text("".join(f"Das ist {split} Satz Nummer {i} .\n" for i in range(n)))


PREPARE = {"min_tokens": 1, "max_tokens": 50, "max_ratio": 2.0}


def test_disk_full_during_preprocessing(tmp_path, ledger, monkeypatch):
    orig, tok = tmp_path / "orig", tmp_path / "tok"
    _corpus(orig)
    prepare_dataset(PREPARE, ["en", "de"], orig, tok, log=lambda m: None)
    ledger.protect(tok / "train.de")
    with disk_full(monkeypatch, "train.de", budget=100) as failed:
        with pytest.raises(OSError) as err:
            prepare_dataset(PREPARE, ["en", "de"], orig, tok, log=lambda m: None)
    assert failed
    assert_disk_full(err.value, tok / "train.de", ledger)
    assert not list(tok.glob(".*.tmp"))
    # The stage's completion marker is gone until a run succeeds: nothing looks finished.
    assert not (tok / "report.json").exists()
    ledger.verify()
    prepare_dataset(PREPARE, ["en", "de"], orig, tok, log=lambda m: None)  # space freed: the rerun works


def test_disk_full_between_binarized_bin_and_idx_is_detected(tmp_path, ledger, monkeypatch):
    """.bin is replaced, then .idx fails: the loader refuses the stale pair instead of misreading it."""
    prefix = tmp_path / "train.src"
    write_indexed(prefix, [[6, 7, 8], [9, 10]])
    ledger.protect(Path(f"{prefix}.idx"))
    with disk_full(monkeypatch, "train.src.idx", budget=16) as failed:
        with pytest.raises(OSError) as err:
            write_indexed(prefix, [[6, 7, 8, 9, 10, 11], [12, 13, 14]])
    assert failed
    assert_disk_full(err.value, Path(f"{prefix}.idx"), ledger)
    with pytest.raises(InputError) as stale:
        IndexedCorpus(prefix)
    ledger.message(str(stale.value), names=[f"{prefix}.bin"])


class _Server(http.server.BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.end_headers()
        self.wfile.write(self.body[start:])


def test_disk_full_during_download_keeps_the_partial_file_and_cache_clean(tmp_path, ledger, monkeypatch):
    body = np.random.default_rng(0).bytes(300_000)
    _Server.body = body
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/corpus.bin"
    spec = {"type": "url", "url": url, "sha256": hashlib.sha256(body).hexdigest()}
    real_open = open
    writes = [0]

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, block):
            writes[0] += 1
            if writes[0] > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(block)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    def full_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if str(path).endswith(".part") else handle

    monkeypatch.setattr(download, "open", full_open, raising=False)
    try:
        with pytest.raises(OSError) as err:
            download.fetch_url("corpus", spec, tmp_path, retries=1, backoff=0, timeout=5, progress=False,
                               log=lambda m: None)
        part = tmp_path / "corpus" / "corpus.bin.part"
        ledger.message(str(err.value), names=[part, url])
        assert not (tmp_path / "corpus" / "corpus.bin").exists(), "an unverified file entered the cache"
        monkeypatch.setattr(download, "open", real_open, raising=False)
        got = download.fetch_url("corpus", spec, tmp_path, retries=1, backoff=0, timeout=5, progress=False,
                                  log=lambda m: None)
        assert Path(got.path).read_bytes() == body
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_disk_full_while_appending_the_training_log(data, tmp_path, ledger, monkeypatch):
    """The CSV log is appended, not replaced: a full disk cuts row 10 after one character
    ("1"). The error names the log; the rerun drops the cut row and the log ends up
    identical to an uninterrupted run's."""
    from aeqa_model.train import trainer as trainer_module

    spec = dict(SPEC, max_updates=12)  # checkpoints at 4 and 8; row 10 is cut
    reference = trainer(data, tmp_path / "reference", spec)
    assert reference.train() == 0
    out = tmp_path / "run"
    run = trainer(data, out, spec)
    real_open = open

    class CutRow:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            if text.startswith("10,"):
                self.handle.write(text[:1])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    def cutting_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return CutRow(handle) if str(path).endswith("train_log.csv") and "a" in mode else handle

    monkeypatch.setattr(trainer_module, "open", cutting_open, raising=False)
    with pytest.raises(OSError) as err:
        run.train()
    monkeypatch.undo()
    assert_disk_full(err.value, out / "train_log.csv", ledger)
    assert (out / "train_log.csv").read_text().endswith("\n1")
    resumed = trainer(data, out, spec)
    assert resumed.train() == 0
    assert (out / "train_log.csv").read_text() == (tmp_path / "reference/train_log.csv").read_text()
