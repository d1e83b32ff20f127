"""Batch-1 decoding without per-token Python overhead, for the speed protocol (issue 27).

At batch size 1 on a GPU a decoder spends most of its time launching kernels from
Python, not computing: a transformer-base AT step is ~150 small kernels. The remedy is
to record a pass once and replay it, with ``torch.compile(mode="reduce-overhead")``
(Inductor, then CUDA graphs on a GPU) or a plain ``torch.cuda.CUDAGraph`` capture of
the eager code. Both need static shapes, which decoding does not have: the source
length, the predicted target length and the AT's growing key/value cache change from
sentence to sentence and from step to step.

:class:`GraphedDecoding` wraps a model for the unchanged decoding strategies
(``decode.generate``) and runs its heavy passes at static shapes:

* the encoder on the source right-padded to a power-of-two *bucket* (the padding is
  masked, as in any batch);
* length prediction, one graph per bucket;
* the NAT decoder pass (``forward_inference``, CMLM's ``predict_masked``, the DAG's
  ``graph_inference``) at a bucketed width: the predicted length is read back to the
  host once per sentence (the eager pass reads it too, to size its tensors), the pass
  runs on a twin of the model whose decoder width is the bucket
  (:func:`fixed_width_twin`), and the output is cut back to the real width;
* the AT's incremental step on a key/value cache of a fixed bucketed length
  (:class:`StaticCache`): each step writes its key and value at its position and
  attends over the whole cache with the later positions masked, and the beam reorder
  runs inside the same graph, so one step is one replay.

Powers of two keep the number of graphs small (at most 8 source buckets up to 1024
positions), so every graph is compiled or captured before the timing starts, and
they cost at most 2x padding, which at batch 1 on a GPU is launch-bound time, not
arithmetic. The search around the steps (top-k, reordering the hypotheses), the
DAG's lookahead/Viterbi walk and NPD's teacher rescoring stay eager.

Only the timing uses this: the decode rule's hypotheses are always eager. The speed
protocol decodes its subset both ways and counts the sentences whose hypotheses
differ (``hypotheses_differing`` in speed.json; tests/test_decode_graphs.py checks
identity on toy models of every architecture).

Modes (``evaluate.speed_graphs``, decode's ``--speed-graphs``):

* ``none``: eager only (the default; speed.json as before);
* ``compile``: ``torch.compile(mode="reduce-overhead", fullgraph=True,
  dynamic=False)``: Inductor kernels, and CUDA graphs on a GPU (Inductor's CPU code
  on a CPU: no graphs there);
* ``cuda_graphs``: ``torch.cuda.CUDAGraph`` capture of the eager code at the static
  shapes (no Inductor, no compile time; CUDA only);
* ``auto``: ``cuda_graphs`` on a CUDA device, ``compile`` elsewhere.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from aeqa_model.decode import max_positions
from aeqa_model.io import InputError
from aeqa_model.metrics.settings import SPEED_GRAPHS
from aeqa_model.models.base import masked_mean
from aeqa_model.models.cmlm import CMLM
from aeqa_model.models.sqs import SemanticQuantizer

# The smallest bucket: shorter sources and targets are padded to it.
SMALLEST_BUCKET = 8

# Graphs per compiled function: one per (source bucket, target bucket), well above
# what 8 power-of-two buckets give in practice. torch's default (8) would end in an
# error under fullgraph=True, not in a silent fall-back to eager.
RECOMPILE_LIMIT = 128


def resolve_mode(mode: str, device: torch.device) -> str:
    """The mode that runs on ``device``: ``auto`` resolved; ``cuda_graphs`` off CUDA
    is an InputError (the config asked for something this device cannot do)."""
    if mode not in SPEED_GRAPHS:
        raise InputError(f"speed_graphs: {mode!r} is not one of {', '.join(SPEED_GRAPHS)}")
    if mode == "auto":
        return "cuda_graphs" if device.type == "cuda" else "compile"
    if mode == "cuda_graphs" and device.type != "cuda":
        raise InputError(f"speed_graphs: cuda_graphs needs a CUDA device, the decode runs on {device}; "
                         f"use compile or auto")
    return mode


def bucket(n: int, limit: int) -> int:
    """The static width for ``n`` positions: the next power of two (at least
    SMALLEST_BUCKET), at most ``limit`` (the model's positions)."""
    width = SMALLEST_BUCKET
    while width < n:
        width *= 2
    return max(min(width, limit), n)


def _clone_outputs(out):
    """Graph outputs live in memory the next replay overwrites: the callers get copies."""
    if isinstance(out, tuple):
        return tuple(_clone_outputs(o) for o in out)
    return out.clone() if isinstance(out, torch.Tensor) else out


def _standard_strides(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the strides of a new tensor of its shape: compiled graphs are
    specialised on strides, and e.g. the AT's last tokens, a column of the growing
    hypotheses, would have new ones at every step (a recompilation per step)."""
    expected, step = [], 1
    for size in reversed(x.shape):
        expected.append(step)
        step *= max(size, 1)
    if x.stride() == tuple(reversed(expected)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


class CapturedGraph:
    """``fn`` captured into one CUDA graph at the shapes of its first call; later calls
    copy their inputs into the captured ones and replay it. Tensors ``fn`` reaches
    other than through its inputs (weights, a StaticCache) keep their addresses."""

    def __init__(self, fn):
        self.fn, self.graph, self.inputs, self.outputs = fn, None, None, None

    def __call__(self, *inputs):
        if self.graph is None:
            self._capture(inputs)
        for static, given in zip(self.inputs, inputs):
            static.copy_(given)
        self.graph.replay()
        return _clone_outputs(self.outputs)

    def _capture(self, inputs):
        self.inputs = [x.clone() for x in inputs]
        # Warm-up on a side stream first: lazy initialisations (cuBLAS workspaces,
        # kernel selection) must not happen inside the capture.
        device = self.inputs[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.graph(self.graph):
            self.outputs = self.fn(*self.inputs)


class Compiled:
    """``torch.compile`` of ``fn`` (one graph, static shapes); outputs copied, as
    reduce-overhead's CUDA graphs overwrite them on the next replay."""

    def __init__(self, fn, options: dict):
        self.fn = torch.compile(fn, fullgraph=True, dynamic=False, **options)

    def __call__(self, *inputs):
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return _clone_outputs(self.fn(*inputs))


class _FixedDecoderWidth:
    """Mixin of a model twin whose NAT decoder inputs are ``decoder_width`` positions
    long (the rest padding), however long the longest length asked for."""

    decoder_width: int

    def copy_inputs(self, enc, enc_mask, tgt_lengths, tgt_len=None):
        return super().copy_inputs(enc, enc_mask, tgt_lengths, self.decoder_width)


class _FixedWidthCMLM(_FixedDecoderWidth):
    """CMLM sizes its fully masked target itself (CMLM.forward_inference), not through
    copy_inputs: the same pass at the twin's width."""

    def forward_inference(self, enc, enc_mask, lengths, **_):
        tgt_mask = torch.arange(self.decoder_width, device=enc.device)[None, :] >= lengths[:, None]
        tokens = torch.full(tgt_mask.shape, self.dictionary.mask, device=enc.device).masked_fill(tgt_mask, self.pad)
        predicted, logp = self.predict_masked(enc, enc_mask, tokens, tgt_mask)
        return predicted, masked_mean(logp, tgt_mask)


class _NormsInGraph:
    """Mixin of a quantizer twin that computes the code norms ||e_k||^2 in the graph: the
    eager cache of SemanticQuantizer.code_norms is keyed on the codebook's data_ptr,
    which a graph cannot trace, and inside a graph the norms are one fused kernel."""

    def code_norms(self):
        return self.codebook.detach().float().pow(2).sum(1)


_TWIN_CLASSES: dict[tuple[type, type], type] = {}


def _twin(module, mixin, **attributes):
    """A shallow copy of ``module`` (its parameters, buffers and submodules shared, not
    copied) of a subclass that puts ``mixin`` first, with ``attributes`` set."""
    cls = type(module)
    if (cls, mixin) not in _TWIN_CLASSES:
        _TWIN_CLASSES[cls, mixin] = type(f"{cls.__name__}{mixin.__name__}", (mixin, cls), {})
    twin = copy.copy(module)
    twin.__class__ = _TWIN_CLASSES[cls, mixin]
    twin.__dict__.update(attributes)
    return twin


def fixed_width_twin(model, width: int):
    """A twin of ``model`` (the same parameters, buffers and submodules, shared, not
    copied) whose NAT decoder runs at ``width`` positions: its shapes depend on the
    bucket only, not on the predicted length. Its quantizer, if any, is a twin that
    graphs can trace (_NormsInGraph)."""
    twin = _twin(model, _FixedWidthCMLM if isinstance(model, CMLM) else _FixedDecoderWidth, decoder_width=width)
    quantizers = {name: _twin(child, _NormsInGraph) for name, child in model.named_children()
                  if isinstance(child, SemanticQuantizer)}
    if quantizers:
        twin.__dict__["_modules"] = {**model._modules, **quantizers}
    return twin


class StaticCache:
    """The AT decoder's keys and values at fixed shapes: self-attention (N, H, length,
    d) per layer, written one position per step; cross-attention (N, H, S, d) per
    layer, computed once per sentence. Their addresses never change, so a graph can
    read and update them in place."""

    def __init__(self, model, rows: int, source_width: int, length: int, dtype, device):
        heads = model.decoder.layers[0].self_attn.heads
        head_dim = model.decoder.layers[0].self_attn.head_dim
        layers = len(model.decoder.layers)

        def buffers(width):
            out = [torch.zeros(rows, heads, width, head_dim, dtype=dtype, device=device) for _ in range(layers)]
            for t in out:
                # Mutated inside compiled graphs: marked static, reduce-overhead keeps
                # CUDA graphs for them (as for Hugging Face's static cache).
                torch._dynamo.mark_static_address(t)
            return out

        self.keys, self.values = buffers(length), buffers(length)
        self.cross_keys, self.cross_values = buffers(source_width), buffers(source_width)
        self.length = length

    @torch.no_grad()
    def start(self, model, enc: torch.Tensor) -> None:
        """A new sentence: the cross-attention keys and values of ``enc`` (N, S, D), the
        self-attention cache cleared (masked anyway; zeros keep it finite)."""
        for layer, k, v in zip(model.decoder.layers, self.cross_keys, self.cross_values):
            attn = layer.cross_attn
            k.copy_(attn._split(attn.k_proj(enc)))
            v.copy_(attn._split(attn.v_proj(enc)))
        for t in (*self.keys, *self.values):
            t.zero_()


def _attend(attn, q, k, v, mask):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, h, t, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, h * d))


def static_decoder_step(model, cache: StaticCache, last_tokens: torch.Tensor, position: torch.Tensor,
                        reorder: torch.Tensor, enc_attend: torch.Tensor) -> torch.Tensor:
    """One incremental step of the AT decoder at fixed shapes: the cache rows reordered
    to ``reorder`` (the beams kept by the previous step), the token ``last_tokens`` (N, 1)
    at ``position`` (a 1-element tensor, so that one graph serves every step) embedded,
    its key and value written at that position, and attention over the whole cache with
    the later positions masked. ``enc_attend`` (N, 1, 1, S): True at real source
    positions. Returns the (N, V) logits. The same arithmetic as DecoderLayer.forward
    with the growing cache (tests/test_decode_graphs.py compares the two)."""
    for buffers in (cache.keys, cache.values):
        for t in buffers:
            t.copy_(t.index_select(0, reorder))
    embed = model.embed
    x = embed.dropout(embed.lookup(last_tokens) + embed.positions.index_select(0, position).to(embed.weight.dtype))
    seen = (torch.arange(cache.length, device=position.device) <= position)[None, None, None, :]
    for layer, k, v, ck, cv in zip(model.decoder.layers, cache.keys, cache.values, cache.cross_keys,
                                   cache.cross_values):
        attn = layer.self_attn
        k.index_copy_(2, position, attn._split(attn.k_proj(x)))
        v.index_copy_(2, position, attn._split(attn.v_proj(x)))
        x = layer.norm1(x + layer.dropout(_attend(attn, attn._split(attn.q_proj(x)), k, v, seen)))
        cross = layer.cross_attn
        x = layer.norm2(x + layer.dropout(_attend(cross, cross._split(cross.q_proj(x)), ck, cv, enc_attend)))
        x = layer.norm3(x + layer.dropout(layer.ffn(x)))
    return embed.logits(x)[:, -1]


class StaticSteps:
    """beam.py's incremental steps (see beam.CachedSteps) on a StaticCache, each step
    one graph call; the reorder is deferred into the next step's graph."""

    def __init__(self, graphed: "GraphedDecoding", enc, enc_mask, max_len: int):
        model = graphed.model
        rows, source_width = enc.shape[:2]
        length = bucket(max_len, max_positions(model))
        key = ("at_step", rows, source_width, length)
        cache = graphed.caches.get(key)
        if cache is None:
            cache = graphed.caches[key] = StaticCache(model, rows, source_width, length, enc.dtype, enc.device)
        cache.start(model, enc)
        self.graphed, self.key, self.cache = graphed, key, cache
        self.enc_attend = ~enc_mask[:, None, None, :]
        self.positions = torch.arange(length, device=enc.device)
        self.unchanged = self.keep = torch.arange(rows, device=enc.device)

    def logits(self, last_tokens: torch.Tensor, step: int) -> torch.Tensor:
        cache, model = self.cache, self.graphed.model
        logits = self.graphed.run(self.key, lambda tokens, position, reorder, attend: static_decoder_step(
            model, cache, tokens, position, reorder, attend),
            last_tokens, self.positions[step:step + 1], self.keep, self.enc_attend)
        self.keep = self.unchanged                    # the reorder is done
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        self.keep = index


class GraphedDecoding:
    """``model`` as the decoding strategies see it (every attribute is the model's),
    with encode, predict_lengths, forward_inference, predict_masked, graph_inference and
    the AT's incremental steps run at static shapes through graphs (module docstring).
    ``generate(GraphedDecoding(model, "compile"), src, decoding)`` decodes like
    ``generate(model, src, decoding)``.

    ``compile_options``: torch.compile's arguments (default ``mode="reduce-overhead"``;
    the tests use ``backend="aot_eager"``, which traces the same graphs without
    generating code)."""

    def __init__(self, model, mode: str, compile_options: dict | None = None):
        if mode not in ("compile", "cuda_graphs"):
            raise ValueError(f"GraphedDecoding runs compile or cuda_graphs (resolve_mode first), not {mode!r}")
        self.model, self.mode = model, mode
        self.compile_options = dict(compile_options or {"mode": "reduce-overhead"})
        self.graphs: dict = {}
        self.caches: dict = {}
        self.twins: dict = {}

    def __getattr__(self, name):
        return getattr(self.model, name)

    def run(self, key, fn, *inputs):
        """``fn(*inputs)`` through the graph of ``key`` (made on first use)."""
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = (CapturedGraph(fn) if self.mode == "cuda_graphs"
                                        else Compiled(fn, self.compile_options))
        with torch.no_grad():
            return graph(*(_standard_strides(x) for x in inputs))

    def twin(self, width: int):
        if width not in self.twins:
            self.twins[width] = fixed_width_twin(self.model, width)
        return self.twins[width]

    # -- the passes the strategies call -------------------------------------------------
    def encode(self, src: torch.Tensor):
        width = bucket(src.size(1), max_positions(self.model))
        padded = F.pad(src, (0, width - src.size(1)), value=self.model.pad)
        return self.run(("encode", tuple(padded.shape)), self.model.encode, padded)

    def predict_lengths(self, enc, enc_mask, beam: int = 1):
        model = self.model
        return self.run(("lengths", tuple(enc.shape), beam),
                        lambda e, m: model.predict_lengths(e, m, beam=beam), enc, enc_mask)

    def forward_inference(self, enc, enc_mask, lengths, **options):
        # The host reads the longest length, as the eager pass does to size its tensors.
        real = int(lengths.max().clamp(min=1))
        width = bucket(real, max_positions(self.model))
        twin = self.twin(width)
        key = ("nat", tuple(enc.shape), tuple(lengths.shape), width, tuple(sorted(options.items())))
        tokens, score = self.run(key, lambda e, m, n: twin.forward_inference(e, m, n, **options),
                                 enc, enc_mask, lengths)
        return tokens[:, :real], score

    def predict_masked(self, enc, enc_mask, tokens, tgt_mask):
        real = tokens.size(1)
        width = bucket(real, max_positions(self.model))
        tokens = F.pad(tokens, (0, width - real), value=self.model.pad)
        tgt_mask = F.pad(tgt_mask, (0, width - real), value=True)
        predicted, logp = self.run(("masked", tuple(enc.shape), tuple(tokens.shape)), self.model.predict_masked,
                                   enc, enc_mask, tokens, tgt_mask)
        return predicted[:, :real], logp[:, :real]

    def graph_inference(self, enc, enc_mask):
        model = self.model
        sizes = model.graph_sizes(enc_mask).clamp(max=model.cfg.max_positions)
        real = int(sizes.max())                   # read back as the eager pass does
        width = bucket(real, max_positions(model))
        twin = self.twin(width)
        tokens, best, trans, sizes, emit = self.run(("dag", tuple(enc.shape), width), twin.graph_inference,
                                                    enc, enc_mask)
        return tokens[:, :real], best[:, :real], trans[:, :real, :real], sizes, emit[:, :real]

    def decoder_steps(self, enc, enc_mask, max_len: int) -> StaticSteps:
        return StaticSteps(self, enc, enc_mask, max_len)


def optimised(model, mode: str, compile_options: dict | None = None):
    """``model`` for decoding under ``mode`` (already resolved): the model itself for
    ``none``, else its GraphedDecoding."""
    return model if mode == "none" else GraphedDecoding(model, mode, compile_options)
