"""pretrain_sqs (App. A.2): build the pre-aligned Semantic Quantization Space.

Two encoders are supported:
* ``mbart``: a local mBART-large-cc25 directory loaded with ``transformers``
  (MBartModel + its sentencepiece tokenizer); states are 1024-d and a learned
  projection maps them to the NAT width D.
* ``embedded`` (the demo default): a small multilingual transformer trained here
  with mBART's denoising objective (span masking with Poisson(3.5) spans over
  35% of the words + permutation of sentence pairs) on both sides of the corpus.

Alignment then optimizes ``L_AL = L_a + alpha * L_x`` (Eq. 16-18) while the
codebook follows the EMA update of Eq. 6; the output holds the K x D codebook,
the projection and usage statistics.

How it runs (as training does, issue 15):

* ``--device auto|cpu|cuda`` (the rules pass the config's ``device``). On CUDA
  the encoder passes run under bf16 autocast (``pretrain_sqs.amp``). The
  nearest-code search, the alignment losses and the EMA stay in fp32.
* Under torchrun (several GPUs) there is one DDP process per GPU. Every process
  draws the same global batch of ``batch_size`` sentences and takes every N-th
  sentence of it. The quantizer all-reduces its EMA statistics, so every rank
  keeps the same codebook.
* Each stage writes a checkpoint, ``<output stem>_checkpoint.pt`` next to its
  output, every ``pretrain_sqs.save_every`` updates. On SIGTERM or SIGUSR1 it
  writes one at the next update boundary and exits with 75, as train_nat does;
  rerun to resume. On CPU a resumed run ends bit-identical to an uninterrupted
  one. The checkpoint is deleted once the stage's outputs are written.
* Progress goes to stderr, and every update's losses go to
  ``<output stem>_log.csv``.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from aeqa_model.data.download import file_digest
from aeqa_model.io import EXIT_BAD_INPUT, EXIT_FAILED, InputError, atomic_open, os_error_message, read_lines, write_json
from aeqa_model.pretrain_sqs.align import align
from aeqa_model.pretrain_sqs.encoders import (DenoiseNet, EmbeddedEncoder, check_mbart_dir, denoise_pretrain,
                                              load_encoder, train_sentencepiece)
from aeqa_model.pretrain_sqs.stage import (DEFAULT_SAVE_EVERY, Runtime, StageCheckpoint, StageRun, fingerprint,
                                           refuse_nonfinite, setup_runtime, stage_file, text_digest)
from aeqa_model.train.checkpoint import save_checkpoint
from aeqa_model.train.runtime import (DIVERGED_EXIT_CODE, RERUN_EXIT_CODE, SignalFlag, TrainingDiverged,
                                     configure_logging, stop_processes)


@dataclass(frozen=True, kw_only=True)
class StageJob:
    """One run of the encoder or the align stage: what aeqa_model.pretrain_sqs.cli's flags
    give (their help lines say what each is)."""

    stage: str                      # encoder | align
    spec: dict                      # the pretrain_sqs config section
    src_text: str                   # training sentences, detokenized, line-aligned
    tgt_text: str
    codebook_size: int
    dim: int                        # the NAT width D
    encoder_out: str                # the denoised encoder (the encoder stage's output, the align stage's input)
    out: str                        # sqs.pt (align)
    stats: str                      # the stage's stats.json
    aligned_encoder_out: str | None = None
    seed: int = 1
    threads: int = 0
    device: str = "auto"
    checkpoint: str | None = None   # default: <output stem>_checkpoint.pt
    log_csv: str | None = None      # default: <output stem>_log.csv


def run(job: StageJob) -> int:
    """Run the stage ``job.stage``; returns the exit code (0 done, 75 checkpointed on a
    signal: rerun to resume, 2 bad input)."""
    configure_logging(int(os.environ.get("RANK", "0")))
    log = logging.info
    if job.threads > 0:
        torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    spec = job.spec
    try:
        src, tgt = read_lines(job.src_text), read_lines(job.tgt_text)
        if len(src) != len(tgt):
            raise InputError(f"{job.src_text} has {len(src)} lines but {job.tgt_text} has {len(tgt)}")
        if spec.get("encoder", "embedded") == "mbart":
            check_mbart_dir(spec.get("mbart_path") or "")
        save_every = int(spec.get("save_every", DEFAULT_SAVE_EVERY))
        if save_every < 1:
            raise InputError(f"pretrain_sqs.save_every={save_every}: must be at least 1")
        rt = setup_runtime(job.device, spec.get("amp", "auto"))
        output = job.encoder_out if job.stage == "encoder" else job.out
        run = StageRun(rt, csv_path=Path(job.log_csv or stage_file(output, "_log.csv")), save_every=save_every,
                       signals=SignalFlag())
        checkpoint_path = job.checkpoint or stage_file(output, "_checkpoint.pt")
        log(f"pretrain_sqs {job.stage} on {rt.device}" + (" (bf16 autocast)" if rt.amp else "")
            + (f", {rt.world} processes" if rt.world > 1 else ""))
        if job.stage == "encoder":
            return encoder_stage(spec, src, tgt, job, run, checkpoint_path, log)
        return align_stage(spec, src, tgt, job, run, checkpoint_path, log)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:  # nothing non-finite was written; the message names the settings
        print(f"error: {err}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except OSError as err:  # a full disk: one line naming the file, not a traceback
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        stop_processes()


def encoder_stage(spec, src, tgt, job: StageJob, run: StageRun, checkpoint_path, log) -> int:
    """Denoising pre-training of the embedded encoder (mBART needs none)."""
    rt = run.rt
    if spec.get("encoder", "embedded") == "mbart":
        # mBART-large-cc25 is pre-trained already: the align stage loads it from mbart_path.
        path = check_mbart_dir(spec["mbart_path"])
        if rt.main:
            save_checkpoint(Path(job.encoder_out), {"encoder": "mbart", "mbart_path": str(path)})
            write_json(job.stats, {"encoder": f"mbart:{path}", "updates": 0})
        return 0
    emb = spec["embedded"]
    batch_size = int(emb.get("batch_size", 32))
    if batch_size < rt.world:
        raise InputError(f"pretrain_sqs.embedded.batch_size={batch_size}: needs at least one sentence per "
                         f"process ({rt.world}); set it to {rt.world} or more")
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("encoder", spec, seed=job.seed,
                                                                  corpus=text_digest(src, tgt)), rt, log)
    run.resume = run.checkpoint.load(required=("model", "spm"))
    import sentencepiece as spm

    spm_path = Path(f"{Path(job.encoder_out).with_suffix('.spm')}.model")
    if run.resume is not None:   # the vocabulary the checkpoint was trained with
        proto = run.resume["spm"]
        if rt.main and (not spm_path.exists() or spm_path.read_bytes() != proto):
            with atomic_open(spm_path, "wb") as handle:
                handle.write(proto)
    else:
        if rt.main:
            train_sentencepiece(src + tgt, Path(job.encoder_out).with_suffix(".spm"),
                                int(emb.get("sentencepiece_vocab", 8000)), job.seed)
        rt.barrier()
        proto = spm_path.read_bytes()
    rt.barrier()
    spm_model = spm.SentencePieceProcessor(model_proto=proto)
    run.extra = {"spm": proto}
    sentences = [spm_model.encode(s) for s in src + tgt if s.strip()]
    encoder = EmbeddedEncoder(spm_model.get_piece_size(), emb)
    losses = denoise_pretrain(encoder, sentences, int(emb["denoise_updates"]), float(spec["lr"]), batch_size,
                              job.seed, log, run)
    if losses is None:
        return RERUN_EXIT_CODE
    refuse_nonfinite(job.encoder_out, encoder.state_dict(), "denoising", f"last loss {losses[-1]:.4g}",
                     f"a lower pretrain_sqs.lr (now {spec['lr']})", "pretrain_sqs_encoder")
    if rt.main:
        save_checkpoint(Path(job.encoder_out), {"state_dict": encoder.to("cpu").state_dict(),
                                                 "vocab_size": spm_model.get_piece_size(), "spec": emb,
                                                 "spm": str(spm_path), "denoise_loss": losses})
        write_json(job.stats, {"denoise_loss_first": losses[0], "denoise_loss_last": float(np.mean(losses[-20:])),
                                "updates": len(losses)})
    run.checkpoint.remove()
    return 0


def align_stage(spec, src, tgt, job: StageJob, run: StageRun, checkpoint_path, log) -> int:
    import sentencepiece as spm

    rt = run.rt
    batch_size = int(spec.get("batch_size", 32))
    if batch_size < rt.world:
        raise InputError(f"pretrain_sqs.batch_size={batch_size}: needs at least one sentence per process "
                         f"({rt.world}); set it to {rt.world} or more")
    settings = {"seed": job.seed, "codebook_size": job.codebook_size, "dim": job.dim,
                "corpus": text_digest(src, tgt)}
    # align()'s arguments after the encoder and the pairs, the same for either encoder
    alignment = (job.codebook_size, job.dim, int(spec["align_updates"]), float(spec.get("alpha", 0.5)),
                 float(spec.get("ema_decay", 0.99)), float(spec["lr"]), batch_size, job.seed, log, run)
    if spec.get("encoder", "embedded") == "mbart":
        return run_mbart(spec, src, tgt, job, run, checkpoint_path, settings, log, alignment)
    encoder_path = Path(job.encoder_out)
    payload = load_encoder(encoder_path)
    spm_path = Path(payload["spm"])
    if not spm_path.exists():   # the results directory was moved: the model sits next to encoder.pt
        spm_path = Path(f"{encoder_path.with_suffix('.spm')}.model")
    if not spm_path.exists():
        raise InputError(f"{encoder_path}: its sentencepiece model {payload['spm']} is missing; rerun the "
                         f"pretrain_sqs_encoder stage")
    spm_model = spm.SentencePieceProcessor(model_file=str(spm_path))
    encoder = EmbeddedEncoder(payload["vocab_size"], payload["spec"])
    encoder.load_state_dict(payload["state_dict"])
    off = encoder.offset
    pairs = [([t + off for t in spm_model.encode(a)][:100], [t + off for t in spm_model.encode(b)][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    encoder.train()
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("align", spec, encoder_file=file_digest(encoder_path),
                                                                  **settings), rt, log)
    run.resume = run.checkpoint.load(required=("net", "quantizer"))
    weight = float(spec.get("align_denoise_weight", 0.0))
    result = align(encoder.model.encoder, lambda module, ids: module(ids), encoder.dim, pairs, *alignment,
                   denoiser=DenoiseNet(encoder.model), denoise_weight=weight)
    if result is None:
        return RERUN_EXIT_CODE
    aligned = {"kind": "embedded", "state_dict": encoder.state_dict(), "vocab_size": payload["vocab_size"],
               "spec": payload["spec"], "spm": spm_path.read_bytes()}
    return finish(*result, job, "embedded", run, aligned=aligned)


def run_mbart(spec, src, tgt, job: StageJob, run: StageRun, checkpoint_path, settings: dict, log,
              alignment: tuple) -> int:
    """Align with a real mBART encoder (transformers) loaded from a local directory."""
    try:
        from transformers import MBartModel, MBartTokenizer
    except ImportError:
        print("error: pretrain_sqs.encoder=mbart needs the `transformers` package "
              "(pip install transformers)", file=sys.stderr)
        return EXIT_BAD_INPUT
    path = check_mbart_dir(spec["mbart_path"])
    if float(spec.get("align_denoise_weight", 0.0)) > 0:
        raise InputError("pretrain_sqs.align_denoise_weight > 0 needs encoder: embedded (the mBART stage loads "
                         "mBART's encoder only, not the decoder its denoising needs); set it to 0")
    tokenizer = MBartTokenizer.from_pretrained(str(path), local_files_only=True)
    mbart = MBartModel.from_pretrained(str(path), local_files_only=True).get_encoder()
    pad_id = tokenizer.pad_token_id

    def encode(module, ids):
        mask = ids.eq(0)
        out = module(input_ids=ids.masked_fill(mask, pad_id), attention_mask=(~mask).long())
        return out.last_hidden_state, mask

    pairs = [(tokenizer(a, add_special_tokens=False)["input_ids"][:100], tokenizer(b, add_special_tokens=False)["input_ids"][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    pairs = [(a, b) for a, b in pairs if a and b]
    mbart.train()
    run.checkpoint = StageCheckpoint(checkpoint_path, fingerprint("align", spec, mbart=str(path), **settings),
                                     run.rt, log)
    run.resume = run.checkpoint.load(required=("net", "quantizer"))
    result = align(mbart, encode, mbart.config.d_model, pairs, *alignment, find_unused=True)
    if result is None:
        return RERUN_EXIT_CODE
    aligned = {"kind": "mbart", "state_dict": mbart.state_dict(), "mbart_path": str(path)}
    return finish(*result, job, f"mbart:{path}", run, aligned=aligned)


def finish(quantizer, projection, history, inference_usage, job: StageJob, encoder_name, run: StageRun | None = None,
           aligned: dict | None = None) -> int:
    """Write sqs.pt (codebook, projection, usage) and stats.json and, where the flag
    asks for it, the aligned encoder (``aligned``: its weights after the alignment and
    what it reads with) to ``job.aligned_encoder_out``, which the sqs_target_codes stage
    needs for H_y from the pre-aligned encoder (docs/method.md #26). ``inference_usage``:
    the codes the encoder's states use without dropout (``usage_without_dropout``)."""
    rt = run.rt if run is not None else Runtime()
    if rt.world > 1:   # every rank counted its own share of the batches
        dist.all_reduce(quantizer.usage)
    last = f"last L_AL {history[-1]['L_AL']:.4g}" if history else "no update logged"
    refuse_nonfinite(job.out, {"codebook": quantizer.codebook, **projection.state_dict()}, "alignment", last,
                     f"a lower pretrain_sqs.lr (now {job.spec.get('lr')}) or pretrain_sqs.alpha",
                     "pretrain_sqs")
    stats = quantizer.statistics()
    if rt.main:
        if job.aligned_encoder_out and aligned is not None:
            aligned["state_dict"] = {k: v.detach().cpu().clone() for k, v in aligned["state_dict"].items()}
            save_checkpoint(Path(job.aligned_encoder_out), aligned)
        save_checkpoint(Path(job.out), {"codebook": quantizer.codebook.detach().cpu().clone(),
                                         "projection": projection.to("cpu").state_dict(),
                                         "encoder": encoder_name, "statistics": stats})
        write_json(job.stats, {"encoder": encoder_name, "codebook_size": job.codebook_size, "dim": job.dim,
                                "usage": stats, "usage_without_dropout": inference_usage,
                                "first": history[0] if history else None,
                                "last": history[-1] if history else None,
                                "history": history[:: max(len(history) // 50, 1)]})
        logging.info("codebook: %d/%d codes used, perplexity %.1f (without dropout: %d used, perplexity %.1f)",
                     stats["used"], stats["codes"], stats["perplexity"], inference_usage["used"],
                     inference_usage["perplexity"])
        if inference_usage["used"] < max(2, stats["codes"] // 10):
            logging.warning("without dropout the aligned encoder's states use %d of %d codes: the encoder's "
                            "states barely differ (an undertrained encoder, or one L_AL collapsed; for the embedded "
                            "one, more pretrain_sqs.embedded.denoise_updates and pretrain_sqs.align_denoise_weight "
                            "> 0, docs/method.md #28); the usage above counts dropout noise",
                            inference_usage["used"], stats["codes"])
    if run is not None and run.checkpoint is not None:
        run.checkpoint.remove()
    return 0
