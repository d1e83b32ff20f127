"""Batch-1 decoding latency of AT (beam 4) and the NAT models at the same width,
measured side by side in one run (the models alternate sentence by sentence), with each speedup over AT.

Models are randomly initialised (latency does not depend on training, except
for output lengths: the NATs' length heads are pinned to |Y| = |X| and the AT
has a max-length cap). Use --size base on a GPU for the paper's setting.

``--graphs compile|cuda_graphs|auto`` also times every model, the AT included,
through graphs at static shapes (aeqa_model/decode/graphs.py), in the same
interleaved rounds: each row then has both ways side by side, and the
hypotheses of the two ways are compared (``hypotheses_differing``).

    python benchmarks/decode_speed.py [--size demo|base] [--device cuda] [--sentences 50] [--graphs auto]
"""
from __future__ import annotations

import argparse

import torch

from _common import SIZES, device_info, pin_length_prediction, report, synthetic_batch, synthetic_dictionary
from aeqa_model.decode import generate
from aeqa_model.decode.cli import graph_compile_options
from aeqa_model.decode.graphs import GraphedDecoding, resolve_mode
from aeqa_model.decode.timing import interleaved_items
from aeqa_model.metrics.settings import SPEED_GRAPHS
from aeqa_model.models.build import build_model


CANDIDATES = [
    ("AT (beam 4)", {"arch": "at"}, {"strategy": "beam", "beam": 4, "max_len_a": 1.0, "max_len_b": 2}),
    ("Vanilla NAT", {"arch": "vanilla_nat"}, {"strategy": "argmax"}),
    ("GLAT", {"arch": "glat"}, {"strategy": "argmax"}),
    ("DAT (lookahead)", {"arch": "dat", "graph_factor": 8}, {"strategy": "lookahead"}),
    ("AEQA-NAT", {"arch": "aeqa_nat", "codebook_size": 2048}, {"strategy": "argmax"}),
    ("AEQA-NAT + NPD (m=5)", {"arch": "aeqa_nat", "codebook_size": 2048}, {"strategy": "npd", "candidates": 5}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="demo", choices=SIZES)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--sentences", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--graphs", default="none", choices=SPEED_GRAPHS,
                   help="also time every model through graphs (decode/graphs.py), side by side with eager")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of --graphs compile (aot_eager: trace only, a quick self-check)")
    args = p.parse_args()
    device = torch.device(args.device)
    graphs = resolve_mode(args.graphs, device)
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 15, 35).to(device)
    singles = [batch.src[i:i + 1, : int(batch.src_lengths[i])] for i in range(args.sentences)]
    teacher = build_model({"arch": "at", "size": args.size}, d, SIZES).to(device).eval()
    fns, differing = {}, {}
    for name, spec, decoding in CANDIDATES:
        model = teacher if spec["arch"] == "at" else build_model({**spec, "size": args.size}, d, SIZES).to(device).eval()
        pin_length_prediction(model)

        def run(src, model=model, decoding=decoding):
            return generate(model, src, decoding, teacher=teacher)

        fns[name] = run
        if graphs != "none":
            fast = GraphedDecoding(model, graphs, graph_compile_options(args.compile_backend))

            def run_optimised(src, model=fast, decoding=decoding):
                return generate(model, src, decoding, teacher=teacher)   # NPD's teacher rescoring stays eager

            # One untimed pass: every graph is compiled or captured before the timing.
            differing[name] = sum(run_optimised(src) != run(src) for src in singles)
            fns[f"{name} optimised"] = run_optimised
    seconds = interleaved_items(fns, singles, device, rounds=args.rounds)
    at = seconds["AT (beam 4)"]
    rows = []
    for name, _, _ in CANDIDATES:
        row = {"model": name, "ms_per_sentence": round(1000 * seconds[name] / len(singles), 3),
               "speedup_over_AT": round(at / seconds[name], 2)}
        if graphs != "none":
            optimised, at_optimised = seconds[f"{name} optimised"], seconds["AT (beam 4) optimised"]
            row.update(ms_per_sentence_optimised=round(1000 * optimised / len(singles), 3),
                       speedup_over_AT_optimised=round(at_optimised / optimised, 2),
                       optimised_over_eager=round(seconds[name] / optimised, 2),
                       hypotheses_differing=differing[name])
        rows.append(row)
    label = f"decode_speed size={args.size} batch=1" + (f" graphs={graphs}" if graphs != "none" else "")
    report(label, rows, {**device_info(device), "graphs": graphs})


if __name__ == "__main__":
    main()
