"""NAT with CTC (Libovický & Helcl 2018; Graves et al. 2006).

The decoder runs on ``upsample * |X|`` positions copied from the encoder states
(softcopy, as Vanilla NAT), predicts a token or the dedicated ``<blank>`` at
each, and is trained with torch's CTC loss, which sums over every alignment
that collapses to the target. No length predictor: the output length is what
remains after collapsing repeats and removing blanks. DSLP (``dslp: true``)
applies the CTC loss to every layer's prediction and averages.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aeqa_model.models.base import LossTerm, masked_mean, pack_left
from aeqa_model.models.nat import NATOptions, VanillaNAT
from aeqa_model.models.options import option


def ctc_collapse(tokens: torch.Tensor, valid: torch.Tensor, blank: int, pad: int) -> torch.Tensor:
    """Merge repeated tokens, drop blanks and left-pack each row (vectorized).

    tokens (B, T) best token per position, valid (B, T) True at real positions;
    returns (B, T) with the collapsed sequence first and ``pad`` after it.
    """
    previous = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)
    return pack_left(tokens, valid & tokens.ne(blank) & tokens.ne(previous), pad)


@dataclass(frozen=True)
class CTCOptions(NATOptions):
    # read as int(); the config schema has always taken any number > 0
    upsample: int = option(2, "the decoder runs on upsample * |X| positions", schema={"type": "number",
                                                                                     "exclusiveMinimum": 0})


class CTCNAT(VanillaNAT):
    arch = "ctc"
    default_decoding = "argmax"
    Options = CTCOptions

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        self.upsample = self.opts.upsample
        if self.upsample < 1:
            raise ValueError(f"ctc upsample must be >= 1, got {self.upsample}")
        self.length = None  # no length predictor: it would be an unused (DDP-breaking) parameter

    def output_lengths(self, enc_mask: torch.Tensor) -> torch.Tensor:
        return self.upsample * self.source_lengths(enc_mask).clamp(min=1)

    def predict_lengths(self, enc, enc_mask, beam: int = 1) -> torch.Tensor:
        # The decoder length is fixed by the source; every "candidate" is the same.
        return self.output_lengths(enc_mask)[:, None].expand(-1, beam)

    def ctc_loss(self, logits, out_lengths, target, tgt_lengths) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)          # (T, B, V)
        # Per-sentence negative log-likelihood divided by its target length, then the
        # batch mean (reduction="mean"); alignments impossible for a too-short
        # decoder contribute zero instead of inf.
        return F.ctc_loss(logp, target, out_lengths, tgt_lengths, blank=self.dictionary.blank,
                          reduction="mean", zero_infinity=True)

    def losses(self, batch, update: int):
        enc, enc_mask = self.encode(batch.src)
        out_lengths = self.output_lengths(enc_mask)
        inputs, out_mask = self.copy_inputs(enc, enc_mask, out_lengths)
        layer_logits, _ = self.run_decoder(inputs, out_mask, enc, enc_mask)
        loss = torch.stack([self.ctc_loss(lg, out_lengths, batch.target, batch.target_lengths)
                            for lg in layer_logits]).mean()
        return {"ctc": LossTerm(loss)}

    @torch.no_grad()
    def forward_inference(self, enc, enc_mask, lengths, **_):
        inputs, out_mask = self.copy_inputs(enc, enc_mask, lengths)
        layer_logits, _ = self.run_decoder(inputs, out_mask, enc, enc_mask)
        logp = torch.log_softmax(layer_logits[-1].float(), -1)
        special = torch.ones(logp.size(-1), dtype=torch.bool, device=logp.device)
        special[6:] = False
        special[self.dictionary.blank] = False
        best, tokens = logp.masked_fill(special, float("-inf")).max(-1)
        score = masked_mean(best.masked_fill(out_mask, 0), out_mask)
        return ctc_collapse(tokens, ~out_mask, self.dictionary.blank, self.pad), score
