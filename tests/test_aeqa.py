"""AEQA-NAT pieces against reference computations (issue: SQS, losses, glancing, reordering)."""
from __future__ import annotations

import torch

from aeqa_model.data.batching import collate
from aeqa_model.models.aeqa_nat import AEQANAT, aligned_reordering, anneal, choose_glance_positions
from aeqa_model.models.sqa import masked_sq_error
from aeqa_model.models.nat import VanillaNAT, softcopy_weights
from aeqa_model.models.sqs import SemanticQuantizer
from tests.conftest import make_pairs


def test_quantization_returns_nearest_code_brute_force():
    q = SemanticQuantizer(17, 5)
    h = torch.randn(4, 6, 5)
    idx = q.nearest(h)
    dist = torch.cdist(h.reshape(-1, 5), q.codebook.detach())
    assert torch.equal(idx.reshape(-1), dist.argmin(1))


def test_straight_through_passes_gradient_to_encoder_states():
    q = SemanticQuantizer(8, 4)
    h = torch.randn(3, 4, requires_grad=True)
    out = q(h)
    (out.straight * torch.arange(4.0)).sum().backward()
    assert torch.allclose(h.grad, torch.arange(4.0).expand(3, 4))
    assert torch.allclose(out.straight, out.codes)


def test_ema_update_matches_eq6_by_hand():
    gamma, eps = 0.9, 1e-5
    q = SemanticQuantizer(4, 2, decay=gamma, epsilon=eps, dead_fraction=0.0)
    book = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    q.codebook.data.copy_(book)
    q.ema_sum.copy_(book)
    h = torch.tensor([[0.1, 0.0], [0.9, 0.1], [1.1, -0.1], [0.0, 0.8]])
    idx = q.nearest(h)
    assert idx.tolist() == [0, 1, 1, 2]
    q.ema_update(h, idx)
    counts = torch.tensor([1.0, 2.0, 1.0, 0.0])
    sums = torch.stack([h[0], h[1] + h[2], h[3], torch.zeros(2)])
    n = gamma * torch.ones(4) + (1 - gamma) * counts                     # n_k
    m = gamma * book + (1 - gamma) * sums                                # running w_k
    n_smoothed = (n + eps) / (n.sum() + 4 * eps) * n.sum()
    assert torch.allclose(q.codebook.detach(), m / n_smoothed[:, None], atol=1e-6)


def test_loss_terms_zero_when_inputs_coincide_positive_otherwise():
    pad = torch.zeros(2, 3, dtype=torch.bool)
    a = torch.randn(2, 3, 4)
    assert float(masked_sq_error(a, a, pad)) == 0.0
    assert float(masked_sq_error(a, a + 0.1, pad)) > 0.0


def test_softcopy_rows_sum_to_one_and_peak_on_rescaled_diagonal():
    src_mask = torch.tensor([[False] * 5 + [True] * 3])
    w = softcopy_weights(src_mask, torch.tensor([5]), 5, tau=0.3)
    assert torch.allclose(w.sum(-1), torch.ones(1, 5))
    assert torch.equal(w[0].argmax(-1), torch.arange(5))
    assert float(w[0, :, 5:].sum()) == 0.0
    w2 = softcopy_weights(torch.tensor([[False] * 4]), torch.tensor([8]), 8, tau=0.3)
    assert w2[0].argmax(-1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # j / (Ty/Tx)


def test_glance_positions_count_and_never_padding():
    pad = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    chosen = choose_glance_positions(torch.rand(2, 6), torch.tensor([4, 2]), pad)
    assert chosen.sum(1).tolist() == [4, 2]
    assert not (chosen & pad).any()


def test_reordering_reproduces_fig3_example():
    # A built so that target positions 1..5 align with inputs h1, h3, h5, h4, h2.
    quantized = torch.eye(5).unsqueeze(0)
    order = [0, 2, 4, 3, 1]
    target = torch.eye(5)[order].unsqueeze(0) * 10
    mask = torch.zeros(1, 5, dtype=torch.bool)
    assert aligned_reordering(target, quantized, mask, mask)[0].tolist() == order


def test_lambda_schedule_start_middle_end():
    assert anneal(0.6, 0.4, 0, 1000) == 0.6
    assert abs(anneal(0.6, 0.4, 500, 1000) - 0.5) < 1e-12
    assert anneal(0.6, 0.4, 1000, 1000) == 0.4
    assert anneal(0.6, 0.4, 5000, 1000) == 0.4


def _batch(dictionary):
    pairs = make_pairs(6, 3)
    return collate(list(range(6)), [torch.tensor(p[0]).numpy() for p in pairs],
                   [torch.tensor(p[1]).numpy() for p in pairs], dictionary)


def test_glanced_positions_carry_quantized_target_vectors_not_tokens(dictionary, tiny_cfg, monkeypatch):
    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "lambda_start": 1.0, "lambda_end": 1.0,
                                           "glancing": "uniform"}).eval()  # eval: no dropout noise
    batch = _batch(dictionary)
    seen = {}
    original = model.run_decoder

    def spy(inputs, tgt_mask, enc, enc_mask):
        seen.setdefault("calls", []).append(inputs.detach().clone())
        return original(inputs, tgt_mask, enc, enc_mask)

    monkeypatch.setattr(model, "run_decoder", spy)
    model.losses(batch, 0)
    second = seen["calls"][-1]
    y_mask = batch.target.eq(dictionary.pad)
    h_y = model.encoder.forward_embedded(model.embed(batch.target), y_mask)
    q_y = model.sqs.lookup(model.sqs.nearest(h_y))
    keep = ~y_mask
    # lambda = 1 and uniform: every real position is glanced with z_q(H_y)_j
    assert torch.allclose(second[keep], q_y[keep], atol=1e-5)
    token_embeddings = model.embed.lookup(batch.target)
    assert not torch.allclose(second[keep], token_embeddings[keep])


def test_every_variant_trains_and_decodes(dictionary, tiny_cfg):
    from aeqa_model.decode import generate
    from aeqa_model.models.base import total_loss

    batch = _batch(dictionary)
    for options in ({}, {"reordering": True}, {"dslp": True}, {"glancing": "uniform"}, {"glancing": "none"},
                    {"quantize_input": False}, {"sqa_terms": ["xy"], "sqa_reduction": "sum"}, {"sqa_weight": 0.0},
                    # issue 25: reading B of Eq. 11 (alone, reordered, uniform), Eq. 6's EMA in training
                    {"glance_into": "continuous"}, {"glance_into": "continuous", "reordering": True},
                    {"glance_into": "continuous", "glancing": "uniform"}, {"codebook_update": "ema"},
                    {"glance_into": "continuous", "codebook_update": "ema"}):
        model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, **options})
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for step in range(15):
            loss = total_loss(model.losses(batch, step))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0], options
        model.eval()
        for decoding in ({"strategy": "argmax"}, {"strategy": "aeqa_two_pass", "lambda_inf": 0.4},
                         {"strategy": "npd", "candidates": 3, "rerank": "self"}):
            hyps = generate(model, batch.src, decoding)
            assert len(hyps) == 6 and all(all(t >= 6 for t in h) for h in hyps)


def test_vanilla_nat_npd_picks_best_scored_candidate(dictionary, tiny_cfg):
    from aeqa_model.decode.nat import noisy_parallel_decode

    model = VanillaNAT(dictionary, tiny_cfg, {}).eval()
    batch = _batch(dictionary)

    class Scorer:
        def score(self, src, hyps):  # prefers the longest candidate
            return hyps.ne(0).sum(1).float()

    hyps = noisy_parallel_decode(model, batch.src, teacher=Scorer(), candidates=4)
    enc, mask = model.encode(batch.src)
    lengths = model.predict_lengths(enc, mask, beam=4)
    assert [len(h) for h in hyps] == lengths.max(1).values.tolist()


def test_training_reset_moves_only_unused_codes_onto_states():
    torch.manual_seed(0)
    sqs = SemanticQuantizer(16, 4)
    with torch.no_grad():
        sqs.codebook.copy_(torch.randn(16, 4) * 0.01)     # every code far from the states ...
        sqs.codebook[3] = torch.full((4,), 5.0)            # ... but one, which takes them all
    h = torch.randn(64, 4) * 0.1 + 5.0
    assert sqs.nearest(h).unique().tolist() == [3]
    before = sqs.codebook.detach().clone()
    sqs.enable_reset(0.01)
    sqs.train()
    sqs(h)
    assert torch.equal(sqs.codebook[3], before[3])         # the used code is untouched
    moved = (sqs.codebook.detach() != before).any(1)
    assert moved.sum() == 15 and not moved[3]
    assert len(sqs.nearest(h).unique()) > 5                # the states now spread over several codes
    off = SemanticQuantizer(16, 4)
    off.train()
    snapshot = off.codebook.detach().clone()
    off(h)
    assert torch.equal(off.codebook, snapshot)             # disabled by default (pre-alignment stage)


def test_masked_quantization_searches_only_real_positions_in_training():
    q = SemanticQuantizer(32, 6).train()
    h = torch.randn(3, 7, 6)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, 5:] = True
    mask[2, 2:] = True
    out = q(h, mask)
    brute = torch.cdist(h.reshape(-1, 6), q.codebook.detach()).argmin(1).view(3, 7)
    assert torch.equal(out.indices[~mask], brute[~mask])
    assert (out.indices[mask] == 0).all()
    assert int(q.usage.sum()) == int((~mask).sum())                   # padding never counted
    assert torch.allclose(out.straight[~mask], out.codes[~mask])
    q.eval()                                                           # inference: every position
    assert torch.equal(q(h, mask).indices, brute)


def test_cached_code_norms_follow_codebook_changes():
    q = SemanticQuantizer(16, 4).eval()
    h = torch.randn(10, 4)
    first = q.nearest(h)
    assert torch.equal(first, torch.cdist(h, q.codebook.detach()).argmin(1))
    other = SemanticQuantizer(16, 4)
    q.load_state_dict(other.state_dict())                              # in-place copy: new version
    assert torch.equal(q.nearest(h), torch.cdist(h, other.codebook.detach()).argmin(1))
    with torch.no_grad():
        q.codebook.mul_(3.0)
    assert torch.equal(q.nearest(h), torch.cdist(h, q.codebook.detach()).argmin(1))


def test_first_pass_predictions_equal_full_argmax_at_real_positions(dictionary, tiny_cfg):
    for options in ({}, {"dslp": True}):
        model = VanillaNAT(dictionary, tiny_cfg, options).eval()
        batch = _batch(dictionary)
        enc, enc_mask = model.encode(batch.src)
        inputs, tgt_mask = model.decoder_inputs(enc, enc_mask, batch.target_lengths)
        assert tgt_mask.any()                                          # the batch is ragged
        full = model.run_decoder(inputs, tgt_mask, enc, enc_mask)[0][-1].argmax(-1)
        predicted = model.predict_tokens(inputs, tgt_mask, enc, enc_mask)
        assert torch.equal(predicted[~tgt_mask], full[~tgt_mask])
        assert (predicted[tgt_mask] == dictionary.pad).all()


def test_target_encoding_runs_without_dropout_unless_asked(dictionary, tiny_cfg):
    from aeqa_model.models.sqa import encode_target

    cfg = type(tiny_cfg)(**{**tiny_cfg.__dict__, "dropout": 0.5})
    model = AEQANAT(dictionary, cfg, {"codebook_size": 16}).train()
    batch = _batch(dictionary)
    y_mask = batch.target.eq(dictionary.pad)
    clean = encode_target(model, batch.target, y_mask, dropout=False)
    assert model.training and model.encoder.training and model.embed.training   # flags restored
    model.eval()
    reference = model.encoder.forward_embedded(model.embed(batch.target), y_mask)
    model.train()
    assert torch.allclose(clean, reference, atol=1e-6)
    assert not clean.requires_grad
    noisy = encode_target(model, batch.target, y_mask, dropout=True)
    assert not torch.allclose(noisy[~y_mask], reference[~y_mask])


def test_uniform_glancing_needs_no_first_pass(dictionary, tiny_cfg, monkeypatch):
    batch = _batch(dictionary)
    for glancing, first_passes in (("uniform", 0), ("adaptive", 1)):
        model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "glancing": glancing})
        calls = []
        original = model.predict_tokens
        monkeypatch.setattr(model, "predict_tokens", lambda *a: calls.append(1) or original(*a))
        model.losses(batch, 0)
        assert len(calls) == first_passes


def test_nearest_code_search_stays_fp32_under_autocast():
    torch.manual_seed(3)
    q = SemanticQuantizer(512, 16)
    h = torch.randn(400, 16)
    exact = torch.cdist(h.double(), q.codebook.detach().double()).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q.nearest(h), exact)


def test_code_norm_cache_survives_repeated_eval_and_is_dropped_by_training():
    q = SemanticQuantizer(16, 4).eval()
    q.nearest(torch.randn(3, 4))
    cached = q._norms_cache
    q.eval()                                                           # e.g. once per decoded batch
    assert q._norms_cache is cached
    q.train()
    with torch.no_grad():
        q.codebook.data.mul_(2.0)                                      # .data: no version bump
    q.eval()
    h = torch.randn(10, 4)
    assert torch.equal(q.nearest(h), torch.cdist(h, q.codebook.detach()).argmin(1))


def test_sqa_sum_reduction_is_d_times_the_mean_by_hand():
    from aeqa_model.models.sqa import squared_error
    a = torch.tensor([[1.0, 2.0, 3.0]])
    b = torch.tensor([[0.0, 0.0, 1.0]])
    assert float(squared_error(a, b, "sum")) == 1.0 + 4.0 + 4.0
    assert abs(float(squared_error(a, b, "mean")) - 9.0 / 3) < 1e-6
    pad = torch.tensor([[False, True]])
    x, y = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    assert torch.allclose(masked_sq_error(x, y, pad, "sum"), 3 * masked_sq_error(x, y, pad, "mean"))
    assert torch.allclose(masked_sq_error(x, y, pad, "sum"), (x[0, 0] - y[0, 0]).pow(2).sum())


def test_sqa_terms_switch_leaves_out_unnamed_terms(dictionary, tiny_cfg):
    import pytest

    batch = _batch(dictionary)
    full = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16})
    state = {k: v.clone() for k, v in full.state_dict().items()}
    full.eval()  # no dropout, no code resets: the two models below see identical states
    torch.manual_seed(0)
    every = full.losses(batch, 0)
    assert {"sqa_ax", "sqa_xy", "sqa_ay"} <= set(every)
    for kept in (["ax"], ["xy", "ay"], []):
        model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "sqa_terms": kept})
        names = {n for n in model.losses(batch, 0) if n.startswith("sqa_")}
        assert names == {f"sqa_{t}" for t in kept}
    summed = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "sqa_reduction": "sum"})
    summed.load_state_dict(state)
    summed.eval()
    torch.manual_seed(0)
    terms = summed.losses(batch, 0)
    # Same weights, same draws: each term is D times the mean-reduced one.
    for name in ("sqa_ax", "sqa_xy", "sqa_ay"):
        assert torch.allclose(terms[name].value, tiny_cfg.embed_dim * every[name].value, rtol=1e-4)
    with pytest.raises(ValueError, match="sqa_terms"):
        AEQANAT(dictionary, tiny_cfg, {"sqa_terms": ["ax", "zz"]})
    with pytest.raises(ValueError, match="sqa_reduction"):
        AEQANAT(dictionary, tiny_cfg, {"sqa_reduction": "max"})


def _spy_decoder_inputs(model, monkeypatch) -> list:
    """Record every decoder input ``model`` runs on (a list, filled as it runs)."""
    seen = []
    original = model.run_decoder

    def spy(inputs, tgt_mask, enc, enc_mask, **kw):
        seen.append(inputs.detach().clone())
        return original(inputs, tgt_mask, enc, enc_mask, **kw)

    monkeypatch.setattr(model, "run_decoder", spy)
    return seen


def test_unquantized_control_feeds_h_m_and_glances_h_y(dictionary, tiny_cfg, monkeypatch):
    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "quantize_input": False, "lambda_start": 1.0,
                                           "lambda_end": 1.0, "glancing": "uniform"}).eval()
    batch = _batch(dictionary)
    seen = _spy_decoder_inputs(model, monkeypatch)
    model.losses(batch, 0)
    y_mask = batch.target.eq(dictionary.pad)
    h_y = model.encoder.forward_embedded(model.embed(batch.target), y_mask)
    keep = ~y_mask
    # lambda = 1, uniform: every real position takes H_y itself, not its code
    assert torch.allclose(seen[-1][keep], h_y[keep], atol=1e-5)
    assert not torch.allclose(seen[-1][keep], model.sqs.lookup(model.sqs.nearest(h_y))[keep])
    seen.clear()
    enc, enc_mask = model.encode(batch.src)
    lengths = batch.target_lengths
    model.forward_inference(enc, enc_mask, lengths)
    h_m, _ = model.copy_inputs(enc, enc_mask, lengths)
    assert torch.allclose(seen[-1], h_m)


# ------------------------------------------ issue 25: readings of Eq. 11 and the SQS --
def test_reading_b_glances_each_positions_own_code_into_h_m(dictionary, tiny_cfg, monkeypatch):
    """glance_into: continuous. Glancing off: the decoder reads H_m itself. lambda 1,
    uniform: every real position takes z_q(h_j) of its own H_m vector, never a code
    of the reference (reading A glances z_q(H_y))."""
    batch = _batch(dictionary)
    y_mask = batch.target.eq(dictionary.pad)
    keep = ~y_mask
    for glancing in ("none", "uniform"):
        model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "glance_into": "continuous", "glancing": glancing,
                                               "lambda_start": 1.0, "lambda_end": 1.0}).eval()
        seen = _spy_decoder_inputs(model, monkeypatch)
        model.losses(batch, 0)
        enc, enc_mask = model.encode(batch.src)
        h_m, _ = model.copy_inputs(enc, enc_mask, batch.target_lengths, batch.target.size(1))
        own_codes = model.sqs.lookup(model.sqs.nearest(h_m))
        expected = h_m if glancing == "none" else own_codes
        assert torch.allclose(seen[-1][keep], expected[keep], atol=1e-5), glancing
        h_y = model.encoder.forward_embedded(model.embed(batch.target), y_mask)
        reference_codes = model.sqs.lookup(model.sqs.nearest(h_y))
        assert not torch.allclose(seen[-1][keep], reference_codes[keep])


def test_reading_b_quantizes_an_even_share_of_positions_at_inference(dictionary, tiny_cfg, monkeypatch):
    """At inference floor(lambda * m) evenly spaced real positions read z_q(h_j), the rest
    h_j, with no target anywhere; a decoding's lambda_inf overrides the model's share."""
    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "glance_into": "continuous"}).eval()
    batch = _batch(dictionary)
    enc, enc_mask = model.encode(batch.src)
    lengths = torch.tensor([5, 7, 3, 1, 6, 4])[: batch.src.size(0)]
    h_m, tgt_mask = model.copy_inputs(enc, enc_mask, lengths)
    codes = model.sqs.lookup(model.sqs.nearest(h_m))
    seen = _spy_decoder_inputs(model, monkeypatch)
    for share, given in ((0.4, 0.0), (0.5, 0.5), (1.0, 1.0)):
        seen.clear()
        model.forward_inference(enc, enc_mask, lengths, lambda_inf=given)
        inputs = seen[-1]
        for b, m in enumerate(lengths.tolist()):
            quantized = [i for i in range(m) if torch.allclose(inputs[b, i], codes[b, i])
                         and not torch.allclose(inputs[b, i], h_m[b, i])]
            kept = [i for i in range(m) if torch.allclose(inputs[b, i], h_m[b, i])]
            assert len(quantized) == int(share * m + 1e-9) and len(quantized) + len(kept) == m, (share, m)
            # evenly spaced: brute force of "position i is picked when floor((i+1)s) > floor(i s)"
            assert quantized == [i for i in range(m) if int((i + 1) * share + 1e-9) > int(i * share + 1e-9)]


def test_codebook_update_ema_applies_eq6_to_the_source_states(dictionary, tiny_cfg):
    """codebook_update: ema. After a training forward pass the codebook is Eq. 6's update
    on the (non-padding) encoder states H_x and their codes, computed here by hand."""
    import dataclasses

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_cfg, dropout=0.0)      # H_x below is the H_x of losses()
    model = AEQANAT(dictionary, cfg, {"codebook_size": 16, "codebook_update": "ema", "codebook_reset": 0.0,
                                      "glancing": "none"})
    model.train()
    batch = _batch(dictionary)
    book = model.sqs.codebook.detach().clone()
    count, running = model.sqs.ema_count.clone(), model.sqs.ema_sum.clone()
    enc, enc_mask = model.encode(batch.src)
    idx = model.sqs.nearest(enc.detach())                 # the codes before the update
    model.losses(batch, 0)
    keep = ~enc_mask
    gamma, eps, k = model.sqs.decay, model.sqs.epsilon, 16
    counts = torch.zeros(k).index_add_(0, idx[keep], torch.ones(int(keep.sum())))
    sums = torch.zeros(k, tiny_cfg.embed_dim).index_add_(0, idx[keep], enc.detach()[keep])
    n = gamma * count + (1 - gamma) * counts
    m = gamma * running + (1 - gamma) * sums
    n_smoothed = (n + eps) / (n.sum() + k * eps) * n.sum()
    assert not torch.allclose(model.sqs.codebook.detach(), book)
    assert torch.allclose(model.sqs.codebook.detach(), m / n_smoothed[:, None], atol=1e-5)
    # the default (gradient) leaves the codebook to the optimizer
    plain = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "codebook_reset": 0.0, "glancing": "none"})
    before = plain.sqs.codebook.detach().clone()
    plain.train()
    plain.losses(batch, 0)
    assert torch.equal(plain.sqs.codebook.detach(), before)


def test_ema_update_reseeds_codes_unused_within_a_pre_alignment():
    """Pre-alignment (pretrain_sqs.align_updates 300): codes that no state chooses move
    onto real states within the run. The old absolute threshold (ema_count < 1e-3,
    from 1 at decay 0.99) needed ~688 updates, so it never fired."""
    torch.manual_seed(0)
    q = SemanticQuantizer(8, 2, decay=0.99)
    with torch.no_grad():
        q.codebook.copy_(torch.full((8, 2), 100.0))
        q.codebook[0] = torch.zeros(2)                      # only code 0 is near the data
        q.ema_sum.copy_(q.codebook)
    for _ in range(30):
        h = torch.randn(64, 2)
        q.ema_update(h, q.nearest(h))
    assert q.codebook.detach().abs().max() < 10, "codes far from every state were never re-seeded"
    h = torch.randn(4096, 2)
    assert len(q.nearest(h).unique()) >= 6                  # the re-seeded codes are used
    # and a code the data keeps choosing is never moved by the re-seeding
    q2 = SemanticQuantizer(2, 2, decay=0.99)
    with torch.no_grad():
        q2.codebook.copy_(torch.tensor([[0.0, 0.0], [0.0, 3.0]]))
        q2.ema_sum.copy_(q2.codebook)
    h = torch.cat([torch.randn(32, 2) * 0.01, torch.randn(32, 2) * 0.01 + torch.tensor([0.0, 3.0])])
    for _ in range(20):
        q2.ema_update(h, q2.nearest(h))
    assert torch.allclose(q2.codebook.detach(), torch.tensor([[0.0, 0.0], [0.0, 3.0]]), atol=0.05)


def test_masked_ema_update_equals_the_update_on_the_selected_rows():
    """ema_update(h, idx, mask) over a padded batch is the update on the real rows alone."""
    torch.manual_seed(1)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    a, b = SemanticQuantizer(6, 4, dead_fraction=0.0), SemanticQuantizer(6, 4, dead_fraction=0.0)
    b.load_state_dict(a.state_dict())
    a.ema_update(h, a.nearest(h), mask)
    b.ema_update(h[~mask], b.nearest(h[~mask]))
    assert torch.allclose(a.codebook, b.codebook, atol=1e-6) and torch.allclose(a.ema_count, b.ema_count)
