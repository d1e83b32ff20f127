"""Joint BPE with subword-nmt: learn on both languages' train files, apply to every split.

The output keeps subword-nmt's format: a word split into pieces carries
``@@`` at the end of every piece but the last (``Aus@@ tausch``), which
:func:`remove_bpe` undoes.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from aeqa_model.data.workers import worker_pool
from aeqa_model.io import InputError, atomic_open, read_lines, write_lines

SEPARATOR = "@@"
MAX_CHUNK = 2000


def _lines(paths: Sequence[str | os.PathLike]) -> Iterator[str]:
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: BPE input not found (did the prepare stage run?)")
        with open(path, encoding="utf-8") as handle:
            yield from handle


def learn(inputs: Sequence[str | os.PathLike], codes: str | os.PathLike, merges: int,
          min_frequency: int = 2, log: Callable[[str], None] = print) -> None:
    """Learn ``merges`` joint BPE merge operations on the concatenation of ``inputs``.

    The codes file (subword-nmt format, ``#version: 0.2`` header) is written
    atomically. Fewer merges may be learned when the corpus runs out of pairs
    with ``min_frequency`` occurrences (subword-nmt stops early then).
    """
    from subword_nmt.learn_bpe import learn_bpe

    if merges <= 0:
        raise InputError(f"bpe merges must be positive, got {merges}")
    if all(Path(p).is_file() and Path(p).stat().st_size == 0 for p in inputs):
        raise InputError(f"BPE inputs {', '.join(map(str, inputs))} are empty")
    with atomic_open(codes) as out:
        learn_bpe(_lines(inputs), out, merges, min_frequency=min_frequency, verbose=False)
    with open(codes, encoding="utf-8") as handle:
        learned = sum(1 for line in handle if not line.startswith("#version"))
    log(f"[bpe] learned {learned} merges (asked {merges}) on {', '.join(map(str, inputs))} -> {codes}")


_WORKER_BPE = None


def _load_bpe(codes: str | os.PathLike):
    from subword_nmt.apply_bpe import BPE

    with open(codes, encoding="utf-8") as handle:
        return BPE(handle, separator=SEPARATOR)


def _init_worker(codes: str) -> None:
    global _WORKER_BPE
    _WORKER_BPE = _load_bpe(codes)


def _segment_chunk(lines: list[str]) -> list[str]:
    return [_WORKER_BPE.segment(line.strip()) if line.strip() else "" for line in lines]


def apply(codes: str | os.PathLike, inputs: Sequence[str | os.PathLike], outputs: Sequence[str | os.PathLike],
          workers: int = 1, log: Callable[[str], None] = print) -> dict[str, int]:
    """Segment each input file with ``codes`` into the matching output file.

    Files are processed in contiguous chunks over ``workers`` processes and
    reassembled in order (``workers=1`` runs in this process). Returns the line
    count per output.
    """
    if len(inputs) != len(outputs):
        raise InputError(f"bpe apply: {len(inputs)} inputs but {len(outputs)} outputs")
    if not Path(codes).is_file():
        raise InputError(f"{codes}: BPE codes not found (run `bpe.py learn` first)")
    counts = {}
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            pool = stack.enter_context(worker_pool(workers, initializer=_init_worker, initargs=(str(codes),)))
        else:
            _init_worker(str(codes))
        for src, dst in zip(inputs, outputs):
            lines = read_lines(src)
            if pool is None:
                out = _segment_chunk(lines)
            else:
                size = max(1, min(MAX_CHUNK, math.ceil(len(lines) / (workers * 4))))
                chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
                out = list(itertools.chain.from_iterable(pool.imap(_segment_chunk, chunks)))
            write_lines(dst, out)
            counts[str(dst)] = len(out)
            log(f"[bpe] {src} -> {dst} ({len(out)} lines)")
    return counts


def remove_bpe(line: str) -> str:
    """Undo subword-nmt segmentation: join pieces marked with a trailing ``@@``."""
    return (line + " ").replace(SEPARATOR + " ", "").rstrip()
