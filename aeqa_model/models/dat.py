"""DA-Transformer (Huang et al. 2022; the paper's App. B, Eq. 22-24).

The decoder runs on a graph of L = graph_factor * |X| vertices whose inputs are
copied from the encoder states. Each vertex predicts a token distribution, and
the transition matrix E = softmax(Q K^T / sqrt(d)) (Q = H W_Q, K = H W_K) links
every vertex only to later ones (Eq. 23-24). The likelihood of Y sums over the
paths a (ascending vertex sets of size |Y|):

    P(Y|X) = sum_a prod_i E[a_i, a_{i+1}] prod_i P(y_i | a_i)          (Eq. 22)

computed by a log-space dynamic program vectorized over the batch and the
vertices (the only Python loop runs over target positions).

Which paths: ``dag_paths: anchored`` (default, as DA-Transformer's code and its
decoders) keeps the paths that start at vertex 0 and end at vertex L-1;
``dag_paths: all`` is the literal reading of the paper's Eq. 22, every one of
the C(L, n) ascending sets (docs/method.md).

Training uses glancing on the best alignment: the first pass finds the most
likely path for the gold target (Viterbi), t = floor(lambda * Hamming) target
positions are chosen, and their aligned vertices take the gold embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aeqa_model.models.base import LossTerm
from aeqa_model.models.glancing import GlanceSchedule, choose_glance_positions, glance_counts, same_dropout
from aeqa_model.models.nat import NATOptions, VanillaNAT
from aeqa_model.models.options import option

# A finite "minus infinity": keeps logsumexp and its gradient free of NaN when a
# vertex is unreachable (exp underflows to exactly 0 all the same).
NEG = -1e9


def transition_log_probs(states: torch.Tensor, w_q: nn.Module, w_k: nn.Module,
                         vertex_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 23-24: log E (B, L, L) over forward links j > i to real vertices; NEG elsewhere."""
    q, k = w_q(states).float(), w_k(states).float()
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.size(-1))
    size = states.size(1)
    idx = torch.arange(size, device=states.device)
    allowed = (idx[None, :] > idx[:, None])[None] & ~vertex_mask[:, None, :]
    has_link = allowed.any(-1, keepdim=True)
    # Rows without a forward link (the last vertex, padding) get a dummy uniform row
    # before the softmax so no NaN appears; their entries are masked right after.
    scores = scores.masked_fill(~allowed, NEG).masked_fill(~has_link, 0.0)
    return torch.log_softmax(scores, dim=-1).masked_fill(~allowed, NEG)


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """The DP runs in float32 at least (also under bf16/fp16 autocast); float64 stays."""
    return x if x.dtype == torch.float64 else x.float()


def _dag_dp(token_logp: torch.Tensor, trans_logp: torch.Tensor, vertex_lengths: torch.Tensor,
            target_lengths: torch.Tensor, anchored: bool, viterbi: bool):
    """Shared forward recursion. token_logp (B, n, L) = log P(y_i | vertex v);
    trans_logp (B, L, L). Returns the final scores (B, L) and, for Viterbi, the
    back-pointers (B, n, L)."""
    bsz, n, size = token_logp.shape
    vertices = torch.arange(size, device=token_logp.device)
    real = vertices[None, :] < vertex_lengths[:, None]
    start = real if not anchored else (vertices[None, :] == 0).expand(bsz, -1)
    f = token_logp[:, 0, :].masked_fill(~start, NEG)
    final = f
    pointers = []
    # Sum-product in probability space with one rescaling per row, so each step is a
    # batched matrix product (B, 1, L) @ (B, L, L) instead of a logsumexp over a
    # (B, L, L) tensor: exact, and ~10x cheaper in the backward pass.
    trans = None if viterbi else trans_logp.exp()
    tiny = torch.finfo(token_logp.dtype).tiny
    for i in range(1, n):
        if viterbi:
            best, arg = (f[:, :, None] + trans_logp).max(dim=1)                  # (B, from u, to v)
            pointers.append(arg)
        else:
            scale = f.max(dim=1, keepdim=True).values
            mass = torch.bmm((f - scale).exp().unsqueeze(1), trans).squeeze(1)
            best = scale + mass.clamp(min=tiny).log()
        f = best + token_logp[:, i, :]
        final = torch.where((target_lengths == i + 1)[:, None], f, final)
    return final, pointers


def _end_mask(final, vertex_lengths, anchored):
    vertices = torch.arange(final.size(1), device=final.device)
    if anchored:
        return vertices[None, :] == (vertex_lengths - 1)[:, None]
    return vertices[None, :] < vertex_lengths[:, None]


def dag_log_likelihood(token_logp, trans_logp, vertex_lengths, target_lengths, anchored: bool = True):
    """log P(Y|X) of Eq. 22 per sentence (B,), by dynamic programming in log space."""
    final, _ = _dag_dp(_full_precision(token_logp), _full_precision(trans_logp), vertex_lengths, target_lengths,
                       anchored, False)
    return torch.logsumexp(final.masked_fill(~_end_mask(final, vertex_lengths, anchored), NEG), dim=1)


@torch.no_grad()
def dag_best_alignment(token_logp, trans_logp, vertex_lengths, target_lengths, anchored: bool = True):
    """The most likely path for the given target: (B, n) vertex of every target
    position (positions beyond a sentence's length hold 0)."""
    final, pointers = _dag_dp(_full_precision(token_logp), _full_precision(trans_logp), vertex_lengths,
                              target_lengths, anchored, True)
    n = token_logp.size(1)
    end = final.masked_fill(~_end_mask(final, vertex_lengths, anchored), 2 * NEG * n).argmax(1)
    return backtrack(pointers, end, target_lengths, n)


def backtrack(pointers: list, end: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Follow Viterbi back-pointers (``pointers[i]`` (B, L): best vertex at step i
    for each vertex at step i+1) from ``end`` at step lengths-1; (B, n), 0-padded."""
    path = torch.zeros(end.size(0), n, dtype=torch.long, device=end.device)
    current = end
    for i in range(n - 1, -1, -1):
        if i + 1 < n:
            back = pointers[i].gather(1, current[:, None]).squeeze(1)
            current = torch.where(i < lengths - 1, back, current)
        current = torch.where(i == lengths - 1, end, current)
        path[:, i] = torch.where(i < lengths, current, torch.zeros_like(current))
    return path


def target_token_logp(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, V) vertex logits, (B, n) target -> (B, n, L) log P(y_i | vertex)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    index = target.clamp(min=0)[:, None, :].expand(-1, logits.size(1), -1)
    return logp.gather(2, index).transpose(1, 2)


def scatter_to_vertices(path: torch.Tensor, chosen: torch.Tensor, size: int, values: torch.Tensor):
    """Place ``values`` (B, n, ...) of the chosen target positions on their aligned
    vertices: returns (vertex mask (B, L), vertex values (B, L, ...))."""
    bsz = path.size(0)
    index = path.masked_fill(~chosen, size)                                     # dummy column L
    mask = torch.zeros(bsz, size + 1, dtype=torch.bool, device=path.device)
    mask.scatter_(1, index, True)
    shape = (bsz, size + 1) + tuple(values.shape[2:])
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    expand = index.view(bsz, -1, *([1] * (values.dim() - 2))).expand_as(values)
    out.scatter_(1, expand, values)
    return mask[:, :size], out[:, :size]


GRAPH_FACTOR_HELP = "L = graph_factor * |X| graph vertices (App. B; raised to the target length in training)"


@dataclass(frozen=True)
class DATOptions(NATOptions):
    graph_factor: float = option(8, GRAPH_FACTOR_HELP, schema={"exclusiveMinimum": 0})
    glancing_schedule: str = option("0.5:0.1@200k", 'the glancing ratio lambda on the best alignment: '
                                    '"start:end@updates" (models.glancing.GlanceSchedule)')
    dag_paths: str = option("anchored", "the paths of Eq. 22: anchored (start at vertex 0, end at L-1, as "
                            "DA-Transformer's code) or all ascending vertex sets (docs/method.md #20)",
                            choices=("anchored", "all"))


class DATransformer(VanillaNAT):
    arch = "dat"
    default_decoding = "lookahead"
    validation_decoding = {"strategy": "lookahead"}
    Options = DATOptions

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        self.graph_factor = self.opts.graph_factor
        if self.graph_factor < 1:
            raise ValueError(f"{self.arch}: graph_factor must be >= 1, got {self.graph_factor}")
        self.schedule = GlanceSchedule.parse(self.opts.glancing_schedule)
        paths = self.opts.dag_paths
        if paths not in ("anchored", "all"):
            raise ValueError(f"{self.arch}: dag_paths must be 'anchored' or 'all', got {paths!r}")
        self.anchored = paths == "anchored"
        self.link_q = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.link_k = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.length = None  # the graph size comes from the source; no length predictor

    def dag_target(self, batch):
        """The sequence the graph must generate. Anchored paths start and end at fixed
        vertices, so (as in DA-Transformer) the target is wrapped in BOS ... EOS that
        those two vertices emit; the literal Eq. 22 reading uses Y as is."""
        if not self.anchored:
            return batch.target, batch.target_lengths
        bos = torch.full_like(batch.target_eos[:, :1], self.dictionary.bos)
        return torch.cat([bos, batch.target_eos], dim=1), batch.target_lengths + 2

    def graph_sizes(self, enc_mask, target_lengths=None):
        sizes = torch.round(self.graph_factor * self.source_lengths(enc_mask).clamp(min=1).float()).long().clamp(min=2)
        if target_lengths is not None:
            # In training the graph must be able to hold the target.
            sizes = torch.maximum(sizes, target_lengths)
        return sizes

    def vertex_inputs(self, enc, enc_mask, sizes):
        return self.copy_inputs(enc, enc_mask, sizes)

    def run_graph(self, inputs, vertex_mask, enc, enc_mask):
        """Vertex logits (B, L, V), log E (B, L, L) and the last decoder states."""
        layer_logits, states = self.run_decoder(inputs, vertex_mask, enc, enc_mask)
        return layer_logits[-1], transition_log_probs(states, self.link_q, self.link_k, vertex_mask), states

    def first_pass_alignment(self, inputs, vertex_mask, enc, enc_mask, sizes, target, tgt_lengths):
        """No-gradient pass: best path for the gold target and the tokens it predicts there."""
        logits, trans, _ = self.run_graph(inputs, vertex_mask, enc, enc_mask)
        path = dag_best_alignment(target_token_logp(logits, target), trans, sizes, tgt_lengths, self.anchored)
        predicted = logits.argmax(-1).gather(1, path)
        return path, predicted

    def glance_inputs(self, inputs, path, predicted, target, eligible, gold_vectors, update):
        """Glancing on the best alignment: t = floor(lambda * Hamming) of the ``eligible``
        target positions give their gold vector to the vertex aligned with them."""
        ratio = self.schedule(update)
        counts = glance_counts(ratio, predicted, target, ~eligible)
        chosen = choose_glance_positions(torch.rand(target.shape, device=target.device), counts, ~eligible)
        vertex_mask, vertex_gold = scatter_to_vertices(path, chosen, inputs.size(1), gold_vectors.to(inputs.dtype))
        return torch.where(vertex_mask.unsqueeze(-1), vertex_gold, inputs)

    def dag_loss(self, logits, trans, sizes, target, tgt_lengths) -> torch.Tensor:
        ll = dag_log_likelihood(target_token_logp(logits, target), trans, sizes, tgt_lengths, self.anchored)
        # Per-sentence NLL divided by the target length, averaged over the batch.
        return (-ll / tgt_lengths.clamp(min=1).float()).mean()

    def losses(self, batch, update: int):
        target, tgt_lengths = self.dag_target(batch)
        enc, enc_mask = self.encode(batch.src)
        sizes = self.graph_sizes(enc_mask, tgt_lengths)
        inputs, vertex_mask = self.vertex_inputs(enc, enc_mask, sizes)
        eligible = torch.arange(target.size(1), device=target.device)[None, :] < tgt_lengths[:, None]
        if self.schedule(update) > 0:
            with torch.no_grad(), same_dropout(target.device):
                path, predicted = self.first_pass_alignment(inputs, vertex_mask, enc, enc_mask, sizes,
                                                            target, tgt_lengths)
                inputs = self.glance_inputs(inputs, path, predicted, target, eligible,
                                            self.embed.lookup(target), update)
        logits, trans, _ = self.run_graph(inputs, vertex_mask, enc, enc_mask)
        return {"dag": LossTerm(self.dag_loss(logits, trans, sizes, target, tgt_lengths))}

    # ------------------------------------------------------------ inference --
    @torch.no_grad()
    def graph_inference(self, enc, enc_mask):
        """What the DAG decoders need: best token and its log-prob per vertex (B, L),
        log E (B, L, L), the graph sizes (B,) and which vertices emit a word (B, L):
        in the anchored reading the first and last vertex stand for BOS and EOS."""
        # graph_factor x |X| vertices, at most one per decoder position (a long source
        # would otherwise ask for more vertices than the position table has).
        sizes = self.graph_sizes(enc_mask).clamp(max=self.cfg.max_positions)
        inputs, vertex_mask = self.vertex_inputs(enc, enc_mask, sizes)
        logits, trans, _ = self.run_graph(inputs, vertex_mask, enc, enc_mask)
        logp = torch.log_softmax(logits.float(), -1)
        logp[..., :6] = float("-inf")  # never emit specials
        best, tokens = logp.max(-1)
        vertices = torch.arange(tokens.size(1), device=tokens.device)[None, :]
        emit = vertices < sizes[:, None]
        if self.anchored:
            emit &= (vertices > 0) & (vertices < (sizes - 1)[:, None])
        return tokens, best.masked_fill(~emit, 0.0), trans, sizes, emit
