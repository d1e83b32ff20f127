"""Prepare stage: tokenize ``orig/`` into ``tok/`` and clean the training split.

For every split the two sides are read as bytes (a UTF-8 BOM at the start of
a file and a ``\\r`` before each ``\\n`` are removed), checked for equal line
counts, tokenized with :mod:`aeqa_model.data.moses` (in parallel over chunks,
order preserved) and written to ``tok/{split}.{lang}``.

Only the **train** split is cleaned. A pair is dropped, and counted under the
first reason that applies, when a side

``invalid_utf8``  is not valid UTF-8,
``nul_byte``      contains a NUL byte,
``empty``         is empty or only whitespace (before or after tokenization),
``too_short``     has fewer than ``min_tokens`` tokens,
``too_long``      has more than ``max_tokens`` tokens,
``ratio``         the longer side has more than ``max_ratio`` times the tokens
                  of the shorter (Moses ``clean-corpus-n.perl -ratio``),
``duplicate``     (only with ``dedupe: true``) repeats an earlier tokenized pair.

Valid and test lines are never dropped, since references must stay aligned
with the hypotheses: any of the first three problems there is an error that
names the file and the line. ``tok/report.json`` records, per split, lines
in, dropped per reason and lines out.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from aeqa_model.data.moses import tokenize
from aeqa_model.data.workers import worker_pool
from aeqa_model.io import InputError, write_json, write_lines

SPLITS = ("train", "valid", "test")
DROP_REASONS = ("invalid_utf8", "nul_byte", "empty", "too_short", "too_long", "ratio", "duplicate")
BOM = b"\xef\xbb\xbf"
#: Lines per work item: large enough to amortize pickling, small enough to balance cores.
MAX_CHUNK = 2000


def read_raw_lines(path: str | os.PathLike) -> list[bytes]:
    """Lines of a corpus file as bytes, without BOM and line endings (split on ``\\n`` only).

    A missing or fully empty file is an InputError.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (did the download stage run?)")
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM):]
    if not data:
        raise InputError(f"{path}: the file is empty; re-run the download stage or check the recipe")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _tokenize_chunk(args: tuple) -> list[str]:
    lines, lang, options = args
    return tokenize(lines, lang, **options)


def tokenize_parallel(lines: Sequence[str], lang: str, options: Mapping, workers: int = 1,
                      pool=None) -> list[str]:
    """Tokenize ``lines`` with :func:`~aeqa_model.data.moses.tokenize` over a process pool.

    The input is cut into contiguous chunks and the results concatenated in
    order, so the output is identical to a single-process run. ``pool=None``
    or ``workers <= 1`` tokenizes in this process.
    """
    options = dict(options)
    if pool is None or workers <= 1 or len(lines) < 2 * workers:
        return tokenize(lines, lang, **options)
    size = max(1, min(MAX_CHUNK, math.ceil(len(lines) / (workers * 4))))
    chunks = [(list(lines[i:i + size]), lang, options) for i in range(0, len(lines), size)]
    out: list[str] = []
    for part in pool.imap(_tokenize_chunk, chunks):
        out.extend(part)
    return out


def _options_for(spec: Mapping, lang: str) -> dict:
    segmenter = (spec.get("segmenter") or {}).get(lang)
    return {"aggressive_dash_splits": bool(spec.get("aggressive_dash_splits", True)),
            "lowercase": bool(spec.get("lowercase", False)), "segmenter": segmenter}


def _decode(line: bytes) -> tuple[str | None, str | None]:
    """(text, problem) for one raw line; problem is a DROP_REASONS key or None."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    if "\x00" in text:
        return None, "nul_byte"
    if not text.strip():
        return None, "empty"
    return text, None


_PROBLEM_TEXT = {"invalid_utf8": "invalid UTF-8", "nul_byte": "a NUL byte", "empty": "an empty line"}


def prepare_split(split: str, langs: Sequence[str], in_dir: Path, out_dir: Path, spec: Mapping,
                  workers: int = 1, pool=None, log: Callable[[str], None] = print) -> dict:
    """Tokenize (and for train, clean) one split; returns its report entry."""
    files = [in_dir / f"{split}.{lang}" for lang in langs]
    raw = [read_raw_lines(path) for path in files]
    if len(raw[0]) != len(raw[1]):
        raise InputError(f"{files[0]} has {len(raw[0])} lines but {files[1]} has {len(raw[1])} lines; "
                         f"the two sides of {split} must be aligned line by line: fix the files (or the "
                         f"recipe that wrote them) and rerun")
    n = len(raw[0])
    dropped = {reason: 0 for reason in DROP_REASONS}
    is_train = split == "train"

    # 1. byte-level checks
    texts: list[list[str]] = [[], []]
    keep_index: list[int] = []
    for i in range(n):
        decoded = [_decode(side[i]) for side in raw]
        problem = next((p for _, p in decoded if p), None)
        if problem:
            if not is_train:
                side = next(k for k, (_, p) in enumerate(decoded) if p)
                raise InputError(f"{files[side]}:{i + 1}: {_PROBLEM_TEXT[problem]} in the {split} split; "
                                 f"{split} lines are never dropped (references must stay aligned), so fix "
                                 f"the file or the recipe that produced it")
            dropped[problem] += 1
            continue
        keep_index.append(i)
        texts[0].append(decoded[0][0])
        texts[1].append(decoded[1][0])

    # 2. tokenization (both sides)
    tokens = [tokenize_parallel(texts[k], langs[k], _options_for(spec, langs[k]), workers, pool)
              for k in range(2)]

    # 3. token-level filters (train only)
    out: list[list[str]] = [[], []]
    min_tokens = int(spec.get("min_tokens", 1))
    max_tokens = int(spec.get("max_tokens", 250))
    max_ratio = float(spec.get("max_ratio", 1.5))
    dedupe = bool(spec.get("dedupe", False))
    seen: set[tuple[str, str]] = set()
    for j, (a, b) in enumerate(zip(*tokens)):
        la, lb = len(a.split()), len(b.split())
        if not is_train:
            if la == 0 or lb == 0:
                side = 0 if la == 0 else 1
                raise InputError(f"{files[side]}:{keep_index[j] + 1}: the line is empty after tokenization "
                                 f"(only control characters?) in the {split} split; fix the file")
            out[0].append(a)
            out[1].append(b)
            continue
        if la == 0 or lb == 0:
            reason = "empty"
        elif la < min_tokens or lb < min_tokens:
            reason = "too_short"
        elif la > max_tokens or lb > max_tokens:
            reason = "too_long"
        elif max(la, lb) > max_ratio * min(la, lb):
            reason = "ratio"
        elif dedupe and (a, b) in seen:
            reason = "duplicate"
        else:
            reason = None
            if dedupe:
                seen.add((a, b))
        if reason:
            dropped[reason] += 1
            continue
        out[0].append(a)
        out[1].append(b)

    if not out[0]:
        raise InputError(f"{files[0]} / {files[1]}: no {split} pair survived cleaning "
                         f"({', '.join(f'{k}: {v}' for k, v in dropped.items() if v)}); check the data and the "
                         f"prepare: settings")
    for k, lang in enumerate(langs):
        write_lines(out_dir / f"{split}.{lang}", out[k])
    entry = {"lines_in": n, "dropped": dropped, "lines_out": len(out[0])}

    # Extra references of an evaluation split (test.ref1.de, ...) are tokenized alongside.
    if not is_train:
        extra = {}
        for k, lang in enumerate(langs):
            for ref in sorted(in_dir.glob(f"{split}.ref*.{lang}")):
                raw_ref = read_raw_lines(ref)
                if len(raw_ref) != n:
                    raise InputError(f"{ref} has {len(raw_ref)} lines but {files[0]} has {n}")
                decoded = []
                for i, line in enumerate(raw_ref):
                    text, problem = _decode(line)
                    if problem:
                        raise InputError(f"{ref}:{i + 1}: {_PROBLEM_TEXT[problem]}; fix the file")
                    decoded.append(text)
                write_lines(out_dir / ref.name, tokenize_parallel(decoded, lang, _options_for(spec, lang),
                                                                  workers, pool))
                extra[ref.name] = len(decoded)
        if extra:
            entry["extra_references"] = extra
    log(f"[prepare] {split}: {n} lines in, {len(out[0])} out"
        + ("".join(f", {k} {v}" for k, v in dropped.items() if v) if is_train else ""))
    return entry


def prepare_dataset(spec: Mapping, langs: Sequence[str], in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    workers: int = 1, splits: Sequence[str] = SPLITS,
                    log: Callable[[str], None] = print) -> dict:
    """Tokenize every split of ``in_dir`` into ``out_dir`` and write ``out_dir/report.json``.

    ``spec`` is the dataset's ``prepare:`` section (lowercase,
    aggressive_dash_splits, min_tokens, max_tokens, max_ratio, segmenter
    ``{lang: jieba}``, optional dedupe). Returns the report.
    """
    if len(langs) != 2:
        raise InputError(f"prepare needs exactly two languages, got {list(langs)}")
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # report.json marks tok/ complete; it goes first and comes back last, so a run that
    # fails half way (full disk, bad line) never leaves old and new files looking finished.
    (out_dir / "report.json").unlink(missing_ok=True)
    report = {"settings": {"langs": list(langs), **{k: v for k, v in dict(spec).items()}, "workers": workers},
              "drop_reasons": list(DROP_REASONS), "splits": {}}
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(worker_pool(workers)) if workers > 1 else None
        for split in splits:
            report["splits"][split] = prepare_split(split, langs, in_dir, out_dir, spec, workers, pool, log)
    write_json(out_dir / "report.json", report)
    return report
