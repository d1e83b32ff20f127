"""Tokenized BLEU by reference-length bucket (Figure 5 of the paper)."""
from __future__ import annotations

from typing import Sequence

from .bleu import tokenized_bleu


def validate_edges(edges: Sequence[int]) -> list[int]:
    """Check bucket edges: at least two, non-negative integers, strictly increasing."""
    edges = list(edges)
    if len(edges) < 2:
        raise ValueError(f"length_buckets needs at least two edges, got {edges}")
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, int) or e < 0:
            raise ValueError(f"length_buckets edges must be non-negative integers, got {edges}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"length_buckets edges must be strictly increasing, got {edges}")
    return edges


def length_bucket_bleu(hyps: Sequence[str], refs: Sequence[str], edges: Sequence[int]) -> dict:
    """Tokenized BLEU per reference-length bucket.

    A sentence falls in bucket ``[lo, hi)`` when its reference has
    ``lo <= len <= hi - 1`` whitespace tokens (the Moses-tokenized reference
    as given, before compound splitting; with ``-a`` tokenization splitting
    does not change the count). Each bucket's BLEU is the corpus tokenized
    BLEU of its sentences only.

    Returns ``{"buckets": [{"lo", "hi", "n", "bleu_tok"}, ...], "outside": k}``
    where an empty bucket has ``bleu_tok: None`` and ``outside`` counts the
    sentences whose reference length lies outside ``[edges[0], edges[-1])``.
    """
    edges = validate_edges(edges)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    lengths = [len(r.split()) for r in refs]
    buckets = []
    placed = 0
    for lo, hi in zip(edges, edges[1:]):
        idx = [i for i, n in enumerate(lengths) if lo <= n < hi]
        placed += len(idx)
        bleu = tokenized_bleu([hyps[i] for i in idx], [refs[i] for i in idx])["score"] if idx else None
        buckets.append({"lo": lo, "hi": hi, "n": len(idx), "bleu_tok": bleu})
    return {"buckets": buckets, "outside": len(refs) - placed}
