"""Training throughput (target tokens/s) of the AT model for the demo and base sizes.

Forward + backward + AdamW step on synthetic token batches; fp32 on CPU, and on
a GPU additionally bf16 autocast, each measured in alternating rounds in one run.

    python benchmarks/train_throughput.py [--device cuda] [--tokens 4096]
"""
from __future__ import annotations

import argparse

import torch

from _common import SIZES, device_info, interleaved, report, synthetic_batch, synthetic_dictionary
from aeqa_model.models.base import total_loss
from aeqa_model.train.build import build_model



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="at")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--sentences", type=int, default=64, help="sentences per batch (~25 tokens each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 15, 35).to(device)
    fns = {}
    variants = [("demo", None), ("base", None)]
    if device.type == "cuda":
        variants.append(("base", torch.bfloat16))
    for size, dtype in variants:
        model = build_model({"arch": args.arch, "size": size}, d, SIZES, {"max_updates": 1000}).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt, dtype=dtype):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = total_loss(model.losses(batch, 0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[f"{size}/{'bf16' if dtype else 'fp32'}"] = step
    seconds = interleaved(fns, device, rounds=args.rounds, repeat=args.repeat)
    rows = [{"config": name, "arch": args.arch, "target_tokens_per_batch": batch.ntokens,
             "tokens_per_s": round(batch.ntokens / sec, 1), "s_per_update": round(sec, 4)}
            for name, sec in seconds.items()]
    if "base/bf16" in seconds:
        rows.append({"ratio": "base bf16 / base fp32", "speedup": round(seconds["base/fp32"] / seconds["base/bf16"], 2)})
    report("train_throughput", rows, device_info(device))


if __name__ == "__main__":
    main()
