"""Binarize stage: build the joint dictionary (from train files) and binarize splits.

Usage (as the Snakemake rules call it)::

    python -m aeqa_model.binarize.cli --dict .../bin/dict.txt --build-dict-from .../bpe/train.en .../bpe/train.de \
        --inputs .../bpe/{split}.{lang} ... --prefixes .../bin/{split}.{src,tgt} ... --report .../bin/report.json

Writes ``{prefix}.bin``/``.idx``/``.sum`` per input (aeqa_model.data.indexed) and,
last, the report.
"""
from __future__ import annotations

import argparse
import json
import sys

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import binarize_file
from aeqa_model.io import write_json


def main(argv: list[str] | None = None) -> int:
    """CLI: build the joint dictionary (from train files) and binarize splits."""
    parser = argparse.ArgumentParser(prog="aeqa-binarize", description=main.__doc__)
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
        write_json(args.report, {"dictionary_size": len(dictionary), "files": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
