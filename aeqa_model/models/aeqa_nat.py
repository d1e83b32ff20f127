"""AEQA-NAT (Sec. 2.2-2.5, App. A and C): NAT trained through a pre-aligned
Semantic Quantization Space, with glancing over *quantized vectors*.

Training (Eq. 7-13):
    H_x = f_enc(X), H_y = f_enc(Y)  (one encoder, shared SQS for both languages)
    H_m = softcopy(H_x) to the target length; decoder input z_q(H_m)
    glancing: t positions take z_q(H_y)_j instead of z_q(H_m)_j   (Eq. 11)
    L = L_NAT + eps * (L_ax + L_xy + L_ay) + delta * L_LEN          (Eq. 13)
Inference (Eq. 15): one pass on z_q(H_m) (lambda_inf = 0), or a second pass in
which the least confident positions take the quantized encoding of the first
pass output (lambda_inf > 0, Table 3; see docs/method.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aeqa_model.models.base import LossTerm
from aeqa_model.models.glancing import GlanceSchedule, choose_glance_positions, glance_counts, same_dropout
from aeqa_model.models.hostsync import avoid_sync
from aeqa_model.models.nat import NATOptions, VanillaNAT
from aeqa_model.models.options import option
from aeqa_model.models.sqa import SQA_REDUCTIONS, SQA_TERMS, SQSMixin, SQSOptions, check_sqa_options, sqa_terms


def anneal(start: float, end: float, update: int, total: int) -> float:
    """Linear annealing from ``start`` at update 0 to ``end`` at ``total`` (then constant)."""
    return GlanceSchedule(start, end, total)(update)


def aligned_reordering(target_embed: torch.Tensor, quantized: torch.Tensor, tgt_mask: torch.Tensor,
                       in_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 14 / Alg. 1: A = softmax(Y z_q(H_m)^T); position i takes input argmax_j A_ij.

    target_embed (B, n, D), quantized (B, m, D); returns (B, n) indices into m.
    """
    scores = torch.bmm(target_embed.float(), quantized.float().transpose(1, 2))
    scores = scores.masked_fill(in_mask[:, None, :], float("-inf"))
    alignment = torch.softmax(scores, dim=-1)
    return alignment.argmax(-1).masked_fill(tgt_mask, 0)


def pointer_loss(ptr: torch.Tensor, perm: torch.Tensor, tgt_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the pointer logits (B, n, m) against the permutation (B, n),
    averaged over the non-padding positions. On a GPU (``avoid_sync``) padding is
    ignored (``ignore_index``) instead of selecting the real rows, which would make
    the host wait for the device."""
    if avoid_sync(ptr):
        return F.cross_entropy(ptr.float().flatten(0, 1), perm.masked_fill(tgt_mask, -100).flatten(),
                               ignore_index=-100)
    return F.cross_entropy(ptr.float()[~tgt_mask], perm[~tgt_mask])


@dataclass(frozen=True)
class AEQANATOptions(SQSOptions, NATOptions):
    """AEQA-NAT's options: SQSOptions, NATOptions and these (models/options.py)."""

    glancing: str = option("adaptive", "glancing over quantized vectors (Eq. 11): adaptive (t = lambda * "
                           "Hamming(Y, Y_hat)), uniform (t = lambda * |Y|) or none", choices=("adaptive", "uniform", "none"))
    lambda_start: float = option(0.6, "the glancing ratio lambda at update 0 (Sec. 3, Table 7)",
                                 schema={"minimum": 0, "maximum": 1})
    lambda_end: float = option(0.4, "the glancing ratio lambda after anneal_updates (Sec. 3, Table 7)",
                               schema={"minimum": 0, "maximum": 1})
    anneal_updates: int = option(300000, "updates over which lambda goes linearly from lambda_start to "
                                 "lambda_end; unset: the training's max_updates (this default only without one)",
                                 schema={"minimum": 1})
    glance_loss: str = option("all", "the positions L_NAT covers: all (Eq. 12) or the unglanced ones (as GLAT)",
                              choices=("all", "unglanced"))
    reordering: bool = option(False, "aligned reordering of the decoder inputs (Eq. 14, Alg. 1) with a "
                              "pointer layer predicting it")
    sqa_terms: tuple[str, ...] = option(SQA_TERMS, "the L_SQA terms that are on (Eq. 8-10; the ablation of "
                                        "each term, docs/fidelity.md)",
                                        schema={"type": "array", "items": {"enum": list(SQA_TERMS)},
                                                "uniqueItems": True})
    sqa_reduction: str = option("mean", "||.||^2 of L_SQA over the D dimensions: mean (comparable across "
                                "widths) or sum (the literal squared norm, docs/method.md #6)", choices=SQA_REDUCTIONS)
    quantize_input: bool = option(True, "the decoder reads z_q(H_m) and glances z_q(H_y); false: H_m and H_y "
                                  "unquantized (the GLAT-like control, docs/method.md #24)")
    glance_into: str = option("codes", "the reading of Eq. 11 (docs/method.md #25): codes (A: the decoder reads "
                              "z_q(H_m) and glanced positions take z_q(H_y), codes of the reference) or continuous "
                              "(B: the decoder reads H_m and glanced positions take their own z_q(h_j); at "
                              "inference the share lambda_inference of positions is quantized, no target anywhere)",
                              choices=("codes", "continuous"))
    lambda_inference: float = option(0.4, "reading B (glance_into: continuous): the share of decoder positions "
                                     "quantized at inference, evenly spaced (Sec. 3: 'a fixed value of 0.4 in "
                                     "inference'); a decoding's lambda_inf > 0 overrides it (Table 3's sweep)",
                                     schema={"minimum": 0, "maximum": 1})
    codebook_update: str = option("gradient", "how the SQS moves in NAT training: gradient (Sec. 2.4's last "
                                  "sentence: through Eq. 9 and the glanced codes) or ema (Eq. 6 on the source states "
                                  "H_x after every forward pass, as in pre-alignment; it sets the codebook, so "
                                  "gradient steps on it do not last; docs/method.md #27)",
                                  choices=("gradient", "ema"))

    def conflicts(self) -> list[str]:
        problems = super().conflicts()
        if self.h_y_encoder == "pretrained" and not self.quantize_input:
            problems.append("h_y_encoder: pretrained stores only the codes of H_y, and quantize_input: false "
                            "glances the unquantized H_y; use one of them")
        return problems


class AEQANAT(SQSMixin, VanillaNAT):
    arch = "aeqa_nat"
    default_decoding = "argmax"
    Options = AEQANATOptions

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        opts = self.opts
        self.init_sqs(cfg.embed_dim)                                        # SQS, sqa_weight, target_dropout
        self.glancing = opts.glancing                                       # adaptive | uniform | none
        self.lambda_start = opts.lambda_start
        self.lambda_end = opts.lambda_end
        # without its own anneal_updates, lambda anneals over the training's max_updates
        self.anneal_updates = (opts.anneal_updates if "anneal_updates" in options
                               else int(options.get("max_updates", opts.anneal_updates)))
        self.glance_loss = opts.glance_loss                                 # all (Eq. 12) | unglanced
        self.reordering = opts.reordering
        # Ablation switches (docs/fidelity.md): L_SQA terms and reduction; with
        # quantize_input false the decoder reads H_m and glances H_y unquantized (the
        # GLAT-like control: same losses, no quantization on the decoder's input).
        self.sqa_terms, self.sqa_reduction = check_sqa_options(opts.sqa_terms, opts.sqa_reduction)
        self.quantize_input = opts.quantize_input
        self.glance_into, self.lambda_inference = opts.glance_into, opts.lambda_inference
        self.codebook_update = opts.codebook_update
        if self.reordering:
            # Light pointer layer predicting the AR permutation from z_q(H_m) alone.
            self.pointer_q = nn.Linear(cfg.embed_dim, cfg.embed_dim)
            self.pointer_k = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def glance_ratio(self, update: int) -> float:
        return anneal(self.lambda_start, self.lambda_end, update, self.anneal_updates)

    def pointer_logits(self, quantized, in_mask):
        q = self.pointer_q(self.embed.add_positions(quantized))
        k = self.pointer_k(quantized)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.size(-1))
        return scores.masked_fill(in_mask[:, None, :], float("-inf"))

    @staticmethod
    def gather_positions(x, index):
        return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))

    # ------------------------------------------------------------- training --
    def losses(self, batch, update: int):
        target, tgt_lengths = batch.target, batch.target_lengths
        enc, enc_mask = self.encode(batch.src)                                       # H_x
        y_mask = target.eq(self.pad)
        q_x, h_y, q_y = self.quantize_both(batch, enc, enc_mask, y_mask)             # Eq. 4, H_y, Eq. 5
        h_m, tgt_mask = self.copy_inputs(enc, enc_mask, tgt_lengths, self.target_width(target))  # softcopy
        q_m = self.sqs(h_m, tgt_mask)
        if not self.quantize_input:              # the GLAT-like control: nothing quantized
            inputs, glance_vectors = h_m, h_y
        elif self.glance_into == "codes":        # reading A: z_q(H_m), glancing the reference's codes
            inputs, glance_vectors = q_m.straight, q_y.codes
        else:                                    # reading B: H_m, glanced positions quantized in place
            inputs, glance_vectors = h_m, q_m.straight
        terms: dict[str, LossTerm] = {}

        if self.reordering:                                                          # Eq. 14
            perm = aligned_reordering(self.embed.lookup(target), q_m.codes.detach(), tgt_mask, tgt_mask)
            ptr = self.pointer_logits(q_m.codes.detach(), tgt_mask)
            terms["pointer"] = LossTerm(pointer_loss(ptr, perm, tgt_mask))
            inputs = self.gather_positions(inputs, perm)
            if self.quantize_input and self.glance_into == "continuous":  # they follow the inputs' order
                glance_vectors = self.gather_positions(glance_vectors, perm)

        glanced = torch.zeros_like(tgt_mask)
        ratio = self.glance_ratio(update)
        if self.glancing != "none" and ratio > 0:                                    # Eq. 11
            with torch.no_grad(), same_dropout(target.device):
                if self.glancing == "adaptive":                                        # Hamming(Y, Y^)
                    predicted = self.predict_tokens(inputs, tgt_mask, enc, enc_mask)
                    counts = glance_counts(ratio, predicted, target, tgt_mask)
                else:                                                                  # uniform: |Y|
                    counts = torch.floor(ratio * tgt_lengths.float()).long()
                glanced = choose_glance_positions(torch.rand(target.shape, device=target.device), counts, tgt_mask)
            inputs = torch.where(glanced.unsqueeze(-1), glance_vectors.to(inputs.dtype), inputs)

        layer_logits, last = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        loss_target = target.masked_fill(glanced, self.pad) if self.glance_loss == "unglanced" else target
        terms["nat"] = self.translation_loss(layer_logits, loss_target)                # Eq. 12

        terms.update(sqa_terms(enc, enc_mask, q_x, q_y, y_mask, last, self.sqa_weight,
                               self.sqa_terms, self.sqa_reduction))
        terms["length"] = LossTerm(self.length_loss(enc, enc_mask, tgt_lengths), self.length_weight)
        if self.codebook_update == "ema" and self.training:                         # Eq. 6 on H_x
            # After every lookup of this pass, so that all of them saw one codebook. Dead
            # codes are left to the training-time reset (codebook_reset), which moves
            # their EMA statistics with them.
            self.sqs.ema_update(enc.detach(), q_x.indices, enc_mask, reseed=False)
        return terms

    # ------------------------------------------------------------ inference --
    def decoder_vectors(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the decoder reads at inference for states ``h``: z_q(h) (Eq. 15), h itself
        under the unquantized control (``quantize_input: false``), or under reading B
        (``glance_into: continuous``) h with the share lambda_inference quantized."""
        if not self.quantize_input:
            return h
        if self.glance_into == "continuous":
            return self.continuous_inputs(h, mask, self.lambda_inference)
        return self.sqs(h, mask).codes

    def continuous_inputs(self, h_m: torch.Tensor, tgt_mask: torch.Tensor, share: float) -> torch.Tensor:
        """Reading B at inference: H_m with floor(share * m) evenly spaced positions
        replaced by their codes z_q(h_j). Training draws the positions at random; here
        they are fixed, so a sentence decodes the same in any batch."""
        position = torch.arange(h_m.size(1), device=h_m.device, dtype=torch.float64)[None, :]
        # position i is picked when floor((i+1) s) > floor(i s): floor(m s) of the first m
        picked = (torch.floor((position + 1) * share) > torch.floor(position * share)) & ~tgt_mask
        return torch.where(picked.unsqueeze(-1), self.sqs(h_m, tgt_mask).codes.to(h_m.dtype), h_m)

    @torch.no_grad()
    def forward_inference(self, enc, enc_mask, lengths, lambda_inf: float = 0.0, **_):
        h_m, tgt_mask = self.copy_inputs(enc, enc_mask, lengths)
        if self.quantize_input and self.glance_into == "continuous":                # reading B: one pass
            share = lambda_inf if lambda_inf > 0 else self.lambda_inference
            inputs = self.continuous_inputs(h_m, tgt_mask, share) if share > 0 else h_m
            if self.reordering:
                perm = self.pointer_logits(self.sqs(h_m, tgt_mask).codes, tgt_mask).argmax(-1).masked_fill(tgt_mask, 0)
                inputs = self.gather_positions(inputs, perm)
            layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
            return self.pick(layer_logits[-1], tgt_mask)
        inputs = self.decoder_vectors(h_m, tgt_mask)
        if self.reordering:
            perm = self.pointer_logits(inputs, tgt_mask).argmax(-1).masked_fill(tgt_mask, 0)
            inputs = self.gather_positions(inputs, perm)
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        tokens, score = self.pick(layer_logits[-1], tgt_mask)
        if lambda_inf <= 0:
            return tokens, score
        # Two-pass reading of lambda_inf > 0 (spec §5): the round(lambda*m) least
        # confident positions take the quantized encoding of the first-pass output.
        conf = torch.log_softmax(layer_logits[-1].float(), -1).max(-1).values.masked_fill(tgt_mask, float("inf"))
        counts = torch.round(lambda_inf * lengths.float()).long()
        ranks = conf.argsort(1).argsort(1)
        replace = (ranks < counts[:, None]) & ~tgt_mask
        h_hyp = self.encoder.forward_embedded(self.embed(tokens), tgt_mask)
        inputs = torch.where(replace.unsqueeze(-1), self.decoder_vectors(h_hyp, tgt_mask), inputs)
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        return self.pick(layer_logits[-1], tgt_mask)
