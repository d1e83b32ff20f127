"""NAT baselines (CTC, GLAT, CMLM, DA-Transformer, AEQA-DAT) and their decoders."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from aeqa_model.data.batching import collate
from aeqa_model.decode import generate
from aeqa_model.decode.mask_predict import mask_predict
from aeqa_model.models import model_class
from aeqa_model.models.base import total_loss
from aeqa_model.models.ctc import ctc_collapse
from aeqa_model.models.glancing import GlanceSchedule, glance_counts, same_dropout
from tests.conftest import make_pairs


def _batch(dictionary, n=6, seed=0):
    pairs = make_pairs(n, seed)
    return collate(list(range(n)), [p[0] for p in pairs], [p[1] for p in pairs], dictionary)


# ------------------------------------------------------------- glancing --
def test_glancing_schedule_strings():
    s = GlanceSchedule.parse("0.5:0.3@300k")
    assert (s.start, s.end, s.updates) == (0.5, 0.3, 300_000)
    assert s(0) == 0.5 and s(150_000) == pytest.approx(0.4) and s(10**7) == pytest.approx(0.3)
    assert GlanceSchedule.parse("0.3")(12345) == 0.3
    assert GlanceSchedule.parse("0.5:0.1@200").updates == 200
    for bad in ("0.5-0.3", "1.5:0.3@10", "abc"):
        with pytest.raises(ValueError, match="glancing schedule"):
            GlanceSchedule.parse(bad)


def test_same_dropout_repeats_the_masks():
    drop = torch.nn.Dropout(0.5).train()
    x = torch.ones(4, 50)
    with same_dropout(x.device):
        first = drop(x)
    assert torch.equal(first, drop(x))
    assert not torch.equal(drop(x), drop(x))


def test_glat_glances_floor_lambda_hamming_gold_positions(dictionary, tiny_cfg):
    model = model_class("glat")(dictionary, tiny_cfg, {"glancing_schedule": "0.5:0.5@1"}).eval()
    batch = _batch(dictionary)
    enc, enc_mask = model.encode(batch.src)
    inputs, tgt_mask = model.decoder_inputs(enc, enc_mask, batch.target_lengths)
    glanced_inputs, glanced = model.glance(inputs, tgt_mask, enc, enc_mask, batch.target, update=0)
    first, _ = model.run_decoder(inputs, tgt_mask, enc, enc_mask)
    expected = glance_counts(0.5, first[-1].argmax(-1), batch.target, tgt_mask)
    assert glanced.sum(1).tolist() == expected.tolist()
    assert not (glanced & tgt_mask).any()
    gold = model.embed.lookup(batch.target)
    assert torch.equal(glanced_inputs[glanced], gold[glanced])
    assert torch.equal(glanced_inputs[~glanced], inputs[~glanced])


# ------------------------------------------------------------------ CTC --
def test_ctc_collapse_hand_case():
    blank, pad = 5, 0
    tokens = torch.tensor([[7, 7, 5, 7, 8, 8, 5, 9], [5, 5, 6, 6, 6, 5, 9, 9]])
    valid = torch.tensor([[True] * 8, [True] * 6 + [False] * 2])
    assert ctc_collapse(tokens, valid, blank, pad).tolist() == [[7, 7, 8, 9, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0, 0, 0]]


def test_ctc_loss_equals_enumeration_of_alignments(dictionary, tiny_cfg):
    model = model_class("ctc")(dictionary, tiny_cfg, {"upsample": 2})
    blank, steps = dictionary.blank, 4
    symbols = [blank, 6, 7]
    g = torch.Generator().manual_seed(0)
    logits = torch.full((1, steps, len(dictionary)), -1e4)
    logits[0, :, symbols] = torch.randn(steps, 3, generator=g)
    target = torch.tensor([[6, 7]])
    logp = torch.log_softmax(logits, -1)[0]
    total = []
    for seq in itertools.product(symbols, repeat=steps):
        collapsed = [s for i, s in enumerate(seq) if s != blank and (i == 0 or s != seq[i - 1])]
        if collapsed == [6, 7]:
            total.append(sum(float(logp[t, s]) for t, s in enumerate(seq)))
    reference = -torch.logsumexp(torch.tensor(total), 0).item() / 2       # per target token
    got = model.ctc_loss(logits, torch.tensor([steps]), target, torch.tensor([2]))
    assert got.item() == pytest.approx(reference, rel=1e-5)


# --------------------------------------------------- length candidates --
# Offset scores, best first: four offsets that clamp to length 1 for a 2-token
# source, then +4, +2, 0, +1. The old top-k-then-clamp gave [1, 1, 1, 1, 6].
FORCED_OFFSETS = {-1: 10.0, -2: 9.0, -3: 8.0, -4: 7.0, 4: 6.0, 2: 5.0, 0: 4.0, 1: 3.0}


def _force_length_head(model, scores=FORCED_OFFSETS):
    head = model.length
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-5.0)
        for offset, score in scores.items():
            head.proj.bias[offset + head.max_offset] = score
    return model


def _short_and_long_batch(dictionary):
    srcs = [[6, 7], [8, 9, 10, 11, 12, 13, 14]]                  # |X| = 2 and 7
    return collate([0, 1], srcs, [[7, 8], [9, 10]], dictionary)


@pytest.mark.parametrize("arch", ["vanilla_nat", "glat", "cmlm", "aeqa_nat"])
def test_length_candidates_are_distinct_when_clamped_at_one(dictionary, tiny_cfg, arch):
    options = {"codebook_size": 16} if arch == "aeqa_nat" else {}
    model = _force_length_head(model_class(arch)(dictionary, tiny_cfg, options).eval())
    enc, enc_mask = model.encode(_short_and_long_batch(dictionary).src)
    # Lengths <= 1 merge into length 1 with their best score (10); then +4 -> 6, +2 -> 4, ...
    assert model.predict_lengths(enc, enc_mask, beam=5).tolist() == [[1, 6, 4, 2, 3], [6, 5, 4, 3, 11]]
    assert model.predict_lengths(enc, enc_mask, beam=1).tolist() == [[1], [6]]   # clamped argmax, as before


def test_length_candidates_repeat_only_when_too_few_lengths_exist(dictionary, tiny_cfg):
    model = model_class("vanilla_nat")(dictionary, tiny_cfg, {"max_length_offset": 2}).eval()
    _force_length_head(model, {-2: 3.0, 2: 2.0, 1: 1.0, 0: 0.5})
    enc, enc_mask = model.encode(collate([0, 1], [[], [6, 7, 8, 9]], [[7], [7]], dictionary).src)
    # An empty source can only give lengths 1 and 2 (offsets -2..2, clamped): the
    # remaining candidates repeat the best one; |X| = 4 has five distinct lengths.
    assert model.predict_lengths(enc, enc_mask, beam=4).tolist() == [[1, 2, 1, 1], [2, 6, 5, 4]]


def test_npd_and_mask_predict_decode_distinct_lengths(dictionary, tiny_cfg):
    from aeqa_model.decode.nat import noisy_parallel_decode

    batch = _short_and_long_batch(dictionary)
    seen = []

    class Scorer:
        def score(self, src, hyps):
            seen.append(hyps.ne(dictionary.pad).sum(1))
            return torch.zeros(hyps.size(0))

    model = _force_length_head(model_class("vanilla_nat")(dictionary, tiny_cfg, {}).eval())
    noisy_parallel_decode(model, batch.src, teacher=Scorer(), candidates=5)
    assert seen[0].view(2, 5).tolist() == [[1, 6, 4, 2, 3], [6, 5, 4, 3, 11]]

    cmlm = _force_length_head(model_class("cmlm")(dictionary, tiny_cfg, {}).eval())
    trace = []
    mask_predict(cmlm, batch.src, iterations=2, length_beam=3, trace=trace)
    assert trace[-1][1].ne(dictionary.pad).sum(1).view(2, 3).tolist() == [[1, 6, 4], [6, 5, 4]]


# ------------------------------------------------------ label smoothing --
def test_label_smoothing_spreads_epsilon_over_all_v_classes():
    from aeqa_model.models.base import label_smoothed_ce

    # p = (1/4, 1/2, 1/4), gold = 1, epsilon = 0.3; the second position is padding.
    logits = torch.log(torch.tensor([[[1.0, 2.0, 1.0], [5.0, 1.0, 1.0]]]))
    target = torch.tensor([[1, 0]])
    loss, nll = label_smoothed_ce(logits, target, 0.3, ignore_index=0)
    ln2 = math.log(2)
    # Smoothed target (0.1, 0.8, 0.1): 0.1*ln4 + 0.8*ln2 + 0.1*ln4 = 1.2 ln2. The
    # V-1 rule (fairseq >= 0.12) would give (0.15, 0.7, 0.15): 1.3 ln2.
    assert loss.item() == pytest.approx(1.2 * ln2, rel=1e-6)
    assert nll.item() == pytest.approx(ln2, rel=1e-6)
    # Same rule as PyTorch's own label smoothing, on a random ragged batch.
    logits, target = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    loss, _ = label_smoothed_ce(logits, target, 0.1, ignore_index=0)
    reference = torch.nn.functional.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0,
                                                  label_smoothing=0.1)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


# ----------------------------------------------------------------- CMLM --
def test_mask_predict_changes_only_the_remasked_positions(dictionary, tiny_cfg):
    model = model_class("cmlm")(dictionary, tiny_cfg, {}).eval()
    batch = _batch(dictionary)
    trace = []
    mask_predict(model, batch.src, iterations=4, length_beam=2, trace=trace)
    assert len(trace) == 4
    first_remask, previous = trace[0]
    assert first_remask.sum() == previous.ne(0).sum()               # iteration 0 predicts everything
    for t, (remask, tokens) in enumerate(trace[1:], start=1):
        real = tokens.ne(0)
        assert torch.equal(tokens[~remask], previous[~remask])
        lengths = real.sum(1)
        assert remask.sum(1).tolist() == ((lengths * (4 - t)) // 4).tolist()
        assert not tokens[real].eq(dictionary.mask).any()
        previous = tokens


@pytest.mark.parametrize("arch", ["glat", "cmlm"])
def test_oracle_decoding_observes_the_given_share_of_reference(dictionary, tiny_cfg, arch):
    model = model_class(arch)(dictionary, tiny_cfg, {}).eval()
    batch = _batch(dictionary)
    reference = [row[row.ne(0)].tolist() for row in batch.target]
    full = generate(model, batch.src, {"strategy": "oracle", "ratio": 1.0}, reference=batch.target)
    assert full == reference
    half = generate(model, batch.src, {"strategy": "oracle", "ratio": 0.5}, reference=batch.target)
    for hyp, ref in zip(half, reference):
        assert len(hyp) == len(ref)
        assert sum(h == r for h, r in zip(hyp, ref)) >= round(0.5 * len(ref))
    with pytest.raises(ValueError, match="GLAT and CMLM"):
        generate(model_class("vanilla_nat")(dictionary, tiny_cfg, {}).eval(), batch.src,
                 {"strategy": "oracle", "ratio": 0.5}, reference=batch.target)


# ------------------------------------------------------- every baseline --
VARIANTS = [
    ("ctc", {"upsample": 3}, [{"strategy": "argmax"}]),
    ("ctc", {"upsample": 3, "dslp": True}, [{"strategy": "argmax"}]),
    ("glat", {"glancing_schedule": "0.5:0.3@20"}, [{"strategy": "argmax"}, {"strategy": "npd", "candidates": 3,
                                                                          "rerank": "self"}]),
    ("glat", {"dslp": True}, [{"strategy": "argmax"}]),
    ("vanilla_nat", {"dslp": True, "decoder_input": "uniform"}, [{"strategy": "argmax"}]),
    ("cmlm", {}, [{"strategy": "mask_predict", "iterations": 3, "length_beam": 2}]),
    ("dat", {"graph_factor": 4, "glancing_schedule": "0.5:0.1@20"}, [{"strategy": "lookahead"},
                                                                    {"strategy": "viterbi"}]),
    ("dat", {"graph_factor": 4, "dag_paths": "all"}, [{"strategy": "lookahead"}, {"strategy": "viterbi"}]),
    ("aeqa_dat", {"codebook_size": 16, "glancing_schedule": "0.5:0.1@20"}, [{"strategy": "lookahead"},
                                                                           {"strategy": "viterbi"}]),
]


@pytest.mark.parametrize("arch,options,decodings", VARIANTS, ids=[f"{v[0]}-{i}" for i, v in enumerate(VARIANTS)])
def test_every_baseline_trains_and_decodes(dictionary, tiny_cfg, arch, options, decodings):
    batch = _batch(dictionary)
    model = model_class(arch)(dictionary, tiny_cfg, options)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        terms = model.losses(batch, step)
        loss = total_loss(terms)
        assert all(math.isfinite(float(t.value.detach())) for t in terms.values()), terms
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) < sum(losses[:3])
    model.eval()
    for decoding in decodings:
        hyps = generate(model, batch.src, decoding)
        assert len(hyps) == 6 and all(all(t >= 6 for t in h) for h in hyps), (decoding, hyps)


def test_unknown_model_options_are_refused_by_name():
    from aeqa_model.models import check_options

    assert check_options("m", {"arch": "dat", "size": "demo", "graph_factor": 3, "dropout": 0.2}) == []
    problems = check_options("m", {"arch": "aeqa_nat", "size": "demo", "codebook_szie": 8, "upsample": 2})
    assert [p.split(":")[0] for p in problems] == ["models.m.codebook_szie", "models.m.upsample"]
    assert check_options("m", {"arch": "nat"})[0].startswith("models.m.arch: unknown arch 'nat'")
