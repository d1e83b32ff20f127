"""Batch-1 decoding latency of AT (beam 4) and the NAT models at the same width,
measured side by side in one run (the models alternate sentence by sentence), with each speedup over AT.

Models are randomly initialised (latency does not depend on training, except
for output lengths: the NATs' length heads are pinned to |Y| = |X| and the AT
has a max-length cap). Use --size base on a GPU for the paper's setting.

    python benchmarks/decode_speed.py [--size demo|base] [--device cuda] [--sentences 50]
"""
from __future__ import annotations

import argparse

import torch

from _common import SIZES, device_info, pin_length_prediction, report, synthetic_batch, synthetic_dictionary
from aeqa_model.decode import generate
from aeqa_model.decode.timing import interleaved_items
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
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 15, 35).to(device)
    singles = [batch.src[i:i + 1, : int(batch.src_lengths[i])] for i in range(args.sentences)]
    teacher = build_model({"arch": "at", "size": args.size}, d, SIZES).to(device).eval()
    fns = {}
    for name, spec, decoding in CANDIDATES:
        model = teacher if spec["arch"] == "at" else build_model({**spec, "size": args.size}, d, SIZES).to(device).eval()
        pin_length_prediction(model)

        def run(src, model=model, decoding=decoding):
            generate(model, src, decoding, teacher=teacher)

        fns[name] = run
    seconds = interleaved_items(fns, singles, device, rounds=args.rounds)
    at = seconds["AT (beam 4)"]
    rows = [{"model": name, "ms_per_sentence": round(1000 * sec / len(singles), 3),
             "speedup_over_AT": round(at / sec, 2)} for name, sec in seconds.items()]
    report(f"decode_speed size={args.size} batch=1", rows, device_info(device))


if __name__ == "__main__":
    main()
