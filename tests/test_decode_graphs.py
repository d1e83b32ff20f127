"""Batch-1 decoding through graphs (decode/graphs.py, issue 27 item 3) decodes exactly as
eager, and the speed protocol reports both ways only when asked.

What a CPU can check: the static-shape passes (bucketed source, fixed decoder width,
fixed-size AT cache) give the eager outputs; they trace into one graph each with
torch.compile(fullgraph=True, dynamic=False) (a graph break or a host read inside
would fail it); they have no Python-level host syncs (forbid_host_syncs, what a CUDA
graph capture needs); and Inductor's reduce-overhead mode decodes as eager on a CPU.
Most tests compile with backend="aot_eager": the same Dynamo graphs and AOT
functionalisation as Inductor gets, without its code generation (minutes on a CPU).
What a CPU cannot check: the CUDA graphs themselves (reduce-overhead's cudagraph trees,
decode.graphs.CapturedGraph) and Inductor's GPU kernels; benchmarks/gpu_check.sh runs
them, and the speed protocol counts differing hypotheses on whatever device it runs.
"""
from __future__ import annotations

import json

import pytest
import torch

from aeqa_model.decode import generate
from aeqa_model.decode.cli import main
from aeqa_model.decode.graphs import (GraphedDecoding, StaticCache, bucket, fixed_width_twin, resolve_mode,
                                      static_decoder_step)
from aeqa_model.io import InputError
from aeqa_model.models.build import build_model, model_payload
from aeqa_model.models.hostsync import forbid_host_syncs

TRACE_ONLY = {"backend": "aot_eager"}


def toy(arch, dictionary, **options):
    torch.manual_seed(0)
    return build_model({"arch": arch, "size": "tiny", **options}, dictionary).eval()


def sources(d):
    """Three sources in two buckets (8 and 16 positions): graphs are reused and made anew."""
    return [torch.tensor([[7, 8, 9, 10, d.eos]]), torch.tensor([[12, 13, d.eos]]),
            torch.tensor([[6 + i % 20 for i in range(11)] + [d.eos]])]


CASES = [
    ("at", {}, {"strategy": "beam", "beam": 4}),
    ("vanilla_nat", {}, {"strategy": "argmax", "length_beam": 2}),
    ("glat", {}, {"strategy": "npd", "candidates": 3, "rerank": "self"}),
    ("ctc", {}, {"strategy": "argmax"}),
    ("cmlm", {}, {"strategy": "mask_predict", "iterations": 3, "length_beam": 2}),
    ("dat", {"graph_factor": 2}, {"strategy": "viterbi"}),
    ("aeqa_nat", {"codebook_size": 16}, {"strategy": "aeqa_two_pass", "lambda_inf": 0.4}),
    ("aeqa_dat", {"codebook_size": 16}, {"strategy": "lookahead"}),
]


@pytest.mark.parametrize("arch,options,decoding", CASES, ids=[f"{c[0]}-{c[2]['strategy']}" for c in CASES])
def test_graphed_decoding_gives_the_eager_hypotheses(dictionary, arch, options, decoding):
    model = toy(arch, dictionary, **options)
    graphed = GraphedDecoding(model, "compile", TRACE_ONLY)
    for src in sources(dictionary):
        assert generate(graphed, src, decoding) == generate(model, src, decoding)
    kinds = {key[0] for key in graphed.graphs}
    assert "encode" in kinds and kinds & {"at_step", "nat", "masked", "dag"}, kinds   # the graphs ran, not eager


def test_the_static_at_step_is_the_growing_cache_step(dictionary):
    """Logits of static_decoder_step (fixed-size cache, beam reorder inside the step)
    against ATTransformer.decoder_logits with its growing cache, over several steps
    with a reorder between them; then the same through a compiled graph."""
    model = toy("at", dictionary)
    d = dictionary
    src = torch.tensor([[7, 8, 9, 10, d.eos], [11, 12, d.eos, d.pad, d.pad]]).repeat_interleave(2, 0)   # 2 x 2 beams
    enc, enc_mask = model.encode(src)
    graphed = GraphedDecoding(model, "compile", TRACE_ONLY)
    caches, steps = [dict() for _ in model.decoder.layers], graphed.decoder_steps(enc, enc_mask, max_len=6)
    static = StaticCache(model, 4, enc.size(1), 8, enc.dtype, enc.device)
    static.start(model, enc)
    keep = torch.arange(4)
    tokens = torch.full((4, 1), d.bos)
    # Every row its own history (tokens differ per row), so a reorder changes the cache.
    for step, reorder in enumerate([None, torch.tensor([1, 0, 3, 2]), torch.tensor([0, 0, 3, 2])]):
        if reorder is not None:
            for cache in caches:
                cache["self"] = {k: v.index_select(0, reorder) for k, v in cache["self"].items()}
            steps.reorder(reorder)
            keep = reorder
        expected = model.decoder_logits(tokens, enc, enc_mask, cache=caches, start=step)[:, -1]
        by_hand = static_decoder_step(model, static, tokens, torch.tensor([step]), keep, ~enc_mask[:, None, None, :])
        assert torch.allclose(by_hand, expected, atol=1e-5), step
        assert torch.allclose(steps.logits(tokens, step), expected, atol=1e-5), step
        keep = torch.arange(4)                               # the reorder is applied once
        tokens = torch.tensor([[6], [7], [8], [9]]) + step


@pytest.mark.parametrize("arch", ["vanilla_nat", "cmlm", "aeqa_nat"])
def test_the_nat_pass_at_a_bucketed_width_is_the_eager_pass(dictionary, arch):
    """Tokens and scores of forward_inference through GraphedDecoding (the source padded
    to its bucket, the decoder at a fixed width, cut back) against the eager pass."""
    model = toy(arch, dictionary, **({"codebook_size": 16} if arch == "aeqa_nat" else {}))
    graphed = GraphedDecoding(model, "compile", TRACE_ONLY)
    src = torch.tensor([[7, 8, 9, 10, 11, dictionary.eos]])
    enc, enc_mask = model.encode(src)
    lengths = torch.tensor([3, 6])
    tokens, score = model.forward_inference(enc.repeat(2, 1, 1), enc_mask.repeat(2, 1), lengths)
    g_enc, g_mask = graphed.encode(src)
    assert g_enc.size(1) == 8 and bool(g_mask[0, 6:].all())                # padded to the bucket, masked
    g_tokens, g_score = graphed.forward_inference(g_enc.repeat(2, 1, 1), g_mask.repeat(2, 1), lengths)
    assert torch.equal(g_tokens, tokens)
    assert torch.allclose(g_score, score, atol=1e-5)


def test_the_static_passes_have_no_host_syncs(dictionary):
    """What a CUDA graph capture needs: no Python-level read-back inside the passes
    (forbid_host_syncs: the CPU stand-in for a GPU's sync check), for the NAT pass of
    AEQA-NAT (quantizer included), the DAG pass and the AT step."""
    d = dictionary
    src = torch.tensor([[7, 8, 9, 10, d.eos, d.pad, d.pad, d.pad]])
    for arch, options in (("aeqa_nat", {"codebook_size": 16}), ("dat", {"graph_factor": 2})):
        model = toy(arch, d, **options)
        twin = fixed_width_twin(model, 16)
        enc, enc_mask = model.encode(src)
        with forbid_host_syncs():
            if arch == "dat":
                tokens = twin.graph_inference(enc, enc_mask)[0]
            else:
                tokens, _ = twin.forward_inference(enc, enc_mask, model.predict_lengths(enc, enc_mask)[:, 0],
                                                   lambda_inf=0.4)
        assert tokens.size(1) == 16
    model = toy("at", d)
    enc, enc_mask = model.encode(src)
    cache = StaticCache(model, 1, 8, 16, enc.dtype, enc.device)
    cache.start(model, enc)
    with forbid_host_syncs():
        static_decoder_step(model, cache, torch.tensor([[d.bos]]), torch.tensor([0]), torch.tensor([0]),
                            ~enc_mask[:, None, None, :])


def test_inductor_reduce_overhead_decodes_as_eager(dictionary):
    """The configured path (torch.compile mode="reduce-overhead", Inductor; no CUDA
    graphs on a CPU) for a NAT and the AT, one source bucket (Inductor compiles slowly)."""
    src = torch.tensor([[7, 8, 9, 10, dictionary.eos]])
    for arch, decoding in (("vanilla_nat", {"strategy": "argmax"}), ("at", {"strategy": "greedy"})):
        model = toy(arch, dictionary)
        assert generate(GraphedDecoding(model, "compile"), src, decoding) == generate(model, src, decoding)


def test_buckets_and_modes():
    assert [bucket(n, 1024) for n in (1, 8, 9, 17, 1000)] == [8, 8, 16, 32, 1024]
    assert bucket(60, 64) == 64 and bucket(3, 4) == 4
    cpu = torch.device("cpu")
    assert resolve_mode("auto", cpu) == "compile" and resolve_mode("none", cpu) == "none"
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA device"):
        resolve_mode("cuda_graphs", cpu)


def decode(tmp_path, corpus_dir, model, reference, decoding, *extra):
    speed = tmp_path / "speed.json"
    code = main(["--model", str(model), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", json.dumps(decoding), "--tgt-lang", "en", "--out-tok", str(tmp_path / "hyp.tok"),
                 "--speed-out", str(speed), "--speed-reference", str(reference), "--speed-subset", "3",
                 "--speed-warmup", "1", "--speed-rounds", "1", "--device", "cpu", *extra])
    return code, (json.loads(speed.read_text()) if speed.exists() else None), tmp_path / "hyp.tok"


# speed.json's keys before issue 27 item 3 (a NAT timed against the AT).
KEYS_BEFORE = {"latency_ms_per_sentence", "at_latency_ms_per_sentence", "timing_rounds",
               "throughput_sentences_per_s", "throughput_max_tokens", "source_truncation", "batch_size",
               "n_sentences", "warmup", "device", "dtype", "threads", "torch", "at_throughput_sentences_per_s",
               "at_decoding", "speedup"}


def save(path, arch, dictionary):
    torch.save(model_payload(toy(arch, dictionary)), path)
    return path


def test_speed_json_reports_both_ways_when_on_and_as_before_when_off(tmp_path, corpus_dir, dictionary):
    glat, at = save(tmp_path / "glat.pt", "glat", dictionary), save(tmp_path / "at.pt", "at", dictionary)
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    code, off, hyps_off = decode(tmp_path / "off", corpus_dir, glat, at, {"strategy": "argmax"})
    assert code == 0 and set(off) == KEYS_BEFORE
    code, on, hyps_on = decode(tmp_path / "on", corpus_dir, glat, at, {"strategy": "argmax"},
                               "--speed-graphs", "compile", "--speed-compile-backend", "aot_eager")
    assert code == 0 and set(on) == KEYS_BEFORE | {"speed_graphs", "eager", "optimised"}
    assert hyps_on.read_text() == hyps_off.read_text()                       # the hypotheses stay eager
    assert on["speed_graphs"] == "compile" and on["optimised"]["hypotheses_differing"] == 0
    for way in ("eager", "optimised"):
        timing = on[way]
        assert timing["latency_ms_per_sentence"] > 0 and timing["at_latency_ms_per_sentence"] > 0
        assert timing["speedup"] == pytest.approx(timing["at_latency_ms_per_sentence"]
                                                  / timing["latency_ms_per_sentence"])
    # The speed-up column reads the top level: the optimised way.
    assert {key: on[key] for key in ("latency_ms_per_sentence", "at_latency_ms_per_sentence", "speedup")} == {
        key: on["optimised"][key] for key in ("latency_ms_per_sentence", "at_latency_ms_per_sentence", "speedup")}


def test_the_at_over_itself_is_1x_both_ways_and_cuda_graphs_need_cuda(tmp_path, corpus_dir, dictionary):
    at = save(tmp_path / "at.pt", "at", dictionary)
    beam = {"strategy": "beam", "beam": 4}
    code, speed, _ = decode(tmp_path, corpus_dir, at, at, beam, "--speed-reference-decoding", json.dumps(beam),
                            "--speed-graphs", "compile", "--speed-compile-backend", "aot_eager")
    assert code == 0
    assert speed["speedup"] == speed["eager"]["speedup"] == speed["optimised"]["speedup"] == 1.0
    assert speed["optimised"]["hypotheses_differing"] == 0
    code, _, _ = decode(tmp_path, corpus_dir, at, at, beam, "--speed-graphs", "cuda_graphs")
    assert code == 2
