"""Moses-style tokenization (sacremoses), Chinese segmentation (jieba), compound splitting.

This module holds the pipeline's single implementation of the tokenization
used for training data and for tokenized BLEU, including
:func:`split_compounds` (the NAT literature's ``##AT##-##AT##`` compound
splitting); the metrics code imports it from here.

The steps follow the fairseq WMT/IWSLT recipes: ``normalize-punctuation.perl
-l L | remove-non-printing-char.perl | tokenizer.perl [-a] -l L`` with
escaping disabled (so ``&``, ``<``, quotes stay as they are, like fairseq's
later recipes and sacrebleu's reference handling).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache
from typing import Iterable

from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

#: Languages segmented with jieba unless ``segmenter`` says otherwise.
JIEBA_LANGS = {"zh"}

_WS = re.compile(r"\s+")
#: CJK ideographs, CJK punctuation and full-width forms: no spaces between them in detokenized zh.
_CJK = (r"\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3200-\u32ff\u3400-\u4dbf"
        r"\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef")
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_COMPOUND = re.compile(r"(\S)-(\S)")
#: The token a split compound hyphen becomes in tokenized BLEU.
AT_MARK = "##AT##-##AT##"


@lru_cache(maxsize=None)
def _normalizer(lang: str) -> MosesPunctNormalizer:
    return MosesPunctNormalizer(lang=lang)


@lru_cache(maxsize=None)
def _tokenizer(lang: str) -> MosesTokenizer:
    return MosesTokenizer(lang=lang)


@lru_cache(maxsize=None)
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    # jieba logs its dictionary loading at DEBUG/INFO on every process start.
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def remove_non_printing(line: str) -> str:
    """Replace control/format/unassigned characters (Unicode category C*) by a space.

    Same rule as Moses' ``remove-non-printing-char.perl`` (``s/\\p{C}/ /g``),
    extended to line/paragraph separators (Zl, Zp), which would otherwise
    split a line in tools that use ``str.splitlines``.
    """
    return "".join(" " if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
                   else ch for ch in line)


def _segmenter_for(lang: str, segmenter: str | None) -> str:
    if segmenter is None:
        return "jieba" if lang in JIEBA_LANGS else "moses"
    if segmenter not in ("jieba", "moses"):
        raise ValueError(f"unknown segmenter {segmenter!r} for {lang} (expected jieba or moses)")
    return segmenter


def tokenize_line(line: str, lang: str, aggressive_dash_splits: bool = True, lowercase: bool = False,
                  segmenter: str | None = None) -> str:
    """Tokenize one line; see :func:`tokenize`."""
    text = remove_non_printing(_normalizer(lang).normalize(line))
    text = _WS.sub(" ", text).strip()
    if not text:
        return ""
    if _segmenter_for(lang, segmenter) == "jieba":
        # Words from jieba; runs of spaces it returns for spaces in the input are dropped.
        text = " ".join(tok for tok in _jieba().cut(text, HMM=True) if tok.strip())
    else:
        text = _tokenizer(lang).tokenize(text, aggressive_dash_splits=aggressive_dash_splits,
                                         escape=False, return_str=True)
    text = _WS.sub(" ", text).strip()
    return text.lower() if lowercase else text


def tokenize(lines: Iterable[str], lang: str, aggressive_dash_splits: bool = True, lowercase: bool = False,
             segmenter: str | None = None) -> list[str]:
    """Moses-tokenize ``lines`` of language ``lang``.

    Steps: sacremoses punctuation normalization, removal of non-printing
    characters, then either the Moses tokenizer (``-a`` when
    ``aggressive_dash_splits``, no XML escaping) or, for Chinese, jieba word
    segmentation (deterministic: the default dictionary with its HMM for
    unknown words). ``segmenter`` is ``"jieba"``, ``"moses"`` or None (jieba
    for ``zh``, Moses otherwise). Optional lower-casing last (IWSLT14).
    Each output line is single-spaced and stripped; an all-whitespace input
    gives ``""``.
    """
    return [tokenize_line(line, lang, aggressive_dash_splits, lowercase, segmenter) for line in lines]


def detokenize(lines: Iterable[str], lang: str) -> list[str]:
    """Undo Moses tokenization (sacremoses); for Chinese also remove the spaces between CJK characters."""
    detok = _detokenizer(lang)
    out = []
    for line in lines:
        text = detok.detokenize(line.split(), unescape=True) if line.strip() else ""
        if lang in JIEBA_LANGS:
            text = _CJK_GAP.sub("", text)
        out.append(text)
    return out


def split_compounds(line: str, join_moses_hyphen: bool = False) -> str:
    r"""The NAT literature's compound splitting for tokenized BLEU.

    Default: exactly fairseq's ``compound_split_bleu.sh`` rule
    ``perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'``: every hyphen with a
    non-space on both sides becomes the separate token ``##AT##-##AT##``, so
    ``a-b`` becomes ``a ##AT##-##AT## b``. Matches do not overlap
    (``a-b-c`` gives ``a ##AT##-##AT## b-c``), as in Perl. Applied to text
    tokenized with ``-a`` (where ``a-b`` is ``a @-@ b``) the same rule turns
    ``@-@`` into ``@ ##AT##-##AT## @``, which is what fairseq's script
    computes on its ``-a``-tokenized WMT data.

    ``join_moses_hyphen=True`` instead maps a whole ``@-@`` token to the one
    token ``##AT##-##AT##`` (``a @-@ b`` -> ``a ##AT##-##AT## b``, the form the
    Stanford/tensor2tensor references use) and leaves existing
    ``##AT##-##AT##`` tokens alone (so a second application changes nothing
    unless a token had chained hyphens); other tokens get the Perl rule.
    Whitespace is normalized to single spaces then.
    """
    if not join_moses_hyphen:
        return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)
    out = []
    for token in line.split():
        if token in ("@-@", AT_MARK):
            out.append(AT_MARK)
        else:
            out.append(_COMPOUND.sub(r"\1 ##AT##-##AT## \2", token))
    return " ".join(out)
