"""Decoding a directed acyclic graph (DA-Transformer, AEQA-DAT).

* ``lookahead`` (Huang et al. 2022): from vertex 0, repeatedly move to the vertex
  j maximizing log E[i, j] + max_y log P(y | j) until the last vertex; emit the
  best token of every visited vertex.
* ``viterbi`` (Shao et al. 2022): the path maximizing
  sum log E + sum max_y log P(y | v), found for every path length k by dynamic
  programming; the length is chosen by score / k**lenpen.
Both read ``model.graph_inference``; the loops run over path steps, each step
vectorized over the batch and the vertices.
"""
from __future__ import annotations

import torch

from aeqa_model.decode import strip
from aeqa_model.models.base import pack_left
from aeqa_model.models.dat import NEG, backtrack


def emit_path(model, tokens, emit, path, path_mask):
    """Tokens of the emitting vertices along ``path`` (B, S) where ``path_mask``."""
    keep = path_mask & emit.gather(1, path)
    return strip(pack_left(tokens.gather(1, path), keep, model.pad), model.pad, model.dictionary.eos)


@torch.no_grad()
def lookahead_decode(model, src, teacher=None, reference=None, **_):
    enc, enc_mask = model.encode(src)
    tokens, best, trans, sizes, emit = model.graph_inference(enc, enc_mask)
    bsz, size = tokens.shape
    rows = torch.arange(bsz, device=src.device)
    current = torch.zeros(bsz, dtype=torch.long, device=src.device)
    steps = [current]
    for _ in range(size - 1):
        active = current < sizes - 1
        if not bool(active.any()):
            break
        nxt = (trans[rows, current] + best).argmax(-1)
        current = torch.where(active, nxt, current)
        steps.append(torch.where(active, current, torch.full_like(current, -1)))
    path = torch.stack(steps, dim=1)
    return emit_path(model, tokens, emit, path.clamp(min=0), path.ge(0))


@torch.no_grad()
def viterbi_decode(model, src, teacher=None, reference=None, lenpen: float = 1.0, **_):
    enc, enc_mask = model.encode(src)
    tokens, best, trans, sizes, emit = model.graph_inference(enc, enc_mask)
    bsz, size = tokens.shape
    vertices = torch.arange(size, device=src.device)
    last = (sizes - 1)[:, None]
    g = best.masked_fill(vertices[None, :] != 0, NEG)                       # paths of 1 vertex
    end_scores = [g.gather(1, last).squeeze(1)]
    pointers = []
    for _ in range(1, size):
        scores, arg = (g[:, :, None] + trans).max(dim=1)
        g = scores + best
        pointers.append(arg)
        end_scores.append(g.gather(1, last).squeeze(1))
    end_scores = torch.stack(end_scores, dim=1)                              # (B, k = 1..L)
    counts = torch.arange(1, size + 1, device=src.device, dtype=torch.float)
    normalized = end_scores / counts[None, :] ** lenpen
    normalized = normalized.masked_fill(end_scores <= NEG / 2, float("-inf"))
    lengths = normalized.argmax(1) + 1
    path = backtrack(pointers, sizes - 1, lengths, size)
    path_mask = vertices[None, :] < lengths[:, None]
    return emit_path(model, tokens, emit, path, path_mask)
