"""Pretrain-sqs stage: ``python -m aeqa_model.pretrain_sqs.cli --stage encoder|align ...`` (the
pretrain_sqs_encoder and pretrain_sqs rules, under torchrun where several GPUs are given), and
``--stage codes`` (the sqs_target_codes rule: its own flags, see
:mod:`aeqa_model.pretrain_sqs.target_codes`).

The flags are parsed here; :func:`aeqa_model.pretrain_sqs.pretrain.run` (the encoder and
align stages: its module docstring, shown by ``--help``, says how they run, checkpoint and
resume) and :func:`aeqa_model.pretrain_sqs.target_codes.run` (the codes stage) do the work.
"""
from __future__ import annotations

import argparse
import json
import sys

from aeqa_model.io import EXIT_BAD_INPUT
from aeqa_model.pretrain_sqs import pretrain, target_codes


def codes_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aeqa-pretrain-sqs --stage codes", description=target_codes.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sqs", required=True, help="sqs.pt of the pretrain_sqs rule (codebook and projection)")
    p.add_argument("--aligned-encoder", required=True, help="aligned_encoder.pt of the pretrain_sqs rule")
    p.add_argument("--train-tgt", required=True, help="BPE text of the NAT's training targets (raw or KD)")
    p.add_argument("--valid-tgt", required=True, help="BPE text of the validation targets")
    p.add_argument("--out-dir", required=True, help="writes train.{bin,idx,sum} and valid.{bin,idx,sum} here")
    p.add_argument("--report", required=True, help="report.json, written last")
    p.add_argument("--max-tokens", type=int, default=4000, help="encoder pieces per batch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0)
    return p


def stage_parser() -> argparse.ArgumentParser:
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
    return p


def main(argv=None) -> int:
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--stage")
    known, rest = which.parse_known_args(argv)
    if known.stage == "codes":
        return target_codes.run(**vars(codes_parser().parse_args(rest)))
    args = vars(stage_parser().parse_args(argv))
    try:
        args["spec"] = json.loads(args["spec"])
    except json.JSONDecodeError as err:
        print(f"error: --spec is not JSON ({err})", file=sys.stderr)
        return EXIT_BAD_INPUT
    return pretrain.run(pretrain.StageJob(**args))


if __name__ == "__main__":
    sys.exit(main())
