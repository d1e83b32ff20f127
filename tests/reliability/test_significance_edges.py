"""The paired bootstrap at its edges (issue 24, item 4).

Two systems with equal corpus scores (both at 0 BLEU, as two diverged or weak demo
cells are; the same score from different outputs; identical outputs) must not get a
"significant" p-value: the statistic |BLEU_sys - BLEU_base| is never below the
observed 0. sacrebleu's formula (centred resamples, strict ``>``) gives its minimum
1/(n+1) there, 0.0476 with the smoke config's 20 samples; the brute-force reference
(every resample of a five-sentence test set) shows that this is the formula's answer
and not a sampling accident. A clear difference keeps its minimum p.
"""
from __future__ import annotations

import pytest

from aeqa_model.metrics.significance import paired_bootstrap
from tests.test_metrics_significance import exact_bootstrap_p

pytestmark = pytest.mark.fault

# Seven words each, so that any two outputs with the same matches have the same BLEU.
REFS = ["the cat sat on the mat today", "a dog ran in the park again", "we like green tea with much milk",
        "it rains a lot in the north", "she reads the paper every single day"]
NOISE = ["x y z w v u t", "q r s p o n m", "k j i h g f e", "d c b l x y z", "w v u t s r q"]
# One perfect sentence each, the others wrong, on different lines: the same corpus
# statistics, so the same (non-zero) BLEU, from different outputs.
HALF_A = [REFS[0], REFS[1], NOISE[2], NOISE[3], NOISE[4]]
HALF_B = [NOISE[0], NOISE[1], REFS[2], REFS[3], NOISE[4]]

EQUAL = {
    "both-0-bleu": (NOISE, list(reversed(NOISE))),
    "same-bleu-other-outputs": (HALF_A, HALF_B),
    "identical-outputs": (HALF_A, HALF_A),
}


@pytest.mark.parametrize("case", list(EQUAL))
@pytest.mark.parametrize("samples", [20, 1000])
def test_equal_scores_are_never_significant(case, samples):
    sys_h, base_h = EQUAL[case]
    result = paired_bootstrap(sys_h, base_h, REFS, n_samples=samples, progress=False)
    assert result["system_bleu"] == result["baseline_bleu"]
    assert result["p_value"] == 1.0, f"{case}: p = {result['p_value']} for two systems with equal scores"


def test_the_formula_alone_calls_two_zero_bleu_systems_significant():
    """Why the rule is needed: over every resample, no centred difference exceeds 0."""
    assert exact_bootstrap_p(NOISE, list(reversed(NOISE)), REFS) == 0.0


def test_a_clear_difference_keeps_its_minimum_p():
    """REFS against NOISE: 100 vs 0 BLEU on every resample; the exact p is 0 and the
    estimate is the smallest it can be, 1/(n+1)."""
    assert exact_bootstrap_p(REFS, NOISE, REFS) == 0.0
    result = paired_bootstrap(REFS, NOISE, REFS, n_samples=200, progress=False)
    assert result["p_value"] == pytest.approx(1 / 201)
