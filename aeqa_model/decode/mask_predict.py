"""Mask-predict decoding (Ghazvininejad et al. 2019) for CMLM.

The ``length_beam`` most likely lengths are decoded side by side. Iteration 0
predicts every position from a fully masked target; iteration t = 1..I-1
re-masks the n = floor(|Y| (I - t) / I) positions with the lowest probability
and predicts only those; tokens and probabilities elsewhere are kept. The
candidate with the best mean log-probability is returned.
"""
from __future__ import annotations

import torch

from aeqa_model.decode import clamp_lengths, strip
from aeqa_model.models.base import masked_mean


def lowest_probability_positions(logp: torch.Tensor, counts: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mask of the ``counts[b]`` least probable real positions of every row."""
    ranks = logp.masked_fill(pad_mask, float("inf")).argsort(dim=1, stable=True).argsort(dim=1)
    return (ranks < counts[:, None]) & ~pad_mask


@torch.no_grad()
def mask_predict(model, src, teacher=None, reference=None, iterations: int = 10, length_beam: int = 3,
                 trace: list | None = None, **_):
    """``trace`` (tests): receives (re-masked positions, tokens after the iteration) per iteration."""
    if iterations < 1:
        raise ValueError(f"mask_predict needs iterations >= 1, got {iterations}")
    enc, enc_mask = model.encode(src)
    bsz = src.size(0)
    lengths = clamp_lengths(model, model.predict_lengths(enc, enc_mask, beam=length_beam))  # (B, l)
    beam = lengths.size(1)
    enc, enc_mask, lengths = (enc.repeat_interleave(beam, 0), enc_mask.repeat_interleave(beam, 0),
                              lengths.reshape(-1))
    tgt_len = int(lengths.max().clamp(min=1))
    pad_mask = torch.arange(tgt_len, device=src.device)[None, :] >= lengths[:, None]
    mask_id, pad = model.dictionary.mask, model.pad
    remask = ~pad_mask
    tokens = torch.full(pad_mask.shape, mask_id, device=src.device).masked_fill(pad_mask, pad)
    logp = torch.zeros(pad_mask.shape, device=src.device)
    for t in range(iterations):
        if t > 0:
            counts = (lengths * (iterations - t)) // iterations
            remask = lowest_probability_positions(logp, counts, pad_mask)
            tokens = tokens.masked_fill(remask, mask_id)
        predicted, predicted_logp = model.predict_masked(enc, enc_mask, tokens, pad_mask)
        tokens = torch.where(remask, predicted, tokens)
        logp = torch.where(remask, predicted_logp, logp)
        if trace is not None:
            trace.append((remask.clone(), tokens.clone()))
    score = masked_mean(logp, pad_mask)
    best = score.view(bsz, beam).argmax(1)
    chosen = tokens.view(bsz, beam, -1)[torch.arange(bsz, device=src.device), best]
    return strip(chosen, pad, model.dictionary.eos)
