"""What the two AEQA models (aeqa_nat.py, aeqa_dat.py) share: the Semantic
Quantization Space on the encoder's width (its construction and its pre-aligned
initialisation, ``SQSMixin``), the target encoding H_y, and the alignment losses
L_SQA = L_ax + L_xy + L_ay (Eq. 7-10).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from aeqa_model.models.base import LossTerm, masked_mean
from aeqa_model.models.options import ModelOptions, option
from aeqa_model.models.sqs import Quantized, SemanticQuantizer

SQA_TERMS = ("ax", "xy", "ay")
SQA_REDUCTIONS = ("mean", "sum")


def squared_error(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """||a - b||^2 per vector (docs/method.md #6): ``mean`` over the D dimensions (the
    default: comparable across widths) or ``sum`` (the literal squared L2 norm, D
    times larger)."""
    err = (a.float() - b.float()).pow(2)
    return err.sum(-1) if reduction == "sum" else err.mean(-1)


def masked_sq_error(a: torch.Tensor, b: torch.Tensor, pad_mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """||a - b||^2 per position averaged over non-padding positions (dimensions: see
    ``squared_error``)."""
    err = squared_error(a, b, reduction)
    keep = (~pad_mask).float()
    return (err * keep).sum() / keep.sum().clamp(min=1)


@contextmanager
def without_dropout(*modules: nn.Module):
    """Run the enclosed code with ``modules`` in inference mode (no dropout), then
    restore each module's own training flag."""
    was = [m.training for m in modules]
    for m in modules:
        m.train(False)
    try:
        yield
    finally:
        for m, flag in zip(modules, was):
            m.train(flag)


def encode_target(model, target: torch.Tensor, y_mask: torch.Tensor, dropout: bool) -> torch.Tensor:
    """H_y = f_enc(Y) (Eq. 5, docs/method.md #8, #23), with no gradient: every use of
    it is behind a stop-gradient (Eq. 9, 10) or is a codebook vector (Eq. 11). Unless
    ``dropout``, the pass runs without dropout: H_y is a target, as GLAT's gold
    embeddings are, and the quantized codes should not depend on a dropout draw."""
    with torch.no_grad(), (nullcontext() if dropout else without_dropout(model.embed, model.encoder)):
        return model.encoder.forward_embedded(model.embed(target), y_mask)


def check_sqa_options(terms, reduction) -> tuple[tuple[str, ...], str]:
    """The ablation switches of L_SQA: which of its terms are on, and how ||.||^2
    reduces over dimensions."""
    terms = tuple(terms)
    unknown = [t for t in terms if t not in SQA_TERMS]
    if unknown or len(set(terms)) != len(terms):
        raise ValueError(f"sqa_terms {list(terms)}: each of {list(SQA_TERMS)} at most once")
    if reduction not in SQA_REDUCTIONS:
        raise ValueError(f"sqa_reduction {reduction!r}: one of {list(SQA_REDUCTIONS)}")
    return terms, reduction


def sqa_terms(enc, enc_mask, q_x, q_y, y_mask, decoder_states, weight: float,
              terms: tuple[str, ...] = SQA_TERMS, reduction: str = "mean") -> dict[str, LossTerm]:
    """L_SQA = L_ax + L_xy + L_ay (Eq. 7-10), each weighted by epsilon (Eq. 13).

    ``decoder_states`` (B, n, D) are the last decoder layer's states aligned with
    the target positions (AEQA-NAT: position i; AEQA-DAT: the vertex of the best
    alignment path for y_i). ``terms`` leaves out the terms it does not name (the
    ablation of each term); ``reduction`` is the sum or mean over dimensions.
    """
    out = {}
    if "ax" in terms:
        out["sqa_ax"] = LossTerm(masked_sq_error(enc, q_x.codes.detach(), enc_mask, reduction), weight)   # Eq. 8
    if "xy" in terms:
        zbar_x = masked_mean(q_x.codes, enc_mask)                                  # grads reach e_k
        zbar_y = masked_mean(q_y.codes, y_mask).detach()
        out["sqa_xy"] = LossTerm(squared_error(zbar_x, zbar_y, reduction).mean(), weight)                 # Eq. 9
    if "ay" in terms:
        out["sqa_ay"] = LossTerm(masked_sq_error(decoder_states, q_y.codes.detach(), y_mask, reduction), weight)  # Eq. 10
    return out


@dataclass(frozen=True)
class SQSOptions(ModelOptions):
    """The options of an AEQA model's SQS and L_SQA (models/options.py: how options
    are declared), and two that only the workflow reads: where the codebook starts."""

    codebook_size: int = option(2048, "K, the number of codebook vectors of the SQS (Sec. 2.1; Table 6 sweeps it)",
                                schema={"minimum": 1})
    ema_decay: float = option(0.99, "decay of the SQS's EMA statistics (models.sqs.SemanticQuantizer; "
                              "the codebook itself is updated by gradients in NAT training, docs/method.md #22)")
    sqa_weight: float = option(0.25, "epsilon, the weight of each L_SQA term (Eq. 13)", schema={"minimum": 0})
    codebook_reset: float = option(0.01, "re-seed codebook vectors used less than this share of the uniform "
                                   "rate from current encoder states (docs/method.md #22); 0 = off",
                                   schema={"minimum": 0})
    target_dropout: bool = option(False, "the encoder pass over Y (H_y, Eq. 5) runs with dropout "
                                  "(docs/method.md #23)")
    sqs_init: str = option("pretrained", "start from the pretrain_sqs codebook (Sec. 2.4), or from a random one",
                           choices=("pretrained", "random"), workflow=True)
    sqs_align_updates: int | None = option(None, "a pre-alignment of this many updates of its own "
                                           "(unset: pretrain_sqs.align_updates)",
                                           schema={"type": "integer", "minimum": 1}, workflow=True)
    h_y_encoder: str = option("nat", "where H_y (Eq. 5) comes from: nat (the NAT's own encoder applied to Y) "
                              "or pretrained (the pre-aligned encoder and its projection, frozen, its codes mapped "
                              "onto the target's BPE positions by the sqs_target_codes stage; docs/method.md #26)",
                              choices=("nat", "pretrained"))

    def conflicts(self) -> list[str]:
        if self.h_y_encoder == "pretrained" and self.sqs_init != "pretrained":
            return ["h_y_encoder: pretrained reads the codes of the pre-aligned encoder, so it needs "
                    "sqs_init: pretrained (the codebook they index)"]
        return []


class SQSMixin:
    """The SQS of an AEQA model and the options that shape it and L_SQA (SQSOptions,
    part of the model's Options). A model calls ``init_sqs`` right after its base
    class's ``__init__``; the trainer starts the codebook from the pre-aligned one
    through ``load_pretrained_sqs``."""

    def init_sqs(self, dim: int) -> None:
        opts = self.opts
        self.sqs = SemanticQuantizer(opts.codebook_size, dim, decay=opts.ema_decay)
        self.sqs.enable_reset(opts.codebook_reset)
        self.sqa_weight = opts.sqa_weight                                  # epsilon, Eq. 13
        self.target_dropout = opts.target_dropout                          # docs/method.md #23

    def load_pretrained_sqs(self, path) -> None:
        self.sqs.load_pretrained(path)

    def quantize_both(self, batch, enc: torch.Tensor, enc_mask: torch.Tensor, y_mask: torch.Tensor):
        """(z_q(H_x), H_y, z_q(H_y)) of Eq. 4-5 for a batch with encoder states ``enc``.

        With ``h_y_encoder: nat``, H_y = f_enc(Y) by this model's encoder and z_q its
        nearest codes (computed in this order: the codebook's training-time reset may move
        codes between the two lookups). With ``pretrained`` (docs/method.md #26) H_y is the
        frozen pre-aligned encoder's, quantized once by the sqs_target_codes stage into
        ``batch.target_codes``; only the code indices are stored, so H_y is None and
        z_q(H_y) is the codebook's current row for each index (the rows move in NAT
        training as they do under ``nat``)."""
        if self.opts.h_y_encoder == "nat":
            h_y = encode_target(self, batch.target, y_mask, self.target_dropout)
            q_x = self.sqs(enc, enc_mask)
            return q_x, h_y, self.sqs(h_y, y_mask)
        if batch.target_codes is None:
            raise ValueError("h_y_encoder: pretrained needs the target codes of the sqs_target_codes stage "
                             "with every batch (train cli --train-codes/--valid-codes)")
        indices = batch.target_codes.masked_fill(y_mask, 0)
        codes = self.sqs.lookup(indices)
        return self.sqs(enc, enc_mask), None, Quantized(indices=indices, codes=codes, source=codes.detach())
