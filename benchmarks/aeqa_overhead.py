"""AEQA-NAT overhead over vanilla NAT at the same model size, measured side by side.

Prints training tokens/s (forward + backward + optimizer step on the same
synthetic batches) and batch-1 decoding latency (every model at the output length |X|) of vanilla NAT, GLAT and
AEQA-NAT, and the ratios (targets: training >= 0.9x of GLAT (issue 15),
decoding >= 0.95x of vanilla NAT). GLAT is printed beside them because, like AEQA-NAT, it runs a
gradient-free first decoder pass per update for glancing; AEQA-NAT with
uniform glancing (Table 6) shows the method's cost without that pass.

    python benchmarks/aeqa_overhead.py [--size demo|base] [--device cpu|cuda] [--amp bf16]
"""
from __future__ import annotations

import argparse

import torch

from _common import (SIZES, device_info, interleaved, pin_length_prediction, report, synthetic_batch,
                     synthetic_dictionary)
from aeqa_model.decode import generate
from aeqa_model.decode.timing import interleaved_items
from aeqa_model.models.base import total_loss
from aeqa_model.models.build import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="demo", choices=SIZES)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--decode-sentences", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 10, 40).to(device)
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    train_fns, decode_fns, models = {}, {}, {}
    singles = [batch.src[i:i + 1, : int(batch.src_lengths[i])] for i in range(args.decode_sentences)]
    for name, spec in (("vanilla_nat", {"arch": "vanilla_nat"}),
                       ("glat", {"arch": "glat", "glancing_schedule": "0.5:0.3@1000"}),
                       ("aeqa_nat", {"arch": "aeqa_nat", "codebook_size": 2048}),
                       # Table 6's uniform glancing needs no first decoder pass: what the
                       # SQS and the encoder pass over Y cost on their own.
                       ("aeqa_nat_uniform", {"arch": "aeqa_nat", "codebook_size": 2048, "glancing": "uniform"})):
        model = build_model({**spec, "size": args.size}, d, {args.size: SIZES[args.size]},
                            {"max_updates": 1000}).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            model.train()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = total_loss(model.losses(batch, 500))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def decode_one(src, model=model):  # batch size 1
            generate(model, src, {"strategy": "argmax"})

        train_fns[name] = step
        if name != "aeqa_nat_uniform":  # decodes exactly as aeqa_nat
            models[name], decode_fns[name] = model, decode_one
    train = interleaved(train_fns, device, rounds=args.rounds, repeat=max(1, args.steps // args.rounds))
    for model in models.values():  # once, outside the timed calls
        model.eval()
        pin_length_prediction(model)
    decode = interleaved_items(decode_fns, singles, device, rounds=args.rounds)
    rows = []
    for name in train_fns:
        row = {"model": name, "train_tokens_per_s": round(batch.ntokens / train[name], 1)}
        if name in decode:
            row["decode_ms_per_sentence"] = round(1000 * decode[name] / len(singles), 3)
        rows.append(row)
    for name, base in (("aeqa_nat", "vanilla_nat"), ("aeqa_nat", "glat"), ("glat", "vanilla_nat"),
                       ("aeqa_nat_uniform", "vanilla_nat")):
        ratio = {"ratio": f"{name}/{base}", "training_throughput": round(train[base] / train[name], 3)}
        if name in decode:
            ratio["decoding_speed"] = round(decode[base] / decode[name], 3)
        rows.append(ratio)
    report(f"aeqa_overhead size={args.size} amp={args.amp}", rows, device_info(device))


if __name__ == "__main__":
    main()
