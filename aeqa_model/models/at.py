"""Autoregressive Transformer (the teacher, and the 'Transformer' rows of the tables)."""
from __future__ import annotations

import torch

from aeqa_model.models.base import LossTerm, Seq2SeqModel, label_smoothed_ce, masked_mean
from aeqa_model.models.transformer import Decoder


class ATTransformer(Seq2SeqModel):
    arch = "at"
    default_decoding = "beam4"
    validation_decoding = {"strategy": "greedy"}

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        self.decoder = Decoder(cfg, causal=True)

    def decoder_logits(self, prev_tokens, enc, enc_mask, cache=None, start: int = 0):
        x = self.embed(prev_tokens, start=start)
        states = self.decoder(x, prev_tokens.eq(self.pad) if cache is None else None, enc, enc_mask, cache)
        return self.embed.logits(states[-1])

    def losses(self, batch, update: int):
        enc, enc_mask = self.encode(batch.src)
        logits = self.decoder_logits(batch.prev_output, enc, enc_mask)
        loss, nll = label_smoothed_ce(logits, batch.target_eos, self.label_smoothing, self.pad)
        return {"ce": LossTerm(loss)}

    @torch.no_grad()
    def score(self, src: torch.Tensor, hyps: torch.Tensor) -> torch.Tensor:
        """Teacher-forced mean log-probability of each hypothesis (used by NPD reranking)."""
        enc, enc_mask = self.encode(src)
        d = self.dictionary
        lengths = hyps.ne(self.pad).sum(1)
        prev = torch.cat([torch.full_like(hyps[:, :1], d.bos), hyps], dim=1)
        target = torch.cat([hyps, torch.full_like(hyps[:, :1], self.pad)], dim=1)
        target.scatter_(1, lengths[:, None], d.eos)
        prev = prev.masked_fill(prev.eq(self.pad) & (torch.arange(prev.size(1), device=prev.device) > 0), self.pad)
        logp = torch.log_softmax(self.decoder_logits(prev, enc, enc_mask).float(), -1)
        tok = logp.gather(-1, target.masked_fill(target.eq(self.pad), 0).unsqueeze(-1)).squeeze(-1)
        return masked_mean(tok, target.eq(self.pad))
