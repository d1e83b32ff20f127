"""AT decoding: beam search = exhaustive search on a tiny model; beam 1 = greedy; cache = no cache."""
from __future__ import annotations

import itertools

import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.decode.beam import beam_search
from aeqa_model.models.at import ATTransformer
from aeqa_model.models.transformer import TransformerConfig


def tiny_at(vocab=3, seed=0):
    torch.manual_seed(seed)
    d = Dictionary([f"t{i}" for i in range(vocab)])
    cfg = TransformerConfig(embed_dim=16, ffn_dim=32, heads=2, encoder_layers=1, decoder_layers=1, dropout=0.0)
    model = ATTransformer(d, cfg, {}).eval()
    with torch.no_grad():  # sharpen the distributions so search choices matter
        model.embed.weight.mul_(4.0)
    return model, d


def sequence_logprob(model, src, seq):
    d = model.dictionary
    enc, mask = model.encode(src)
    prev = torch.tensor([[d.bos] + seq])
    logp = torch.log_softmax(model.decoder_logits(prev, enc, mask).float(), -1)[0]
    logp[:, [d.pad, d.bos, d.mask, d.blank]] = float("-inf")
    target = seq + [d.eos]
    return float(sum(logp[i, t] for i, t in enumerate(target)).detach())


def exhaustive_best(model, src, max_len, lenpen):
    d = model.dictionary
    words = [d.unk] + list(range(6, len(d)))
    best, best_score = None, float("-inf")
    for n in range(0, max_len):
        for seq in itertools.product(words, repeat=n):
            score = sequence_logprob(model, src, list(seq)) / (n + 1) ** lenpen
            if score > best_score:
                best, best_score = list(seq), score
    return best, best_score


def test_beam_equals_exhaustive_search_with_wide_beam():
    model, d = tiny_at()
    src = torch.tensor([[6, 7, 8, d.eos]])
    # max_len = 0.0 * 4 + 3 steps: hypotheses of up to 2 words + EOS; 4 words -> 1+4+16 = 21 sequences
    hyp, score = beam_search(model, src, beam=32, lenpen=1.0, max_len_a=0.0, max_len_b=3, return_scores=True)
    best, best_score = exhaustive_best(model, src, 3, 1.0)
    assert hyp[0] == best
    assert abs(float(score[0]) / (len(best) + 1) - best_score) < 1e-4


def test_beam_one_is_greedy_and_cache_matches_full_recompute():
    model, d = tiny_at(vocab=6, seed=1)
    src = torch.tensor([[6, 9, 10, 7, d.eos], [8, 8, d.eos, d.pad, d.pad]])
    max_len = 6
    hyps = beam_search(model, src, beam=1, max_len_a=0.0, max_len_b=max_len)
    for row, hyp in enumerate(hyps):
        s = src[row:row + 1, : int(src[row].ne(d.pad).sum())]
        enc, mask = model.encode(s)
        seq = [d.bos]
        for _ in range(max_len - 1):  # greedy with full recomputation (no cache); EOS forced at the end
            logp = torch.log_softmax(model.decoder_logits(torch.tensor([seq]), enc, mask)[0, -1].float(), -1)
            logp[[d.pad, d.bos, d.mask, d.blank]] = float("-inf")
            nxt = int(logp.argmax())
            if nxt == d.eos:
                break
            seq.append(nxt)
        assert seq[1:] == hyp


def test_batched_beam_equals_per_sentence_beam():
    model, d = tiny_at(vocab=8, seed=2)
    src = torch.tensor([[6, 9, 10, 7, d.eos], [8, 8, d.eos, d.pad, d.pad]])
    batched = beam_search(model, src, beam=4, max_len_a=0.0, max_len_b=6)
    single = [beam_search(model, src[i:i + 1, : int(src[i].ne(d.pad).sum())], beam=4, max_len_a=0.0,
                          max_len_b=6)[0] for i in range(2)]
    assert batched == single
