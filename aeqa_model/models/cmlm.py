"""CMLM (Ghazvininejad et al. 2019): a conditional masked language model.

Training: a random number k ~ U{1..|Y|} of target positions are replaced by
``<mask>``; the decoder (non-causal) sees the partially masked target and is
trained to recover the masked tokens. The length is predicted from the
mean-pooled encoder states as in Vanilla NAT (CMLM's special LENGTH token is
replaced by the shared length classifier; docs/models.md). Decoding is
mask-predict (aeqa_model/decode/mask_predict.py).
"""
from __future__ import annotations

import torch

from aeqa_model.models.base import LossTerm, label_smoothed_ce, masked_mean
from aeqa_model.models.glancing import choose_glance_positions
from aeqa_model.models.nat import VanillaNAT


class CMLM(VanillaNAT):
    arch = "cmlm"
    default_decoding = "mask_predict10"
    validation_decoding = {"strategy": "mask_predict", "iterations": 2, "length_beam": 1}

    def masked_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decoder inputs: embedded (partially masked) target tokens; positions are added later."""
        return self.embed.lookup(tokens)

    def losses(self, batch, update: int):
        target, lengths = batch.target, batch.target_lengths
        enc, enc_mask = self.encode(batch.src)
        tgt_mask = target.eq(self.pad)
        counts = (torch.rand(lengths.shape, device=target.device) * lengths.float()).floor().long() + 1
        masked = choose_glance_positions(torch.rand(target.shape, device=target.device),
                                         torch.minimum(counts, lengths), tgt_mask)
        inputs = self.masked_inputs(target.masked_fill(masked, self.dictionary.mask))
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        # The loss covers the masked positions only (CMLM's objective).
        only_masked = target.masked_fill(~masked, self.pad)
        losses = [label_smoothed_ce(lg, only_masked, self.label_smoothing, self.pad)[0] for lg in layer_logits]
        return {"mlm": LossTerm(torch.stack(losses).mean()),
                "length": LossTerm(self.length_loss(enc, enc_mask, lengths), self.length_weight)}

    @torch.no_grad()
    def predict_masked(self, enc, enc_mask, tokens, tgt_mask):
        """Best token and its log-probability at every position given ``tokens``
        (which hold ``<mask>`` where the decoder has to fill in)."""
        layer_logits, _ = self.run_decoder(self.masked_inputs(tokens), tgt_mask, enc, enc_mask)
        logp = torch.log_softmax(layer_logits[-1].float(), -1)
        logp[..., :6] = float("-inf")
        best, predicted = logp.max(-1)
        return predicted.masked_fill(tgt_mask, self.pad), best.masked_fill(tgt_mask, 0.0)

    @torch.no_grad()
    def forward_inference(self, enc, enc_mask, lengths, **_):
        """One pass from a fully masked target (mask-predict with one iteration)."""
        tgt_len = int(lengths.max().clamp(min=1))
        tgt_mask = torch.arange(tgt_len, device=enc.device)[None, :] >= lengths[:, None]
        tokens = torch.full(tgt_mask.shape, self.dictionary.mask, device=enc.device).masked_fill(tgt_mask, self.pad)
        predicted, logp = self.predict_masked(enc, enc_mask, tokens, tgt_mask)
        return predicted, masked_mean(logp, tgt_mask)

    @torch.no_grad()
    def forward_observed(self, enc, enc_mask, reference, observed):
        """Oracle decoding (Fig. 1): the ``observed`` reference tokens are given
        unmasked, the others are predicted in one pass."""
        tgt_mask = reference.eq(self.pad)
        observed = observed & ~tgt_mask
        tokens = torch.where(observed, reference, torch.full_like(reference, self.dictionary.mask))
        predicted, logp = self.predict_masked(enc, enc_mask, tokens.masked_fill(tgt_mask, self.pad), tgt_mask)
        return torch.where(observed, reference, predicted), masked_mean(logp, tgt_mask)
