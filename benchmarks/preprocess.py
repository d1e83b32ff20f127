"""prepare + bpe throughput (sentences/s) with 1 worker and with all cores, side by side,
on a generated 100k-line parallel corpus (word-like random strings, EN-DE settings).

    python benchmarks/preprocess.py [--lines 100000]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from aeqa_model.data.bpe import apply as bpe_apply
from aeqa_model.data.bpe import learn as bpe_learn
from aeqa_model.data.prepare import prepare_dataset
from aeqa_model.io import write_lines


def generate_corpus(out: Path, lines: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzäöü"))
    vocab = ["".join(rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(20000)]
    for lang, split, n in (("en", "train", lines), ("de", "train", lines), ("en", "valid", 100), ("de", "valid", 100),
                           ("en", "test", 100), ("de", "test", 100)):
        rng_l = np.random.default_rng(seed + (lang == "de"))
        rows = []
        for _ in range(n):
            words = [vocab[i] for i in rng_l.integers(0, len(vocab), size=int(rng_l.integers(5, 30)))]
            words[0] = words[0].capitalize()
            rows.append(" ".join(words) + rng_l.choice([".", "?", "!", ", ok."]))
        write_lines(out / f"{split}.{lang}", rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lines", type=int, default=100000)
    p.add_argument("--merges", type=int, default=8000)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_corpus(tmp / "orig", args.lines)
        spec = {"lowercase": False, "aggressive_dash_splits": True, "min_tokens": 1, "max_tokens": 250,
                "max_ratio": 3.0}
        rows = []
        for workers in sorted({1, cores}):
            out = tmp / f"tok{workers}"
            start = time.perf_counter()
            prepare_dataset(spec, ["en", "de"], tmp / "orig", out, workers=workers, log=lambda *_: None)
            prep = time.perf_counter() - start
            codes = tmp / f"codes{workers}"
            start = time.perf_counter()
            bpe_learn([out / "train.en", out / "train.de"], codes, args.merges, log=lambda *_: None)
            learn = time.perf_counter() - start
            start = time.perf_counter()
            bpe_apply(codes, [out / "train.en", out / "train.de"], [tmp / f"b{workers}.en", tmp / f"b{workers}.de"],
                      workers=workers, log=lambda *_: None)
            apply_s = time.perf_counter() - start
            rows.append({"workers": workers, "prepare_sent_per_s": round(2 * args.lines / prep),
                         "bpe_apply_sent_per_s": round(2 * args.lines / apply_s), "bpe_learn_s": round(learn, 1),
                         "prepare_plus_apply_sent_per_s": round(2 * args.lines / (prep + apply_s))})
        print(f"# preprocess lines={args.lines} (x2 languages) cores={cores}")
        for row in rows:
            print(row)
        if len(rows) == 2:
            print({"ratio": f"{cores} workers / 1 worker",
                   "prepare_plus_apply": round(rows[1]["prepare_plus_apply_sent_per_s"]
                                               / rows[0]["prepare_plus_apply_sent_per_s"], 2)})


if __name__ == "__main__":
    main()
