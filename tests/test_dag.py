"""DA-Transformer: the DAG loss, best alignment and decoders against brute force."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from aeqa_model.decode.dag import lookahead_decode, viterbi_decode
from aeqa_model.models.dat import NEG, dag_best_alignment, dag_log_likelihood, scatter_to_vertices


def random_graph(bsz, size, n, vocab=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    token_logp = torch.log_softmax(torch.randn(bsz, size, vocab, generator=g, dtype=dtype), -1)
    target = torch.randint(0, vocab, (bsz, n), generator=g)
    scores = torch.randn(bsz, size, size, generator=g, dtype=dtype)
    return token_logp, target, scores


def forward_log_e(scores, sizes):
    """log E over forward links to real vertices (Eq. 23-24), NEG elsewhere."""
    size = scores.size(1)
    idx = torch.arange(size)
    allowed = (idx[None, :] > idx[:, None])[None] & (idx[None, None, :] < sizes[:, None, None])
    has = allowed.any(-1, keepdim=True)
    logits = scores.masked_fill(~allowed, NEG).masked_fill(~has, 0.0)
    return torch.log_softmax(logits, -1).masked_fill(~allowed, NEG)


def per_target(token_logp, target):
    return token_logp.gather(2, target[:, None, :].expand(-1, token_logp.size(1), -1)).transpose(1, 2)


def paths(size, n, anchored):
    for a in itertools.combinations(range(size), n):
        if not anchored or (a[0] == 0 and a[-1] == size - 1):
            yield a


def brute_force(token_logp, log_e, target, size, n, anchored):
    """log sum over every path of prod E * prod P(y_i | a_i), and the best path."""
    terms, best, best_path = [], -math.inf, None
    for a in paths(size, n, anchored):
        s = sum(float(token_logp[a[i], target[i]]) for i in range(n))
        s += sum(float(log_e[a[i], a[i + 1]]) for i in range(n - 1))
        terms.append(s)
        if s > best:
            best, best_path = s, a
    return torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0).item(), best_path, len(terms)


@pytest.mark.parametrize("anchored", [True, False])
def test_paper_example_n3_l5_matches_enumeration(anchored):
    token_logp, target, scores = random_graph(1, 5, 3, seed=3)
    sizes, lengths = torch.tensor([5]), torch.tensor([3])
    log_e = forward_log_e(scores, sizes)
    ll = dag_log_likelihood(per_target(token_logp, target), log_e, sizes, lengths, anchored)
    ref, _, count = brute_force(token_logp[0], log_e[0], target[0], 5, 3, anchored)
    assert count == (3 if anchored else 10)  # C(3, 1) anchored; the paper's C(5, 3) = 10
    assert ll.item() == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("anchored", [True, False])
def test_batched_dp_with_ragged_lengths_matches_enumeration(anchored):
    token_logp, target, scores = random_graph(4, 7, 5, seed=11)
    sizes = torch.tensor([7, 6, 5, 4])
    lengths = torch.tensor([5, 2, 4, 3])
    log_e = forward_log_e(scores, sizes)
    ll = dag_log_likelihood(per_target(token_logp, target), log_e, sizes, lengths, anchored)
    path = dag_best_alignment(per_target(token_logp, target), log_e, sizes, lengths, anchored)
    for b in range(4):
        size, n = int(sizes[b]), int(lengths[b])
        ref, best_path, _ = brute_force(token_logp[b], log_e[b], target[b], size, n, anchored)
        assert ll[b].item() == pytest.approx(ref, abs=1e-9)
        assert tuple(path[b, :n].tolist()) == best_path
        assert path[b, n:].eq(0).all()


def test_dag_loss_gradient_gradcheck_float64():
    _, target, _ = random_graph(2, 5, 3, seed=5)
    sizes, lengths = torch.tensor([5, 4]), torch.tensor([3, 2])
    g = torch.Generator().manual_seed(9)
    vocab_logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    link_scores = torch.randn(2, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)

    def loss(vocab_logits, link_scores):
        token_logp = per_target(torch.log_softmax(vocab_logits, -1), target)
        return dag_log_likelihood(token_logp, forward_log_e(link_scores, sizes), sizes, lengths, True)

    assert torch.autograd.gradcheck(loss, (vocab_logits, link_scores), eps=1e-6, atol=1e-6)


def test_scatter_to_vertices_places_chosen_targets_only():
    path = torch.tensor([[0, 2, 3], [0, 1, 0]])
    chosen = torch.tensor([[True, False, True], [False, True, False]])
    mask, values = scatter_to_vertices(path, chosen, 5, torch.tensor([[7, 8, 9], [4, 5, 6]]))
    assert mask.tolist() == [[True, False, False, True, False], [False, True, False, False, False]]
    assert values[0, 0] == 7 and values[0, 3] == 9 and values[1, 1] == 5


class GraphStub:
    """Exposes fixed graph outputs through the decoders' model interface."""

    pad = 0

    class dictionary:  # noqa: N801 - mimics Dictionary's attributes
        eos = 2

    def __init__(self, tokens, best, trans, sizes, emit):
        self.out = (tokens, best, trans, sizes, emit)

    def encode(self, src):
        return None, None

    def graph_inference(self, enc, enc_mask):
        return self.out


def stub_graph(seed, size=6, bsz=3, sizes=(6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(sizes)
    tokens = torch.randint(10, 40, (bsz, size), generator=g)
    best = torch.log(torch.rand(bsz, size, generator=g))
    emit = torch.arange(size)[None, :] < sizes[:, None]
    best = best.masked_fill(~emit, 0.0)
    trans = forward_log_e(torch.randn(bsz, size, size, generator=g), sizes).float()
    return GraphStub(tokens, best, trans, sizes, emit)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_is_the_best_length_normalized_path(seed):
    stub = stub_graph(seed)
    tokens, best, trans, sizes, _ = stub.out
    out = viterbi_decode(stub, torch.zeros(3, 1, dtype=torch.long), lenpen=1.0)
    for b in range(3):
        size = int(sizes[b])
        candidates = []
        for k in range(2, size + 1):
            for a in paths(size, k, anchored=True):
                s = sum(float(best[b, v]) for v in a) + sum(float(trans[b, a[i], a[i + 1]]) for i in range(k - 1))
                candidates.append((s / k, a))
        _, a = max(candidates)
        assert out[b] == [int(tokens[b, v]) for v in a]


def test_lookahead_follows_transition_plus_token_score():
    stub = stub_graph(4)
    tokens, best, trans, sizes, _ = stub.out
    out = lookahead_decode(stub, torch.zeros(3, 1, dtype=torch.long))
    for b in range(3):
        v, visited = 0, [0]
        while v < int(sizes[b]) - 1:
            v = int((trans[b, v] + best[b]).argmax())
            visited.append(v)
        assert out[b] == [int(tokens[b, u]) for u in visited]
