"""N-gram repetition rate of hypotheses (Figure 6 of the paper).

Definition used throughout the project (also in docs/metrics.md):

For a hypothesis ``y = y_1 .. y_L`` (whitespace tokens of the tokenized,
BPE-removed output, before compound splitting) and an order ``n``, the
n-gram starting at position ``i`` is ``g_i = y_i .. y_{i+n-1}``
(``1 <= i <= L-n+1``). It is a *consecutive repetition* when it equals the
adjacent n-gram just before it, ``g_i == g_{i-n}`` (needs ``i > n``).
Over the corpus::

    rep_n = sum_sent #{i : i > n, g_i == g_{i-n}} / sum_sent max(0, L-n+1)

i.e. the share of all hypothesis n-grams that repeat the block immediately
preceding them. For ``n = 1`` this is the usual consecutive repeated-token
rate of NAT papers (tokens equal to the previous token / all tokens); for
``n = 2`` "the cat the cat" has one repeated bigram out of three. An empty
corpus (no n-grams) gives 0.0.
"""
from __future__ import annotations

from typing import Sequence

REPETITION_FORMULA = (
    "rep_n = sum_sent #{i > n : y[i:i+n] == y[i-n:i]} / sum_sent max(0, L-n+1) "
    "(share of hypothesis n-grams equal to the adjacent preceding n-gram; "
    "tokenized, BPE-removed hypothesis, whitespace tokens)"
)


def repeated_ngrams(tokens: Sequence[str], n: int) -> tuple[int, int]:
    """``(repeats, total)`` n-grams of one token sequence under the definition above."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    total = max(0, len(tokens) - n + 1)
    # 0-based: g_i = tokens[i:i+n] repeats tokens[i-n:i] for n <= i <= L-n.
    repeats = sum(
        1 for i in range(n, len(tokens) - n + 1)
        if tuple(tokens[i:i + n]) == tuple(tokens[i - n:i])
    )
    return repeats, total


def ngram_repetition(hyps: Sequence[str], max_n: int = 4) -> dict:
    """Corpus n-gram repetition rates for ``n = 1..max_n``.

    Returns ``{"1": rate, ..., str(max_n): rate, "counts": {...},
    "totals": {...}, "formula": REPETITION_FORMULA}``; rates are fractions
    in [0, 1].
    """
    if max_n < 1:
        raise ValueError(f"repetition_max_n must be >= 1, got {max_n}")
    result: dict = {}
    counts, totals = {}, {}
    tokenized = [h.split() for h in hyps]
    for n in range(1, max_n + 1):
        rep = tot = 0
        for tokens in tokenized:
            r, t = repeated_ngrams(tokens, n)
            rep += r
            tot += t
        result[str(n)] = rep / tot if tot else 0.0
        counts[str(n)] = rep
        totals[str(n)] = tot
    result["counts"] = counts
    result["totals"] = totals
    result["formula"] = REPETITION_FORMULA
    return result
