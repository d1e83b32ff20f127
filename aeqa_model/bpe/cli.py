"""BPE stage: learn joint subword-nmt codes, or apply them to files.

Usage (as the Snakemake rules call it)::

    python -m aeqa_model.bpe.cli learn --merges 40000 --codes .../bpe/codes --inputs .../tok/train.en .../tok/train.de
    python -m aeqa_model.bpe.cli apply --codes .../bpe/codes --inputs .../tok/train.en ... \
        --outputs .../bpe/train.en ... --workers 2 [--stamp .../bpe/done.json]
    python -m aeqa_model.bpe.cli learn-apply --merges 40000 --codes .../bpe/codes \
        --learn-inputs .../tok/train.en .../tok/train.de --inputs .../tok/*.{en,de} \
        --outputs .../bpe/*.{en,de} --workers 2 --stamp .../bpe/done.json

``learn-apply`` and ``--stamp`` let a rule run its whole stage as one process that
its shell ``exec``s, so that a signal sent to the job reaches the work itself
(issue 18); the stamp (aeqa_model.data.stamp) is written last.
"""
from __future__ import annotations

import argparse
import sys
import time

from aeqa_model.data import bpe, stamp
from aeqa_model.io import EXIT_BAD_INPUT, InputError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aeqa-bpe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_learn = sub.add_parser("learn", help="learn joint BPE codes on the concatenated inputs")
    p_learn.add_argument("--merges", type=int, required=True)
    p_learn.add_argument("--codes", required=True)
    p_learn.add_argument("--inputs", nargs="+", required=True)
    p_learn.add_argument("--min-frequency", type=int, default=2)
    p_apply = sub.add_parser("apply", help="segment files with learned codes")
    p_apply.add_argument("--codes", required=True)
    p_apply.add_argument("--inputs", nargs="+", required=True)
    p_apply.add_argument("--outputs", nargs="+", required=True)
    p_apply.add_argument("--workers", type=int, default=1)
    p_apply.add_argument("--stamp", default=None, help="completion stamp listing the outputs, written last")
    p_both = sub.add_parser("learn-apply", help="learn the codes, apply them, write the stamp (one process)")
    p_both.add_argument("--merges", type=int, required=True)
    p_both.add_argument("--codes", required=True)
    p_both.add_argument("--learn-inputs", nargs="+", required=True)
    p_both.add_argument("--min-frequency", type=int, default=2)
    p_both.add_argument("--inputs", nargs="+", required=True)
    p_both.add_argument("--outputs", nargs="+", required=True)
    p_both.add_argument("--workers", type=int, default=1)
    p_both.add_argument("--stamp", default=None, help="completion stamp listing the outputs, written last")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command in ("learn", "learn-apply"):
            bpe.learn(args.inputs if args.command == "learn" else args.learn_inputs, args.codes, args.merges,
                      min_frequency=args.min_frequency, log=log)
        if args.command in ("apply", "learn-apply"):
            bpe.apply(args.codes, args.inputs, args.outputs, workers=max(1, args.workers), log=log)
            if args.stamp:
                stamp.main(["--out", args.stamp, "--files", *args.outputs])
    except InputError as err:
        log(f"error: {err}")
        return EXIT_BAD_INPUT
    log(f"[bpe] {args.command} done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
