"""Paired bootstrap: same p-value as sacrebleu's own test, deterministic by seed."""
import random

import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from aeqa_model.metrics.bleu import prepare_tokenized, tokenized_bleu
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
