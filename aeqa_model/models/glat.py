"""GLAT (Qian et al. 2021): Vanilla NAT trained with glancing sampling.

Two passes per batch with the same dropout masks: the first, without gradients,
predicts Y_hat from the softcopy inputs; then t = floor(lambda * Hamming(Y, Y_hat))
randomly chosen target positions take the gold token's embedding as decoder
input, and the second pass is trained on the positions that were not glanced.
lambda follows ``glancing_schedule`` (``"0.5:0.3@300k"``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from aeqa_model.models.base import LossTerm
from aeqa_model.models.glancing import GlanceSchedule, choose_glance_positions, glance_counts, same_dropout
from aeqa_model.models.nat import NATOptions, VanillaNAT
from aeqa_model.models.options import option


@dataclass(frozen=True)
class GLATOptions(NATOptions):
    glancing_schedule: str = option("0.5:0.3@300k", 'the glancing ratio lambda: "start:end@updates", linear '
                                    'from start to end over that many updates, then constant (or one number); '
                                    "models.glancing.GlanceSchedule")


class GLAT(VanillaNAT):
    arch = "glat"
    default_decoding = "argmax"
    Options = GLATOptions

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        self.schedule = GlanceSchedule.parse(self.opts.glancing_schedule)

    def glance(self, inputs, tgt_mask, enc, enc_mask, target, update: int):
        """First pass + choice of glanced positions; returns (new inputs, glanced mask)."""
        ratio = self.schedule(update)
        glanced = torch.zeros_like(tgt_mask)
        if ratio <= 0:
            return inputs, glanced
        with torch.no_grad(), same_dropout(target.device):
            predicted = self.predict_tokens(inputs, tgt_mask, enc, enc_mask)
            counts = glance_counts(ratio, predicted, target, tgt_mask)
            glanced = choose_glance_positions(torch.rand(target.shape, device=target.device), counts, tgt_mask)
        gold = self.embed.lookup(target).to(inputs.dtype)
        return torch.where(glanced.unsqueeze(-1), gold, inputs), glanced

    def losses(self, batch, update: int):
        enc, enc_mask = self.encode(batch.src)
        inputs, tgt_mask = self.decoder_inputs(enc, enc_mask, batch.target_lengths, self.target_width(batch.target))
        inputs, glanced = self.glance(inputs, tgt_mask, enc, enc_mask, batch.target, update)
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        # The loss covers only the positions the decoder did not see.
        return {"nat": self.translation_loss(layer_logits, batch.target.masked_fill(glanced, self.pad)),
                "length": LossTerm(self.length_loss(enc, enc_mask, batch.target_lengths), self.length_weight)}

    @torch.no_grad()
    def forward_observed(self, enc, enc_mask, reference, observed):
        """Oracle decoding (Fig. 1): at the reference length, the ``observed`` positions
        get the gold embedding as input (as in glancing) and keep the gold token."""
        lengths = reference.ne(self.pad).sum(1)
        inputs, tgt_mask = self.decoder_inputs(enc, enc_mask, lengths)
        reference = reference[:, : inputs.size(1)]
        observed = observed[:, : inputs.size(1)] & ~tgt_mask
        inputs = torch.where(observed.unsqueeze(-1), self.embed.lookup(reference).to(inputs.dtype), inputs)
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        tokens, score = self.pick(layer_logits[-1], tgt_mask)
        return torch.where(observed, reference, tokens), score
