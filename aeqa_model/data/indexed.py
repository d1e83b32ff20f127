"""Compact indexed corpus: int32 token ids concatenated in ``.bin`` plus int64 offsets in ``.idx``.

Both files are memory-mapped, so opening a corpus of any size costs O(1) RAM;
only the sentences of the current batch are materialized.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aeqa_model.io import InputError, atomic_open, read_lines
from aeqa_model.data.dictionary import Dictionary


def write_indexed(prefix: str | Path, sentences: list[list[int]]) -> None:
    """Write token-id sentences as ``prefix.bin`` / ``prefix.idx`` (atomically)."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=int(offsets[-1]))
    with atomic_open(f"{prefix}.bin", "wb") as handle:
        handle.write(flat.tobytes())
    with atomic_open(f"{prefix}.idx", "wb") as handle:
        np.save(handle, offsets)


class IndexedCorpus:
    """Read-only view of a binarized corpus: ``corpus[i]`` is an int64 numpy array."""

    def __init__(self, prefix: str | Path):
        self.prefix = str(prefix)
        idx, binf = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        for path in (idx, binf):
            if not path.exists():
                raise InputError(f"{path}: binarized corpus not found; run the binarize rule")
        self.offsets = np.load(idx, mmap_mode="r")
        expected = int(self.offsets[-1]) * 4 if len(self.offsets) else 0
        if binf.stat().st_size != expected:
            raise InputError(f"{binf}: size {binf.stat().st_size} bytes, index expects {expected}; "
                             "the file is truncated or stale, rerun binarize")
        self.tokens = np.memmap(binf, dtype=np.int32, mode="r") if expected else np.zeros(0, np.int32)
        self.sizes = np.diff(np.asarray(self.offsets))

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64)


def binarize_file(text_path: str | Path, dictionary: Dictionary, prefix: str | Path) -> dict:
    """Encode a BPE text file with ``dictionary``; returns counts for the log."""
    lines = read_lines(text_path)
    ids = [dictionary.encode(line) for line in lines]
    write_indexed(prefix, ids)
    n_tok = sum(len(s) for s in ids)
    n_unk = sum(1 for s in ids for t in s if t == dictionary.unk)
    return {"file": str(text_path), "sentences": len(ids), "tokens": n_tok, "unk": n_unk}


def main(argv=None) -> None:
    """CLI: build the joint dictionary (from train files) and binarize splits."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dict", required=True, help="dictionary path (built if --build-dict-from is given)")
    parser.add_argument("--build-dict-from", nargs="*", default=None)
    parser.add_argument("--inputs", nargs="+", required=True, help="BPE text files")
    parser.add_argument("--prefixes", nargs="+", required=True, help="output prefixes, one per input")
    parser.add_argument("--report", default=None)
    args = parser.parse_args(argv)
    if len(args.inputs) != len(args.prefixes):
        raise SystemExit("--inputs and --prefixes must have the same length")
    if args.build_dict_from:
        dictionary = Dictionary.build(args.build_dict_from)
        dictionary.save(args.dict)
    else:
        dictionary = Dictionary.load(args.dict)
    report = [binarize_file(i, dictionary, p) for i, p in zip(args.inputs, args.prefixes)]
    for item in report:
        print(json.dumps(item))
    if args.report:
        from aeqa_model.io import write_json
        write_json(args.report, {"dictionary_size": len(dictionary), "files": report})


if __name__ == "__main__":
    main()
