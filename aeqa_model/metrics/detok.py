"""SacreBLEU, chrF, chrF++ and TER on detokenized text, each with its signature.

These follow sacrebleu's defaults so the numbers are comparable with any
other paper that prints the same signature; only the tokenizer of BLEU (and
TER's Asian-script handling) depends on the target language.
"""
from __future__ import annotations

from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF, TER

# Target languages written without spaces between words: TER needs its
# Asian-script support there, otherwise a whole sentence counts as one word.
_ASIAN = {"zh", "ja", "ko"}


def sacrebleu_tokenizer(tgt_lang: str) -> str:
    """The sacrebleu BLEU tokenizer for a target language: ``zh`` for Chinese, ``13a`` otherwise."""
    lang = tgt_lang.lower().split("_")[0].split("-")[0]
    # Only zh is part of this project's protocol; sacrebleu's ja/ko
    # tokenizers need optional packages (mecab), so they are not used.
    return "zh" if lang == "zh" else "13a"


def _result(metric, hyps: Sequence[str], refs: Sequence[str]) -> dict:
    score = metric.corpus_score(list(hyps), [list(refs)])
    # The signature is only complete after scoring (it records nrefs).
    return {"score": float(score.score), "signature": str(metric.get_signature())}


def detok_metrics(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> dict:
    """Score detokenized hypotheses against one detokenized reference stream.

    Returns ``{"sacrebleu", "chrf", "chrf_pp", "ter"}``, each
    ``{"score": float, "signature": str}``:

    * ``sacrebleu`` — BLEU-4, exponential smoothing, tokenizer ``zh`` for a
      Chinese target, ``13a`` otherwise;
    * ``chrf`` — chrF2 (character 6-grams, beta 2);
    * ``chrf_pp`` — chrF++ (``word_order=2``: plus word 1- and 2-grams);
    * ``ter`` — translation edit rate (lower is better), ``asian_support``
      for a Chinese target.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    lang = tgt_lang.lower().split("_")[0].split("-")[0]
    return {
        "sacrebleu": _result(BLEU(tokenize=sacrebleu_tokenizer(tgt_lang)), hyps, refs),
        "chrf": _result(CHRF(), hyps, refs),
        "chrf_pp": _result(CHRF(word_order=2), hyps, refs),
        "ter": _result(TER(asian_support=lang in _ASIAN), hyps, refs),
    }
