"""Paired bootstrap: same p-value as sacrebleu's own test, deterministic by seed; the
exact bootstrap by brute force (every resample of a small test set) as the reference."""
import itertools
import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from aeqa_model.metrics.bleu import bleu_from_stats, prepare_tokenized, sentence_stats, tokenized_bleu
from aeqa_model.metrics.significance import paired_bootstrap


def _corpus(noise_sys, noise_base, n=120, seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(25)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(3, 20))) for _ in range(n)]

    def noisy(line, p):
        return " ".join(w if rng.random() > p else rng.choice(vocab) for w in line.split())
    return [noisy(r, noise_sys) for r in refs], [noisy(r, noise_base) for r in refs], refs


@pytest.mark.parametrize("noise", [(0.30, 0.32), (0.2, 0.5)])
def test_matches_sacrebleu_paired_bs(noise, monkeypatch):
    sys_h, base_h, refs = _corpus(*noise)
    ours = paired_bootstrap(sys_h, base_h, refs, n_samples=200, seed=4321, progress=False)
    monkeypatch.setenv("SACREBLEU_SEED", "4321")
    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    test = PairedTest([("base", prepare_tokenized(base_h)), ("sys", prepare_tokenized(sys_h))],
                      {"BLEU": metric}, [prepare_tokenized(refs)], test_type="bs", n_samples=200)
    _, res = test()
    assert ours["p_value"] == pytest.approx(res["BLEU"][1].p_value, abs=1e-12)
    assert ours["system_bleu"] == pytest.approx(res["BLEU"][1].score)
    assert ours["baseline_bleu"] == pytest.approx(res["BLEU"][0].score)
    assert ours["system_ci95"] == pytest.approx(res["BLEU"][1].ci, abs=1e-4)
    assert ours["system_bleu"] == pytest.approx(tokenized_bleu(sys_h, refs)["score"])


def test_deterministic_and_bounded():
    sys_h, base_h, refs = _corpus(0.3, 0.33)
    a = paired_bootstrap(sys_h, base_h, refs, n_samples=100, seed=1, progress=False)
    b = paired_bootstrap(sys_h, base_h, refs, n_samples=100, seed=1, progress=False)
    assert a == b
    assert 1 / 101 <= a["p_value"] <= 1.0
    assert a["n_samples"] == 100 and a["seed"] == 1


def test_clear_difference_is_significant_and_self_is_not():
    sys_h, base_h, refs = _corpus(0.05, 0.6)
    assert paired_bootstrap(sys_h, base_h, refs, n_samples=200, progress=False)["p_value"] < 0.01
    same = paired_bootstrap(sys_h, sys_h, refs, n_samples=50, progress=False)
    assert same["p_value"] == pytest.approx(1.0)


def test_misaligned_inputs():
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(["a"], ["a", "b"], ["a"], n_samples=10, progress=False)
    with pytest.raises(ValueError):
        paired_bootstrap(["a"], ["a"], ["a"], n_samples=0, progress=False)


# ------------------------------------------------------- brute-force reference --
def exact_bootstrap_p(sys_h, base_h, refs) -> float:
    """sacrebleu's paired-bootstrap p-value over *every* one of the N^N resamples of N
    sentences (each equally likely), by brute force: the share of resamples whose
    centred difference |BLEU_sys - BLEU_base| - E|...| exceeds the observed |difference|.
    What paired_bootstrap estimates from n_samples random resamples (without the +1);
    for equal scores it is the formula's answer, not the p-value we report (1)."""
    n = len(refs)
    sys_stats = np.asarray(sentence_stats(sys_h, refs))
    base_stats = np.asarray(sentence_stats(base_h, refs))
    observed = abs(bleu_from_stats(sys_stats.sum(0).tolist()) - bleu_from_stats(base_stats.sum(0).tolist()))
    diffs = np.array([abs(bleu_from_stats(sys_stats[list(idx)].sum(0).tolist())
                          - bleu_from_stats(base_stats[list(idx)].sum(0).tolist()))
                      for idx in itertools.product(range(n), repeat=n)])
    return float(np.mean(diffs - diffs.mean() > observed))


# Five sentences whose exact p is 0.211: neither edge.
MODERATE = (["e g f a g d d", "a a e d g a d", "e d c a f a h", "h f b g h e c", "a h h d h h d"],
            ["e g a a f d d", "a a g d g a d", "d a f a g a h", "f f d g h b c", "g h b a h h e"],
            ["e g a a g d d", "a a g d g a d", "e a c a f a h", "h f e g h e c", "g h h d h h a"])


def test_estimate_matches_the_exact_bootstrap():
    sys_h, base_h, refs = MODERATE
    exact = exact_bootstrap_p(sys_h, base_h, refs)
    assert exact == pytest.approx(0.21088)
    ours = paired_bootstrap(sys_h, base_h, refs, n_samples=3000, progress=False)["p_value"]
    # 4 standard errors of a 3000-sample estimate of p ~ 0.2 (plus the sampled centring).
    assert ours == pytest.approx(exact, abs=0.03)
