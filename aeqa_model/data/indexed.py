"""Compact indexed corpus: int32 token ids concatenated in ``.bin`` plus int64 offsets in ``.idx``.

Both files are memory-mapped, so opening a corpus of any size costs O(1) RAM;
only the sentences of the current batch are materialized.

Opening a corpus checks it (issue 18): the index must be a readable array of
offsets rising from 0 whose last entry matches the ``.bin`` length; with the
dictionary size known, every token id must lie in ``[0, size)``; and where the
``.sum`` file written with the corpus exists, the CRC32 of both files must
match it (this also catches a bit flip that leaves an id in range); the
``.sum`` also records the dictionary the ids are of (issue 24), and a corpus
read with another one (same size in another order passes the id range) is
refused. Any failure is an :class:`InputError` naming the file and how to rebuild it. Cost,
measured on 150M tokens (a WMT14 En-De side, a 600 MB ``.bin``) from the page
cache: ~0.05 s for the id range, ~0.13 s for the CRC; from a cold disk the read
itself dominates (~1 s at 500 MB/s) and leaves the pages cached for training.
"""
from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np

from aeqa_model.io import InputError, atomic_open, read_lines
from aeqa_model.data.dictionary import Dictionary

#: Tokens read per step by the id-range scan and the CRC (64 MiB of int32).
_CHUNK = 1 << 24


def _crc32(data) -> int:
    """CRC32 of a bytes-like object or a 1-D numpy array, in chunks (no copy of a memmap)."""
    view = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else memoryview(data)
    crc = 0
    for start in range(0, len(view), _CHUNK * 4):
        crc = zlib.crc32(view[start:start + _CHUNK * 4], crc)
    return crc


def write_indexed(prefix: str | Path, sentences: list[list[int]], dictionary: Dictionary | None = None) -> None:
    """Write token-id sentences as ``prefix.bin`` / ``prefix.idx`` (atomically), then
    ``prefix.sum`` (the CRC32 of both, and the ``dictionary`` the ids are of), which
    marks the pair complete."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=int(offsets[-1]))
    index = io.BytesIO()
    np.save(index, offsets)
    with atomic_open(f"{prefix}.bin", "wb") as handle:
        handle.write(flat.tobytes())
    with atomic_open(f"{prefix}.idx", "wb") as handle:
        handle.write(index.getvalue())
    with atomic_open(f"{prefix}.sum") as handle:
        sums = {"format": 1, "sentences": len(sentences), "tokens": int(offsets[-1]),
                "bin_crc32": _crc32(flat), "idx_crc32": _crc32(index.getvalue())}
        if dictionary is not None:
            sums.update(dictionary_sha256=dictionary.ids_digest, dictionary_size=len(dictionary))
        json.dump(sums, handle)
        handle.write("\n")


def rebuild_hint(prefix: str | Path) -> str:
    """How to rebuild a binarized corpus: delete its completion marker and rerun."""
    parent = Path(prefix).parent
    rule = "binarize_kd" if parent.parent.parent.name == "kd" else "binarize"
    return (f"the binarized data is damaged or stale: delete {parent / 'report.json'} and rerun the "
            f"workflow, whose {rule} rule rewrites it (or rerun `python -m aeqa_model.binarize.cli` "
            f"by hand)")


class IndexedCorpus:
    """Read-only view of a binarized corpus: ``corpus[i]`` is an int64 numpy array.

    ``vocab_size``: the dictionary size; when given, every token id is checked to
    lie in ``[0, vocab_size)`` (one pass over the ``.bin``). ``dictionary``: the one
    the ids are read with (its size is ``vocab_size``); it must be the one the data was
    binarized with, where the ``.sum`` file records that."""

    def __init__(self, prefix: str | Path, vocab_size: int | None = None, dictionary: Dictionary | None = None):
        self.prefix = str(prefix)
        if dictionary is not None:
            vocab_size = len(dictionary)
        idx, binf = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
        for path in (idx, binf):
            if not path.exists():
                raise InputError(f"{path}: binarized corpus not found; run the binarize rule")

        def damaged(path: Path, problem: str) -> InputError:
            return InputError(f"{path}: {problem}; {rebuild_hint(prefix)}")

        try:
            self.offsets = np.load(idx, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # truncated header or data, foreign bytes, an empty file
            raise damaged(idx, f"not a readable index ({type(err).__name__}: {err})") from None
        offsets = self.offsets
        if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) == 0:
            raise damaged(idx, f"expected a 1-D int64 array of sentence offsets, found {offsets.dtype} "
                               f"of shape {offsets.shape}")
        sizes = np.diff(np.asarray(offsets))
        if int(offsets[0]) != 0 or (sizes < 0).any():
            first = int(np.argmax(sizes < 0)) if int(offsets[0]) == 0 else 0
            raise damaged(idx, f"sentence offsets must rise from 0, but entry {first} is {int(offsets[first])} "
                               f"and entry {first + 1} is {int(offsets[first + 1]) if len(offsets) > 1 else 'missing'}")
        expected = int(offsets[-1]) * 4
        if binf.stat().st_size != expected:
            raise damaged(binf, f"size {binf.stat().st_size} bytes, index {idx.name} expects {expected}; "
                                "the file is truncated or stale")
        try:
            self.tokens = np.memmap(binf, dtype=np.int32, mode="r") if expected else np.zeros(0, np.int32)
        except (OSError, ValueError) as err:
            raise damaged(binf, f"cannot be read ({type(err).__name__}: {err})") from None
        self.sizes = sizes
        if vocab_size is not None:
            self._check_ids(binf, int(vocab_size), damaged)
        sums = self._check_sums(idx, binf, damaged)
        if dictionary is not None:
            self._check_dictionary(sums, dictionary)

    def _check_dictionary(self, sums: dict, dictionary: Dictionary) -> None:
        """Ids of another dictionary lie in range just as well (same size, another order)
        and would be read as other words without a word: compare the dictionary the
        ``.sum`` file records (data binarized before it did: nothing to compare)."""
        recorded = sums.get("dictionary_sha256")
        if recorded is None or recorded == dictionary.ids_digest:
            return
        given = dictionary.path or "the dictionary given"
        raise InputError(
            f"{self.prefix}.bin: binarized with another dictionary ({sums.get('dictionary_size')} symbols, sha256 "
            f"{str(recorded)[:12]}..., recorded in {Path(self.prefix).name}.sum) than {given} ({len(dictionary)} "
            f"symbols, sha256 {dictionary.ids_digest[:12]}...): its ids would be read as other words. Use the "
            f"dict.txt it was binarized with (and a model trained with that one), or rebinarize it with {given}")

    def _check_ids(self, binf: Path, vocab_size: int, damaged) -> None:
        """Every token id lies in [0, vocab_size): one chunked min/max pass over the .bin."""
        tokens = self.tokens
        for start in range(0, len(tokens), _CHUNK):
            chunk = np.asarray(tokens[start:start + _CHUNK])
            if int(chunk.min()) >= 0 and int(chunk.max()) < vocab_size:
                continue
            pos = start + int(np.argmax((chunk < 0) | (chunk >= vocab_size)))
            line = int(np.searchsorted(self.offsets, pos, side="right"))  # 1-based sentence number
            raise damaged(binf, f"token id {int(tokens[pos])} (sentence {line}, token "
                                f"{pos - int(self.offsets[line - 1]) + 1}) is outside the dictionary's "
                                f"ids 0..{vocab_size - 1}")

    def _check_sums(self, idx: Path, binf: Path, damaged) -> dict:
        """CRC32 of both files against the ``.sum`` written with them (absent: data binarized
        before the file existed, nothing to compare); returns the ``.sum``'s content."""
        sums_path = Path(f"{self.prefix}.sum")
        if not sums_path.exists():
            return {}
        try:
            sums = json.loads(sums_path.read_text(encoding="utf-8"))
            want = {"bin": int(sums["bin_crc32"]), "idx": int(sums["idx_crc32"])}
        except Exception as err:
            raise damaged(sums_path, f"unreadable checksum file ({type(err).__name__}: {err})") from None
        for key, path, data in (("idx", idx, idx.read_bytes()), ("bin", binf, self.tokens)):
            got = _crc32(data)
            if got != want[key]:
                raise damaged(path, f"CRC32 {got:08x} does not match {want[key]:08x} recorded in "
                                    f"{sums_path.name} when it was written (bit rot, or a partial copy)")
        return sums

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64)


def binarize_file(text_path: str | Path, dictionary: Dictionary, prefix: str | Path) -> dict:
    """Encode a BPE text file with ``dictionary``; returns counts for the log."""
    lines = read_lines(text_path)
    ids = [dictionary.encode(line) for line in lines]
    write_indexed(prefix, ids, dictionary)
    n_tok = sum(len(s) for s in ids)
    n_unk = sum(1 for s in ids for t in s if t == dictionary.unk)
    return {"file": str(text_path), "sentences": len(ids), "tokens": n_tok, "unk": n_unk}
