"""Pretrain-sqs stage: ``python -m aeqa_model.pretrain_sqs.cli --stage encoder|align ...`` (the
pretrain_sqs_encoder and pretrain_sqs rules, under torchrun where several GPUs are given), and
``--stage codes`` (the sqs_target_codes rule: its own flags, see
:mod:`aeqa_model.pretrain_sqs.target_codes`).

The flags are parsed here; :func:`aeqa_model.pretrain_sqs.pretrain.run` does the work (its
docstring, shown by ``--help``, says how the stages run, checkpoint and resume).
"""
from __future__ import annotations

import argparse
import sys

from aeqa_model.pretrain_sqs import pretrain, target_codes


def main(argv=None) -> int:
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--stage")
    known, rest = which.parse_known_args(argv)
    if known.stage == "codes":
        return target_codes.main(rest)
    p = argparse.ArgumentParser(prog="aeqa-pretrain-sqs", description=pretrain.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="JSON: the pretrain_sqs config section")
    p.add_argument("--src-text", required=True, help="training source sentences (detokenized)")
    p.add_argument("--tgt-text", required=True, help="training target sentences (detokenized)")
    p.add_argument("--codebook-size", type=int, required=True)
    p.add_argument("--dim", type=int, required=True, help="NAT model width D")
    p.add_argument("--encoder-out", required=True, help="denoised encoder checkpoint (K-independent)")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--aligned-encoder-out", default=None,
                   help="align stage: also write the aligned encoder here (for h_y_encoder: pretrained)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--checkpoint", default=None,
                   help="resumable state of the stage (default: <output stem>_checkpoint.pt next to its output)")
    p.add_argument("--log-csv", default=None,
                   help="every update's losses (default: <output stem>_log.csv next to the stage's output)")
    p.add_argument("--stage", choices=["encoder", "align", "codes"], required=True,
                   help="codes: the sqs_target_codes stage, with the flags of `--stage codes --help`")
    args = p.parse_args(argv)
    return pretrain.run(args)


if __name__ == "__main__":
    sys.exit(main())
