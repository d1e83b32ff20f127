"""Distill stage: ``python -m aeqa_model.distill.cli --shards ... --src ... --ref ... --out-src ...
--out-tgt ... --report ...`` (the distill_gather rule); the work is :func:`aeqa_model.distill.gather.gather`.
"""
from __future__ import annotations

import argparse
import sys

from aeqa_model.distill import gather
from aeqa_model.io import EXIT_BAD_INPUT, InputError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="aeqa-distill", description=gather.__doc__)
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--out-src", required=True)
    p.add_argument("--out-tgt", required=True)
    p.add_argument("--report", required=True)
    args = p.parse_args(argv)
    try:
        print(gather.gather(args.shards, args.src, args.ref, args.out_src, args.out_tgt, args.report))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
