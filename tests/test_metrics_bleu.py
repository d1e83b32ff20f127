"""Tokenized BLEU, compound splitting, multi-reference BLEU, detokenized metrics."""
import math

import pytest
from sacrebleu.metrics import BLEU

from aeqa_model.metrics.bleu import (TOKENIZED_BLEU_SIGNATURE, _split_compounds, bleu_from_stats,
                                     multi_reference_bleu, sentence_stats, tokenized_bleu)
from aeqa_model.metrics.detok import detok_metrics, sacrebleu_tokenizer


@pytest.mark.parametrize("line, expected", [
    ("ein Haus @-@ Boot", "ein Haus @ ##AT##-##AT## @ Boot"),  # literal Perl rule on -a output
    ("ein Haus-Boot", "ein Haus ##AT##-##AT## Boot"),
    ("a - b", "a - b"),                       # a free-standing dash is no compound
    ("-x x-", "-x x-"),                       # hyphen needs a character on both sides
    ("a-b-c", "a ##AT##-##AT## b-c"),         # non-overlapping, like the Perl recipe
    ("a - b", "a - b"),
    ("", ""),
])
def test_split_compounds(line, expected):
    assert _split_compounds(line) == expected


def test_tokenized_bleu_hand_counts():
    hyps = ["das ist ein Haus @-@ Boot .", "ich bin hier"]
    refs = ["das ist ein Haus @-@ Boot .", "ich bin nicht hier"]
    out = tokenized_bleu(hyps, refs)
    # Sentence 1 becomes "das ist ein Haus @ ##AT##-##AT## @ Boot ." (9 tokens,
    # the literal fairseq rule) and matches fully: 9/8/7/6 n-grams.
    # Sentence 2: hyp "ich bin hier" vs ref "ich bin nicht hier":
    # unigrams 3/3, bigrams 1/2 ("ich bin"), trigrams 0/1, 4-grams 0/0.
    assert out["counts"] == [12, 9, 7, 6]
    assert out["totals"] == [12, 10, 8, 6]
    assert out["sys_len"] == 12 and out["ref_len"] == 13
    bp = math.exp(1 - 13 / 12)
    expected = 100 * bp * math.exp((math.log(12 / 12) + math.log(9 / 10) + math.log(7 / 8)
                                    + math.log(6 / 6)) / 4)
    assert out["score"] == pytest.approx(expected, abs=1e-9)
    assert out["bp"] == pytest.approx(bp)
    assert out["signature"].startswith(TOKENIZED_BLEU_SIGNATURE)


def test_tokenized_bleu_is_case_sensitive_and_unsmoothed():
    # Lower-cased hypothesis: no 4-gram matches, so unsmoothed BLEU is exactly 0.
    assert tokenized_bleu(["A B C D"], ["a b c d"])["score"] == 0.0
    assert tokenized_bleu(["a b c d"], ["a b c d"])["score"] == pytest.approx(100.0)


def test_compound_split_adds_the_hyphen_as_its_own_match():
    # Splitting turns a wrong compound into a partial match on its parts.
    hyp, ref = ["das ein Haus-Boot ist hier jetzt"], ["das ein Haus-Auto ist hier jetzt"]
    split = tokenized_bleu(hyp, ref)
    unsplit = tokenized_bleu(hyp, ref, split_compounds=False)
    assert split["counts"] == [7, 5, 3, 1] and unsplit["counts"] == [5, 3, 1, 0]
    assert split["score"] > unsplit["score"]


def test_agrees_with_sacrebleu_on_detokenized_text():
    # Text whose 13a tokenization equals the Moses tokenization (no hyphens,
    # punctuation separated the same way): both BLEUs must be identical.
    detok_h = ["Hallo, Welt.", "Das ist gut.", "Er kommt morgen nicht"]
    detok_r = ["Hallo, Welt!", "Das ist sehr gut.", "Er kommt heute nicht"]
    tok_h = ["Hallo , Welt .", "Das ist gut .", "Er kommt morgen nicht"]
    tok_r = ["Hallo , Welt !", "Das ist sehr gut .", "Er kommt heute nicht"]
    ours = tokenized_bleu(tok_h, tok_r)
    theirs = BLEU(tokenize="13a", smooth_method="none").corpus_score(detok_h, [detok_r])
    assert ours["score"] == pytest.approx(theirs.score, abs=1e-9)
    assert ours["counts"] == list(theirs.counts)


def test_sentence_stats_sum_to_corpus():
    hyps = ["a b c d e", "a b x", "q r s t u v"]
    refs = ["a b c d e f", "a b c", "q r s t"]
    rows = sentence_stats(hyps, refs)
    summed = [sum(col) for col in zip(*rows)]
    assert bleu_from_stats(summed) == pytest.approx(tokenized_bleu(hyps, refs)["score"])


def test_multi_reference_bleu():
    hyps = ["the cat sat on the mat", "a dog barks loudly here"]
    ref1 = ["the cat is on the mat", "a dog barks here"]
    ref2 = ["the cat sat on the mat", "one dog barks loudly here"]
    out = multi_reference_bleu(hyps, [ref1, ref2])
    assert out["n_refs"] == 2
    assert out["single_ref_score"] == pytest.approx(tokenized_bleu(hyps, ref1)["score"])
    # Clipped counts take the max over references: more references never hurt here.
    assert out["score"] > out["single_ref_score"]
    assert out["score"] == pytest.approx(
        BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(hyps, [ref1, ref2]).score)
    with pytest.raises(ValueError, match="reference stream 1"):
        multi_reference_bleu(hyps, [ref1, ref2[:1]])


def test_detok_metrics_signatures():
    hyps = ["The cat sat on the mat.", "It rains."]
    refs = ["The cat sat on a mat.", "It is raining."]
    out = detok_metrics(hyps, refs, "de")
    assert set(out) == {"sacrebleu", "chrf", "chrf_pp", "ter"}
    assert "tok:13a" in out["sacrebleu"]["signature"] and "nrefs:1" in out["sacrebleu"]["signature"]
    assert "nw:0" in out["chrf"]["signature"] and "nw:2" in out["chrf_pp"]["signature"]
    assert "tok:tercom" in out["ter"]["signature"] and "asian:no" in out["ter"]["signature"]
    for v in out.values():
        assert isinstance(v["score"], float)
    expected = BLEU(tokenize="13a").corpus_score(hyps, [refs]).score
    assert out["sacrebleu"]["score"] == pytest.approx(expected)


def test_detok_metrics_chinese_target():
    out = detok_metrics(["我们今天去学校。"], ["我们明天去学校。"], "zh")
    assert "tok:zh" in out["sacrebleu"]["signature"]
    assert "asian:yes" in out["ter"]["signature"]
    assert out["sacrebleu"]["score"] > 0
    assert sacrebleu_tokenizer("zh") == "zh" and sacrebleu_tokenizer("en") == "13a"
