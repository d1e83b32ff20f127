"""Entry point of the decode and distill rules: translate a binarized split.

Writes the hypotheses as BPE text, BPE-removed tokenized text and detokenized
text (in the source order), and optionally times batch-1 decoding of this
model and of the AT reference in the same process (speed.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.bpe import remove_bpe
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.decode import check_decoding, generate, same_decoding
from aeqa_model.decode.graphs import SPEED_GRAPHS, GraphedDecoding, resolve_mode
from aeqa_model.decode.timing import interleaved_items, sync
from aeqa_model.device import pick_device
from aeqa_model.io import EXIT_BAD_INPUT, EXIT_FAILED, InputError, os_error_message, write_json, write_lines
from aeqa_model.metrics.settings import DEFAULTS as EVALUATE_DEFAULTS
from aeqa_model.models.build import load_model


def shard_indices(n: int, shard: int, num_shards: int) -> np.ndarray:
    """Contiguous shards so that gathering is a concatenation in order."""
    bounds = np.linspace(0, n, num_shards + 1).astype(int)
    return np.arange(bounds[shard], bounds[shard + 1])


def check_dictionary(model, model_path, dictionary: Dictionary, dict_path) -> None:
    """The model's dictionary (stored in its checkpoint) must be the data's ``dict.txt``:
    with another run's model, ids would be mapped through the wrong table (issue 18)."""
    mine, theirs = model.dictionary.symbols, dictionary.symbols
    if mine == theirs:
        return
    first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    at = (f"first difference at id {first}: {mine[first] if first < len(mine) else '(none)'!r} in the model, "
          f"{theirs[first] if first < len(theirs) else '(none)'!r} in {Path(dict_path).name}")
    raise InputError(f"{model_path}: the model's dictionary ({len(mine)} symbols) is not the data's {dict_path} "
                     f"({len(theirs)} symbols; {at}). The model was trained on other data (another run, or before "
                     f"the data changed): use the model trained on this data (delete {model_path} and rerun its "
                     f"train rule), or pass the --dict and binarized data it was trained on")


def long_sources(corpus: ParallelCorpus, indices: np.ndarray) -> dict:
    """The sentences of ``indices`` longer than the model's positions allow: a batch keeps
    their first ``max_tokens`` tokens (issue 18: truncate, count and log; see decode())."""
    cap = corpus.max_tokens_per_side
    long = indices[corpus.src.sizes[indices] > cap]
    return {"sentences": int(len(long)), "max_tokens": int(cap),
            "lines": [int(i) + 1 for i in long[:20]],
            "longest": int(corpus.src.sizes[long].max()) if len(long) else 0}


def translate(model, corpus: ParallelCorpus, indices: np.ndarray, decoding: dict, device, max_tokens: int,
              teacher=None, desc="decode") -> list[list[int]]:
    """Decode ``indices`` in length-sorted batches; returns hypotheses in the given order.
    Sources longer than the model's positions are cut (ParallelCorpus.batch)."""
    lengths = np.minimum(corpus.src.sizes[indices], corpus.max_tokens_per_side)
    order = indices[np.argsort(lengths, kind="stable")]
    results: dict[int, list[int]] = {}
    batch_ids: list[int] = []
    width = 0
    needs_reference = decoding.get("strategy") == "oracle"

    def flush():
        if not batch_ids:
            return
        batch = corpus.batch(batch_ids).to(device)
        hyps = generate(model, batch.src, decoding, teacher=teacher,
                        reference=batch.target if needs_reference else None)
        for i, hyp in zip(batch_ids, hyps):
            results[i] = hyp
        bar.update(len(batch_ids))

    with tqdm(total=len(indices), desc=desc, file=sys.stderr, mininterval=2.0) as bar:
        for i in order:
            size = min(int(corpus.src.sizes[i]), corpus.max_tokens_per_side) + 2
            if batch_ids and max(width, size) * (len(batch_ids) + 1) > max_tokens:
                flush()
                batch_ids, width = [], 0
            batch_ids.append(int(i))
            width = max(width, size)
        flush()
    return [results[int(i)] for i in indices]


def time_batch1(model, corpus, indices, decoding, device, warmup: int, teacher=None, reference=None,
                reference_decoding=None, rounds: int = 3, graphs: str = "none", compile_options=None) -> dict:
    """Wall-clock latency per sentence at batch size 1 (after ``warmup`` sentences) of
    ``model``, and of the AT ``reference`` when given, timed side by side: sentence by
    sentence in alternation over ``rounds`` rounds, the median round of each
    (decode/timing.py), so that a loaded machine slows both alike and their ratio, the
    speed-up, stays meaningful.

    ``graphs`` (a resolved decode.graphs mode other than ``none``): each is also timed
    optimised (GraphedDecoding), all four functions in the same interleaved rounds; the
    top-level latencies are then the optimised ones (what the speed-up column reads),
    ``eager`` and ``optimised`` hold both ways. Before the timing, every sentence is
    decoded optimised once, untimed: every graph is compiled or captured outside the
    timing, and the hypotheses are compared with the eager ones."""
    # Oracle decoding (Fig. 1) reads the reference; it is timed with it like the rest.
    needs_reference = decoding.get("strategy") == "oracle"

    def decoder(net, dec, helper, with_reference):
        def one(i):
            batch = corpus.batch([int(i)]).to(device)
            return generate(net, batch.src, dec, teacher=helper, reference=batch.target if with_reference else None)
        return one

    plain = {"model": (model, decoding, teacher, needs_reference)}
    if reference is not None:
        plain["at"] = (reference, reference_decoding, None, False)
    fns = {name: decoder(*spec) for name, spec in plain.items()}
    for fn in fns.values():
        for i in indices[:warmup]:
            fn(i)
    differing = 0
    if graphs != "none":
        for name, (net, dec, helper, with_reference) in plain.items():
            fast = decoder(GraphedDecoding(net, graphs, compile_options), dec, helper, with_reference)
            differing += sum(fast(i) != fns[name](i) for i in indices)
            fns[f"{name}_optimised"] = fast
        if differing:
            logging.warning("speed_graphs %s: %d of %d timed decodes differ optimised from eager (floating-point "
                            "rounding at a near-tie; the timing is of the same search)", graphs, differing,
                            len(indices) * len(plain))
    seconds = interleaved_items(fns, list(indices), device, rounds=rounds, warmup=0)
    n = max(len(indices), 1)
    ways = {}
    for way, suffix in (("eager", ""), ("optimised", "_optimised")):
        if f"model{suffix}" in seconds:
            ways[way] = {"latency_ms_per_sentence": 1000.0 * seconds[f"model{suffix}"] / n}
            if reference is not None:
                ways[way]["at_latency_ms_per_sentence"] = 1000.0 * seconds[f"at{suffix}"] / n
    out = {**ways["optimised" if graphs != "none" else "eager"], "timing_rounds": rounds}
    if graphs != "none":
        out.update(speed_graphs=graphs, eager=ways["eager"],
                   optimised={**ways["optimised"], "hypotheses_differing": int(differing)})
    return out


def time_throughput(model, corpus, indices, decoding, device, max_tokens: int, teacher=None) -> float:
    """Sentences per second when the subset is decoded in large length-sorted batches."""
    sync(device)
    start = time.perf_counter()
    translate(model, corpus, indices, decoding, device, max_tokens, teacher=teacher, desc="throughput")
    sync(device)
    return len(indices) / max(time.perf_counter() - start, 1e-9)


def graph_compile_options(backend: str) -> dict:
    """torch.compile's arguments for decode.graphs: Inductor with CUDA graphs where it can
    (reduce-overhead), any other backend as it is (it takes no mode)."""
    return {"mode": "reduce-overhead"} if backend == "inductor" else {"backend": backend}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--dict", required=True)
    p.add_argument("--src-prefix", required=True)
    p.add_argument("--tgt-prefix", required=True, help="reference ids (oracle decoding) and line count")
    p.add_argument("--decoding", required=True, help="JSON decoding config")
    p.add_argument("--teacher", default=None, help="AT model for NPD reranking")
    p.add_argument("--tgt-lang", required=True)
    p.add_argument("--out-bpe", default=None)
    p.add_argument("--out-tok", required=True)
    p.add_argument("--out-detok", default=None)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--speed-out", default=None)
    p.add_argument("--speed-reference", default=None, help="AT model timed with --speed-reference-decoding")
    p.add_argument("--speed-reference-decoding", default='{"strategy": "beam", "beam": 4}')
    p.add_argument("--speed-subset", type=int, default=EVALUATE_DEFAULTS["speed_subset"])
    p.add_argument("--speed-warmup", type=int, default=EVALUATE_DEFAULTS["speed_warmup"])
    p.add_argument("--speed-rounds", type=int, default=3,
                   help="rounds of side-by-side batch-1 timing (the median round counts)")
    p.add_argument("--speed-graphs", choices=SPEED_GRAPHS, default=EVALUATE_DEFAULTS["speed_graphs"],
                   help="also time batch-1 decoding through graphs, model and AT alike (decode/graphs.py); "
                        "speed.json then reports both ways and its speed-up is the optimised one")
    p.add_argument("--speed-compile-backend", default="inductor",
                   help="torch.compile backend of --speed-graphs compile (inductor: mode reduce-overhead; aot_eager "
                        "traces the same graphs without generating code: a quick check that they compile)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        return run_decode(args)
    except OSError as err:  # a full disk: one line naming the file (outputs are atomic), not a traceback
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return EXIT_FAILED


def run_decode(args) -> int:
    """Decode with the parsed flags; 0, or 2 for unusable input (the message says why)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)  # InputError for a CUDA device where torch sees none
        graphs = resolve_mode(args.speed_graphs, device) if args.speed_out else "none"
        decoding = json.loads(args.decoding)
        # Before any model is loaded: a bad option (beam 0, `four`) would otherwise end
        # deep in the search with a TypeError or RuntimeError.
        problems = check_decoding("<entry>", decoding) if isinstance(decoding, dict) else [
            "it must be a JSON object with a strategy"]
        if problems:
            raise InputError(f"--decoding {args.decoding}: {'; '.join(problems)} (fix the decodings entry in the "
                             f"config and rerun)")
        dictionary = Dictionary.load(args.dict)
        model = load_model(args.model, device)
        check_dictionary(model, args.model, dictionary, args.dict)
        teacher = load_model(args.teacher, device) if args.teacher else None
        if teacher is not None:
            check_dictionary(teacher, args.teacher, dictionary, args.dict)
        # The AT timed for the speed-up: checked now, not after the whole decode.
        reference = load_model(args.speed_reference, "cpu") if args.speed_out and args.speed_reference else None
        if reference is not None:
            check_dictionary(reference, args.speed_reference, dictionary, args.dict)
        positions = min(m.cfg.max_positions for m in (model, teacher) if m is not None)
        corpus = ParallelCorpus(args.src_prefix, args.tgt_prefix, dictionary, max_positions=positions)
    except json.JSONDecodeError as err:
        print(f"error: --decoding: not valid JSON ({err}); it must be the decodings entry as JSON", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    indices = shard_indices(len(corpus), args.shard, args.num_shards)
    # Over-long sources are cut to the model's positions, counted and logged (and recorded
    # in speed.json, which evaluate copies into metrics.json's provenance): a researcher
    # gets every line scored and keeps the job, and the count says how many were cut.
    truncation = long_sources(corpus, indices)
    if truncation["sentences"]:
        logging.warning("%d of %d source sentences of %s are longer than the model's %d tokens (max_positions %d "
                        "less BOS/EOS; longest %d) and are cut to it: their hypotheses translate the first %d "
                        "tokens only (use a model with more max_positions to translate them whole). "
                        "Lines (1-based, first 20): %s", truncation["sentences"], len(indices),
                        args.src_prefix, truncation["max_tokens"], positions, truncation["longest"],
                        truncation["max_tokens"], ", ".join(map(str, truncation["lines"])))
    hyps = translate(model, corpus, indices, decoding, device, args.max_tokens, teacher=teacher,
                     desc=f"decode {Path(args.out_tok).parent.name}")
    bpe_lines = [model.dictionary.decode(h) for h in hyps]
    tok_lines = [remove_bpe(line) for line in bpe_lines]
    if args.out_bpe:
        write_lines(args.out_bpe, bpe_lines)
    if args.out_detok:
        from aeqa_model.data.moses import detokenize
        write_lines(args.out_detok, detokenize(tok_lines, args.tgt_lang))
    if args.speed_out:
        subset = np.arange(min(args.speed_subset, len(corpus)))
        ref_decoding = json.loads(args.speed_reference_decoding)
        # The AT's own cell: its speed-up over itself is 1.0 by construction, not the
        # ratio of two timings of one model (which read 1.54x once on a loaded machine).
        itself = (reference is not None and same_decoding(decoding, ref_decoding)
                  and Path(args.model).resolve() == Path(args.speed_reference).resolve())
        timed_reference = reference.to(device) if reference is not None and not itself else None
        speed = time_batch1(model, corpus, subset, decoding, device, args.speed_warmup, teacher=teacher,
                            reference=timed_reference, reference_decoding=ref_decoding, rounds=args.speed_rounds,
                            graphs=graphs, compile_options=graph_compile_options(args.speed_compile_backend))
        speed["throughput_sentences_per_s"] = time_throughput(model, corpus, subset, decoding, device,
                                                              args.max_tokens, teacher=teacher)
        speed["throughput_max_tokens"] = args.max_tokens
        speed["source_truncation"] = truncation
        speed.update({"batch_size": 1, "n_sentences": len(subset), "warmup": args.speed_warmup,
                      "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                      "dtype": "float32", "threads": torch.get_num_threads(), "torch": torch.__version__})
        # The latencies at the top level (what Table 1's speed-up column reads) and, with
        # speed_graphs, each way's (time_batch1).
        latencies = [speed] + [speed[way] for way in ("eager", "optimised") if way in speed]
        if itself:
            for timing in latencies:
                timing["at_latency_ms_per_sentence"] = timing["latency_ms_per_sentence"]
                timing["speedup"] = 1.0
            speed["at_throughput_sentences_per_s"] = speed["throughput_sentences_per_s"]
            speed["at_decoding"] = ref_decoding
        elif timed_reference is not None:
            speed["at_throughput_sentences_per_s"] = time_throughput(timed_reference, corpus, subset, ref_decoding,
                                                                     device, args.max_tokens)
            speed["at_decoding"] = ref_decoding
            for timing in latencies:
                timing["speedup"] = timing["at_latency_ms_per_sentence"] / max(timing["latency_ms_per_sentence"], 1e-9)
        write_json(args.speed_out, speed)
    write_lines(args.out_tok, tok_lines)   # last: the rule's main output appears only when all is done
    logging.info("decoded %d sentences -> %s", len(hyps), args.out_tok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
