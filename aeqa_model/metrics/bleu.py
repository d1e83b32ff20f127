"""Tokenized BLEU as the non-autoregressive MT literature reports it.

The NAT papers (Gu et al. 2018 onwards, and AEQA-NAT for WMT14/WMT16) score
*tokenized* output: Moses-tokenized (``-a``), BPE-removed hypothesis and
reference, with compound splitting applied to both, then case-sensitive
BLEU-4 with no smoothing and no further tokenization. This module computes
exactly that with sacrebleu's corpus BLEU (``tokenize='none'``,
``smooth_method='none'``, ``force=True``), plus the multi-reference variant
(Ott et al. 2018 references) and per-sentence sufficient statistics for the
paired bootstrap and the length buckets.
"""
from __future__ import annotations

import re
from typing import Sequence

from aeqa_model.data.moses import split_compounds
from sacrebleu.metrics import BLEU

TOKENIZED_BLEU_SIGNATURE = (
    "tokenized BLEU-4, Moses -a, compound split, sacrebleu tokenize=none"
)

# The marker the Stanford WMT14 references and fairseq's compound_split_bleu
# recipe use for a split compound hyphen.
# One implementation of compound splitting for the whole project: the literal
# fairseq compound_split_bleu.sh rule (see aeqa_model.data.moses.split_compounds).
_split_compounds = split_compounds


def prepare_tokenized(lines: Sequence[str]) -> list[str]:
    """Apply compound splitting to every line (hypothesis or reference)."""
    return [_split_compounds(line) for line in lines]


def _bleu_metric() -> BLEU:
    # force=True: the input is tokenized on purpose; sacrebleu would otherwise
    # warn that it looks tokenized.
    return BLEU(tokenize="none", smooth_method="none", force=True, lowercase=False)


def _check_streams(hyps: Sequence[str], ref_streams: Sequence[Sequence[str]]) -> None:
    if len(ref_streams) == 0:
        raise ValueError("at least one reference stream is needed")
    for k, refs in enumerate(ref_streams):
        if len(refs) != len(hyps):
            raise ValueError(
                f"reference stream {k} has {len(refs)} lines, hypotheses have {len(hyps)}"
            )


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]],
                   *, split_compounds: bool = True) -> dict:
    """Corpus tokenized BLEU-4 of ``hyps`` against ``refs``.

    ``refs`` is one reference stream (a list of strings, one per hypothesis)
    or a list of streams for several references per sentence.
    Returns ``{"score", "signature", "counts", "totals", "bp", "sys_len",
    "ref_len", "n_refs"}``; ``counts``/``totals`` are the matched and total
    1..4-gram counts of the whole corpus. An empty corpus scores 0.
    """
    if len(refs) == 0 or isinstance(refs[0], str):
        ref_streams = [list(refs)]  # one stream given as a flat list
    else:
        ref_streams = [list(r) for r in refs]
    _check_streams(hyps, ref_streams)
    if split_compounds:
        hyps = prepare_tokenized(hyps)
        ref_streams = [prepare_tokenized(r) for r in ref_streams]
    score = _bleu_metric().corpus_score(list(hyps), ref_streams)
    return {
        "score": float(score.score),
        "signature": TOKENIZED_BLEU_SIGNATURE + f", nrefs:{len(ref_streams)}",
        "counts": [int(c) for c in score.counts],
        "totals": [int(t) for t in score.totals],
        "bp": float(score.bp),
        "sys_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
        "n_refs": len(ref_streams),
    }


def multi_reference_bleu(hyps: Sequence[str], ref_streams: Sequence[Sequence[str]]) -> dict:
    """Tokenized BLEU against all references, with single-reference BLEU alongside.

    ``ref_streams[0]`` is the primary (original) reference; the single-reference
    score uses it alone, the multi-reference score uses every stream
    (clipped n-gram counts take the maximum over references, the reference
    length is the one closest to the hypothesis length, as in sacrebleu).
    """
    _check_streams(hyps, ref_streams)
    multi = tokenized_bleu(hyps, [list(r) for r in ref_streams])
    single = tokenized_bleu(hyps, [list(ref_streams[0])])
    return {
        "score": multi["score"],
        "single_ref_score": single["score"],
        "n_refs": len(ref_streams),
        "signature": multi["signature"],
        "counts": multi["counts"],
        "totals": multi["totals"],
        "bp": multi["bp"],
    }


def sentence_stats(hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]],
                   *, split_compounds: bool = True) -> list[list[int]]:
    """Per-sentence BLEU sufficient statistics.

    Row layout: ``[sys_len, ref_len, match_1..4, total_1..4]``; summing rows
    over any subset of sentences and passing the sums to
    :func:`bleu_from_stats` gives that subset's corpus BLEU.
    """
    if len(refs) == 0 or isinstance(refs[0], str):
        ref_streams = [list(refs)]
    else:
        ref_streams = [list(r) for r in refs]
    _check_streams(hyps, ref_streams)
    if split_compounds:
        hyps = prepare_tokenized(hyps)
        ref_streams = [prepare_tokenized(r) for r in ref_streams]
    metric = _bleu_metric()
    rows = []
    for i, hyp in enumerate(hyps):
        # corpus_score on one sentence: the public API that yields raw
        # counts without sentence_score's smoothing warning.
        s = metric.corpus_score([hyp], [[stream[i]] for stream in ref_streams])
        rows.append([int(s.sys_len), int(s.ref_len), *map(int, s.counts), *map(int, s.totals)])
    return rows


def bleu_from_stats(stats: Sequence[float]) -> float:
    """Corpus BLEU (no smoothing) from summed :func:`sentence_stats` rows."""
    sys_len, ref_len = stats[0], stats[1]
    correct, total = list(stats[2:6]), list(stats[6:10])
    return float(BLEU.compute_bleu(correct, total, sys_len, ref_len,
                                   smooth_method="none").score)
