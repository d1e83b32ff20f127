"""N-gram repetition rate and length buckets, checked by hand."""
import pytest

from aeqa_model.metrics.buckets import length_bucket_bleu, validate_edges
from aeqa_model.metrics.bleu import tokenized_bleu
from aeqa_model.metrics.repetition import REPETITION_FORMULA, ngram_repetition, repeated_ngrams


def test_repeated_ngrams_by_hand():
    # "the the cat": unigram 2 ("the" after "the") of 3 tokens.
    assert repeated_ngrams("the the cat".split(), 1) == (1, 3)
    # "the cat the cat": bigrams (the cat)(cat the)(the cat); the third equals
    # the adjacent preceding bigram (tokens 0-1) -> 1 of 3.
    assert repeated_ngrams("the cat the cat".split(), 2) == (1, 3)
    # "a a a": bigram "a a" at 2 would need tokens[0:2] and tokens[2:4]; only 2
    # bigrams exist and none has a full preceding block -> 0 of 2.
    assert repeated_ngrams("a a a".split(), 2) == (0, 2)
    assert repeated_ngrams("a a a a".split(), 2) == (1, 3)
    assert repeated_ngrams([], 1) == (0, 0)
    assert repeated_ngrams(["x"], 3) == (0, 0)
    with pytest.raises(ValueError):
        repeated_ngrams(["x"], 0)


def test_ngram_repetition_corpus():
    hyps = ["the the cat sat sat sat", "a b a b a b", "", "x"]
    out = ngram_repetition(hyps, max_n=3)
    # n=1: sent1 "the the", "sat sat", "sat sat" -> 3 of 6; sent2 0 of 6; "x" 0 of 1.
    assert out["counts"]["1"] == 3 and out["totals"]["1"] == 13
    assert out["1"] == pytest.approx(3 / 13)
    # n=2: sent1 bigrams 5, repeats: i=2 (cat sat vs the the) no, i=3 (sat sat vs the cat) no,
    # i=4 (sat sat vs cat sat) no -> 0; sent2 bigrams 5 (ab ba ab ba ab), i=2,3,4 repeat -> 3.
    assert out["counts"]["2"] == 3 and out["totals"]["2"] == 10
    assert out["2"] == pytest.approx(0.3)
    # n=3: sent1 4 trigrams, sent2 4 trigrams; sent2 i=3 "b a b" vs "a b a" no -> 0.
    assert out["counts"]["3"] == 0 and out["totals"]["3"] == 8
    assert out["3"] == 0.0
    assert out["formula"] == REPETITION_FORMULA
    assert set(k for k in out if k.isdigit()) == {"1", "2", "3"}


def test_ngram_repetition_empty_corpus():
    out = ngram_repetition([], max_n=2)
    assert out["1"] == 0.0 and out["2"] == 0.0


def test_length_buckets():
    refs = ["a b", "a b c d e f", "a b c d e f g h i j k l", "one two three four"]
    hyps = ["a b", "a b c d e f", "a b c d e f g h i j k x", "one two five four"]
    out = length_bucket_bleu(hyps, refs, [0, 5, 10, 20, 40])
    buckets = out["buckets"]
    assert [(b["lo"], b["hi"], b["n"]) for b in buckets] == [(0, 5, 2), (5, 10, 1), (10, 20, 1), (20, 40, 0)]
    assert buckets[0]["bleu_tok"] == pytest.approx(tokenized_bleu([hyps[0], hyps[3]], [refs[0], refs[3]])["score"])
    assert buckets[1]["bleu_tok"] == pytest.approx(100.0)
    assert buckets[3]["bleu_tok"] is None          # empty bucket
    assert out["outside"] == 0


def test_length_buckets_edges_inclusive_exclusive():
    refs = ["w " * 5, "w " * 4, "w " * 50]
    out = length_bucket_bleu(["w"] * 3, refs, [0, 5, 10])
    assert [b["n"] for b in out["buckets"]] == [1, 1]   # len 4 -> [0,5), len 5 -> [5,10)
    assert out["outside"] == 1                          # len 50 beyond the last edge


@pytest.mark.parametrize("edges", [[5], [0, 5, 5], [0, 10, 5], [-1, 5], [0, 2.5]])
def test_bad_edges(edges):
    with pytest.raises(ValueError):
        validate_edges(edges)
