"""Prepare stage: Moses-tokenize ``orig/`` into ``tok/`` and clean the training split.

Usage (as the Snakemake rule calls it)::

    python -m aeqa_model.prepare.cli --spec '{"lowercase": false, "aggressive_dash_splits": true,
        "min_tokens": 1, "max_tokens": 250, "max_ratio": 1.5}' \
        --langs en de --in-dir .../orig --out-dir .../tok --workers 2

``--spec`` is the dataset's ``prepare:`` section as JSON (or ``@file.json``).
Writes ``{split}.{lang}`` and ``report.json`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aeqa_model.data.prepare import SPLITS, prepare_dataset
from aeqa_model.io import EXIT_BAD_INPUT, InputError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aeqa-prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="the dataset's prepare: section as JSON (or @file)")
    parser.add_argument("--langs", nargs=2, required=True, metavar=("L1", "L2"))
    parser.add_argument("--in-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes for tokenization (1 = in-process)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to prepare (default: all)")
    args = parser.parse_args(argv)
    try:
        text = Path(args.spec[1:]).read_text(encoding="utf-8") if args.spec.startswith("@") else args.spec
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"--spec: not valid JSON ({err})") from None
        started = time.monotonic()
        prepare_dataset(spec, args.langs, args.in_dir, args.out_dir, workers=max(1, args.workers),
                        splits=args.splits, log=log)
        log(f"[prepare] wrote {args.out_dir}/report.json in {time.monotonic() - started:.1f}s")
    except InputError as err:
        log(f"error: {err}")
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
