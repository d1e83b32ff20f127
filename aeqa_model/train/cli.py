"""Entry point of the train rules: ``python -m aeqa_model.train.cli ...``.

Exit code 0 when training finished and ``model.pt`` was written; 75 when it was
interrupted by SIGUSR1/SIGTERM after writing a checkpoint (rerun to resume); 1 when
training diverged (non-finite loss, gradients or weights; the message names the update
and the checkpoint to resume from) or a file could not be written or read (a full disk:
one line naming the file; the previous file is unchanged); 2 for unusable input (data,
settings, checkpoints).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.io import EXIT_BAD_INPUT, EXIT_FAILED, InputError, os_error_message
from aeqa_model.models.build import describe_nonfinite, nonfinite_entries
from aeqa_model.provenance import provenance
from aeqa_model.train.checkpoint import save_checkpoint
from aeqa_model.train.runtime import DIVERGED_EXIT_CODE, TrainingDiverged, configure_logging, stop_processes
from aeqa_model.train.trainer import Trainer

WRITE_FAILED_EXIT_CODE = EXIT_FAILED  # a file could not be written or read (a full disk); rerun once fixed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-spec", required=True, help="JSON: the model's config entry")
    p.add_argument("--train-spec", required=True, help="JSON: the training section (+ model overrides)")
    p.add_argument("--sizes", default="{}", help="JSON: config model_sizes")
    p.add_argument("--dict", required=True)
    p.add_argument("--train-src", required=True)
    p.add_argument("--train-tgt", required=True)
    p.add_argument("--valid-src", required=True)
    p.add_argument("--valid-tgt", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--output", required=True, help="final model file (written last, atomically)")
    p.add_argument("--sqs-init", default=None, help="pretrain_sqs output to initialize the codebook")
    p.add_argument("--train-codes", default=None, help="prefix of the training targets' SQS codes "
                   "(sqs_target_codes stage; AEQA models with h_y_encoder: pretrained)")
    p.add_argument("--valid-codes", default=None, help="prefix of the validation targets' SQS codes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--config-sha256", default="")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(int(os.environ.get("RANK", "0")))
    try:
        return run_training(args)
    except OSError as err:
        # A full disk or an I/O error: one line naming the file and the way out (the
        # outputs are atomic, so nothing half-written is left), not ~50 lines of traceback.
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return WRITE_FAILED_EXIT_CODE
    finally:
        stop_processes()


def run_training(args) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model_spec, train_spec = json.loads(args.model_spec), json.loads(args.train_spec)
    try:
        dictionary = Dictionary.load(args.dict)
        train = ParallelCorpus(args.train_src, args.train_tgt, dictionary, codes_prefix=args.train_codes)
        valid = ParallelCorpus(args.valid_src, args.valid_tgt, dictionary, codes_prefix=args.valid_codes)
        if args.sqs_init and not Path(args.sqs_init).exists():
            raise InputError(f"{args.sqs_init}: SQS codebook not found; run pretrain_sqs first")
        trainer = Trainer(model_spec, train_spec, dictionary, train, valid, args.out_dir, seed=args.seed,
                          device=args.device, sizes=json.loads(args.sizes), sqs_init=args.sqs_init,
                          log=logging.info)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = trainer.train()
        if code != 0:
            return code
        if trainer.rank == 0:
            payload = trainer.final_model(trainer.settings.final, trainer.settings.average_last)
    except InputError as err:  # e.g. a damaged checkpoint_last.pt: say which and what to do
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:  # nothing poisoned was written; the message names the way out
        print(f"error: {err}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    if trainer.rank == 0:
        bad = nonfinite_entries(payload["state_dict"])
        if bad:  # the last guard: the checkpoints it came from were all checked
            print(f"error: {args.output}: not written: {describe_nonfinite(bad, len(payload['state_dict']))}; "
                  f"delete the checkpoints in {args.out_dir} and rerun training", file=sys.stderr)
            return DIVERGED_EXIT_CODE
        payload["provenance"] = provenance(seed=args.seed, device=str(trainer.device),
                                           config_sha256=args.config_sha256)
        payload["train_state"] = trainer.state.__dict__
        save_checkpoint(Path(args.output), payload)
        trainer.checkpoints.mark_delivered(Path(args.output), trainer.state.update)
        logging.info("wrote %s (%d updates, best valid loss %.4f)", args.output, trainer.state.update,
                     trainer.state.best_valid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
