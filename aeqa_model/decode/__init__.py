"""Decoding strategies, kept apart from the models.

``generate(model, src, decoding, teacher=None, reference=None)`` dispatches on
``decoding['strategy']`` and returns one list of token ids per source row (no
specials). Strategies register themselves in STRATEGIES.
"""
from __future__ import annotations

import importlib

import torch

STRATEGIES = {
    "beam": "aeqa_model.decode.beam:beam_search",
    "greedy": "aeqa_model.decode.beam:greedy",
    "argmax": "aeqa_model.decode.nat:argmax_decode",
    "npd": "aeqa_model.decode.nat:noisy_parallel_decode",
    "aeqa_two_pass": "aeqa_model.decode.nat:argmax_decode",
    "oracle": "aeqa_model.decode.nat:oracle_decode",
    "mask_predict": "aeqa_model.decode.mask_predict:mask_predict",
    "lookahead": "aeqa_model.decode.dag:lookahead_decode",
    "viterbi": "aeqa_model.decode.dag:viterbi_decode",
}


def strategy_fn(name: str):
    if name not in STRATEGIES:
        raise KeyError(f"unknown decoding strategy {name!r}; known: {sorted(STRATEGIES)}")
    module, fn = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), fn)


@torch.no_grad()
def generate(model, src: torch.Tensor, decoding: dict, teacher=None, reference: torch.Tensor | None = None):
    options = {k: v for k, v in decoding.items() if k != "strategy"}
    fn = strategy_fn(decoding["strategy"])
    return fn(model, src, teacher=teacher, reference=reference, **options)


def pack_left(tokens: torch.Tensor, keep: torch.Tensor, pad: int) -> torch.Tensor:
    """Move the kept entries of every row to the front (in order), pad the rest (vectorized)."""
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)
    return tokens.gather(1, order).masked_fill(~keep.gather(1, order), pad)


def strip(tokens: torch.Tensor, pad: int, eos: int) -> list[list[int]]:
    """Rows of ids -> lists without padding, cut at the first EOS."""
    out = []
    for row in tokens.tolist():
        seq = []
        for t in row:
            if t == eos:
                break
            if t != pad:
                seq.append(t)
        out.append(seq)
    return out
