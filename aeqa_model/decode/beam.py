"""Batched beam search for the AT model with cached keys/values.

Finished hypotheses stay in their beam slot and can only be extended by
padding at zero cost, so with a beam as wide as the hypothesis space the
search is exhaustive (tested against brute force). Final hypotheses are ranked
by ``score / length ** lenpen`` (length counts the EOS).
"""
from __future__ import annotations

import torch

from aeqa_model.decode import strip


def _reorder_cache(cache: list[dict], index: torch.Tensor) -> None:
    for layer in cache:
        self_cache = layer.get("self")
        if self_cache and "k" in self_cache:
            self_cache["k"] = self_cache["k"].index_select(0, index)
            self_cache["v"] = self_cache["v"].index_select(0, index)


class CachedSteps:
    """The AT's incremental decoder steps with the model's own key/value cache, which
    grows by one position per step (the reference path; decode/graphs.py has a
    fixed-size one for graphs)."""

    def __init__(self, model, enc: torch.Tensor, enc_mask: torch.Tensor):
        self.model, self.enc, self.enc_mask = model, enc, enc_mask
        self.cache: list[dict] = [dict() for _ in model.decoder.layers]

    def logits(self, last_tokens: torch.Tensor, step: int) -> torch.Tensor:
        """(N, 1) last tokens at position ``step`` -> (N, V) next-token logits."""
        return self.model.decoder_logits(last_tokens, self.enc, self.enc_mask, cache=self.cache, start=step)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """The beams continue from rows ``index`` of the previous step."""
        _reorder_cache(self.cache, index)


def decoder_steps(model, enc: torch.Tensor, enc_mask: torch.Tensor, max_len: int):
    """The incremental steps of ``model``: its own cache, unless the model brings its own
    steps (decode/graphs.py's GraphedDecoding: static shapes for torch.compile and CUDA
    graphs), so that one search serves both and they cannot drift apart."""
    own = getattr(model, "decoder_steps", None)
    return own(enc, enc_mask, max_len) if own is not None else CachedSteps(model, enc, enc_mask)


@torch.no_grad()
def beam_search(model, src, teacher=None, reference=None, beam: int = 4, lenpen: float = 1.0,
                max_len_a: float = 1.2, max_len_b: int = 10, return_scores: bool = False, **_):
    d = model.dictionary
    bsz, k = src.size(0), beam
    enc, enc_mask = model.encode(src)
    enc = enc.repeat_interleave(k, dim=0)
    enc_mask = enc_mask.repeat_interleave(k, dim=0)
    src_len = (~enc_mask).sum(1)
    # Never past the decoder's positions (step ``max_len - 1`` reads position ``max_len - 1``):
    # a long source would otherwise ask for more (1.2 x 1023 + 10), an IndexError mid-search.
    max_len = min(int(max_len_a * int(src_len.max()) + max_len_b), int(model.cfg.max_positions))
    steps = decoder_steps(model, enc, enc_mask, max_len)
    tokens = torch.full((bsz * k, 1), d.bos, dtype=torch.long, device=src.device)
    scores = torch.zeros(bsz, k, device=src.device)
    scores[:, 1:] = float("-inf")                      # all beams start identical: keep one
    finished = torch.zeros(bsz * k, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(bsz * k, dtype=torch.long, device=src.device)
    offsets = (torch.arange(bsz, device=src.device) * k)[:, None]
    for step in range(max_len):
        logp = torch.log_softmax(steps.logits(tokens[:, -1:], step).float(), dim=-1)
        logp[:, [d.pad, d.bos, d.mask, d.blank]] = float("-inf")
        if step == max_len - 1:                        # out of room: every live beam must end
            eos_col = logp[:, d.eos].clone()
            logp.fill_(float("-inf"))
            logp[:, d.eos] = eos_col
        logp[finished] = float("-inf")
        logp[finished, d.pad] = 0.0
        vocab = logp.size(1)
        cand = (scores.view(-1, 1) + logp).view(bsz, k * vocab)
        top_scores, top_idx = cand.topk(k, dim=1)
        base = (offsets + torch.div(top_idx, vocab, rounding_mode="floor")).view(-1)
        new_tok = (top_idx % vocab).view(-1, 1)
        was_finished = finished.index_select(0, base)
        tokens = torch.cat([tokens.index_select(0, base), new_tok], dim=1)
        lengths = lengths.index_select(0, base) + (~was_finished).long()
        finished = was_finished | new_tok.view(-1).eq(d.eos)
        scores = top_scores
        steps.reorder(base)
        if bool(finished.all()):
            break
    normalized = scores.view(-1) / lengths.clamp(min=1).float().pow(lenpen)
    normalized = normalized.masked_fill(~finished, float("-inf")).view(bsz, k)
    best = normalized.argmax(1) + offsets.view(-1)
    hyps = strip(tokens.index_select(0, best)[:, 1:], d.pad, d.eos)
    if return_scores:
        return hyps, scores.view(-1).index_select(0, best)
    return hyps


def greedy(model, src, **options):
    options["beam"] = 1
    return beam_search(model, src, **options)
