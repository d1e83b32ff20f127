"""A 2,000-line corpus through every data rule (download -> prepare -> bpe -> binarize),
downloaded over HTTP from a server on 127.0.0.1 with the WMT recipe (parallel_corpora):
plain-text training files and an SGML test set inside a .tgz, valid = every 20th line."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS_EN = "the a house cat dog small big red green runs sees eats tree water city road old new".split()
WORDS_DE = "das ein haus katze hund klein gross rot grün läuft sieht isst baum wasser stadt straße alt neu".split()


def make_archive(n_train: int = 2000, n_test: int = 50) -> bytes:
    rng = np.random.default_rng(0)
    en, de = [], []
    for _ in range(n_train + n_test):
        idx = rng.integers(0, len(WORDS_EN), size=int(rng.integers(3, 12)))
        en.append(" ".join(WORDS_EN[i] for i in idx).capitalize() + ".")
        de.append(" ".join(WORDS_DE[i] for i in idx).capitalize() + ".")

    def sgm(lines):
        body = "".join(f'<seg id="{i + 1}">{line}</seg>\n' for i, line in enumerate(lines))
        return f'<srcset setid="toy">\n<doc docid="d1">\n{body}</doc>\n</srcset>\n'

    files = {
        "toy/train.en": "\n".join(en[:n_train]) + "\n",
        "toy/train.de": "\n".join(de[:n_train]) + "\n",
        "toy/test.en.sgm": sgm(en[n_train:]),
        "toy/test.de.sgm": sgm(de[n_train:]),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture()
def served_archive(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    data = make_archive()
    (root / "toy.tgz").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/toy.tgz", hashlib.sha256(data).hexdigest()
    httpd.shutdown()


@pytest.mark.slow
def test_2000_line_corpus_through_every_data_rule(tmp_path, served_archive):
    url, sha256 = served_archive
    config = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    config["sources"] = {"toy": {"type": "url", "urls": [url], "filename": "toy.tgz", "sha256": sha256}}
    config["datasets"]["smoke_ende"].update({
        "recipe": "parallel_corpora",
        "sources": ["toy"],
        "recipe_options": {
            "train": [{"source": "toy", "files": {"en": "toy/train.en", "de": "toy/train.de"}}],
            "valid": {"every_nth_train": 20},
            "test": [{"source": "toy", "format": "sgm", "files": {"en": "toy/test.en.sgm", "de": "toy/test.de.sgm"}}],
        },
        "bpe": {"merges": 100},
    })
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(config, allow_unicode=True))
    results = tmp_path / "results"
    target = results / "smoke/data/smoke_ende/bin/report.json"
    env = {**os.environ, "AEQA_DATA_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "snakemake", str(target), "--profile", "profiles/local",
                           "--configfile", str(cfg), "--config", f"results_dir={results}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = results / "smoke/data/smoke_ende"
    # valid = every 20th training line (fairseq's --icml17 split), the rest is train.
    orig = {s: (data / f"orig/{s}.en").read_text(encoding="utf-8").splitlines() for s in ("train", "valid", "test")}
    assert (len(orig["train"]), len(orig["valid"]), len(orig["test"])) == (1900, 100, 50)
    report = json.loads((data / "tok/report.json").read_text())["splits"]
    for split in ("train", "valid", "test"):
        tok = (data / f"tok/{split}.en").read_text(encoding="utf-8").splitlines()
        bpe_de = (data / f"bpe/{split}.de").read_text(encoding="utf-8").splitlines()
        entry = report[split]
        assert entry["lines_in"] == len(orig[split]) and entry["lines_out"] == len(tok) == len(bpe_de)
        if split != "train":
            assert len(tok) == len(orig[split])  # valid/test lines are never dropped
    assert any("@@" in line for line in (data / "bpe/train.en").read_text(encoding="utf-8").splitlines())
    binarized = json.loads(target.read_text())
    assert binarized
    assert (data / "bin/dict.txt").exists()
    assert list((data / "bin").glob("train.*.bin")) and list((data / "bin").glob("test.*.idx"))
    assert "<seg" not in (data / "orig/test.en").read_text(encoding="utf-8")
