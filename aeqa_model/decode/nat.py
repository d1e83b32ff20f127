"""Fully non-autoregressive decoding: argmax at the predicted length, NPD, and oracle."""
from __future__ import annotations

import torch

from aeqa_model.decode import clamp_lengths, fit_source, strip
from aeqa_model.models.glancing import choose_glance_positions


@torch.no_grad()
def argmax_decode(model, src, teacher=None, reference=None, length_beam: int = 1, **options):
    """One pass at the predicted length (best of ``length_beam`` lengths by the model's own score)."""
    return noisy_parallel_decode(model, src, teacher=None, candidates=length_beam, rerank="self", **options)


@torch.no_grad()
def noisy_parallel_decode(model, src, teacher=None, reference=None, candidates: int = 5,
                          rerank: str = "teacher", **options):
    """NPD (Gu et al. 2018): the ``candidates`` most likely lengths are decoded in one
    batch and the best hypothesis is chosen by the AT teacher's teacher-forced score
    (``rerank: teacher``) or by the model's own mean log-probability (``rerank: self``)."""
    enc, enc_mask = model.encode(src)
    bsz = src.size(0)
    lengths = clamp_lengths(model, model.predict_lengths(enc, enc_mask, beam=candidates))  # (B, m)
    m = lengths.size(1)
    enc_rep = enc.repeat_interleave(m, dim=0)
    mask_rep = enc_mask.repeat_interleave(m, dim=0)
    tokens, score = model.forward_inference(enc_rep, mask_rep, lengths.reshape(-1), **options)
    if m > 1 and rerank == "teacher":
        if teacher is None:
            raise ValueError("NPD with rerank=teacher needs the AT teacher checkpoint")
        # The teacher reads the source and BOS + hypothesis, each within its own positions.
        if hasattr(teacher, "cfg"):
            src, tokens_for_teacher = fit_source(teacher, src), tokens[:, :teacher.cfg.max_positions - 1]
        else:  # a stand-in scorer (tests)
            tokens_for_teacher = tokens
        score = teacher.score(src.repeat_interleave(m, dim=0), tokens_for_teacher)
    best = score.view(bsz, m).argmax(1)
    chosen = tokens.view(bsz, m, -1)[torch.arange(bsz, device=src.device), best]
    return strip(chosen, model.pad, model.dictionary.eos)


@torch.no_grad()
def oracle_decode(model, src, teacher=None, reference=None, ratio: float = 0.0, seed: int = 1, **_):
    """Fig. 1: decode at the reference length while round(ratio * |Y|) randomly chosen
    reference tokens are observed (given as decoder input and kept in the output).

    The positions are drawn from a generator seeded per call, so the same batch
    always observes the same tokens. Only models with ``forward_observed``
    (GLAT, CMLM) support it.
    """
    if reference is None:
        raise ValueError("oracle decoding needs the reference (decode --tgt-prefix)")
    if not hasattr(model, "forward_observed"):
        raise ValueError(f"oracle decoding is defined for GLAT and CMLM, not for arch {model.arch!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"oracle ratio must lie in [0, 1], got {ratio}")
    enc, enc_mask = model.encode(src)
    pad_mask = reference.eq(model.pad)
    counts = torch.round(ratio * (~pad_mask).sum(1).float()).long()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand(reference.shape, generator=generator).to(reference.device)
    observed = choose_glance_positions(noise, counts, pad_mask)
    tokens, _ = model.forward_observed(enc, enc_mask, reference, observed)
    return strip(tokens, model.pad, model.dictionary.eos)
