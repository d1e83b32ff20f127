"""Training throughput (target tokens/s) per architecture, size and precision.

Forward + backward + AdamW step on synthetic token batches, every
configuration measured in alternating rounds in one run. Each row also gives the
step's FLOPs as torch counts them (``_common.counted_flops``: the matrix products of
the forward and backward pass), the achieved TFLOP/s, and on a GPU whose bf16 peak
is known (``_common.BF16_PEAK_TFLOPS``) the share of that peak (MFU). By default: the AT
model at demo and base size in fp32, and on a GPU also base in bf16 autocast.
``--arch all --sizes base --amp fp32,bf16`` measures every architecture
(benchmarks/gpu_check.sh does); the fp32 and bf16 runs of one architecture
share its model and optimizer.

    python benchmarks/train_throughput.py [--device cuda] [--arch at|all|a,b] [--sizes demo,base] [--amp fp32,bf16]
"""
from __future__ import annotations

import argparse

import torch

from _common import (SIZES, bf16_peak_tflops, counted_flops, device_info, interleaved, report, synthetic_batch,
                     synthetic_dictionary)
from aeqa_model.models import ARCHS
from aeqa_model.models.base import total_loss
from aeqa_model.models.build import build_model

# Options an architecture is measured with (the AEQA models at the paper's K).
ARCH_OPTIONS = {"aeqa_nat": {"codebook_size": 2048}, "aeqa_dat": {"codebook_size": 2048}}


def variants(device: torch.device, sizes: list[str], amp: str | None) -> list[tuple[str, str]]:
    if amp is None:  # the default: fp32 everywhere, bf16 at base size on a GPU
        out = [(size, "fp32") for size in sizes]
        if device.type == "cuda" and "base" in sizes:
            out.append(("base", "bf16"))
        return out
    return [(size, a) for size in sizes for a in amp.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="at", help="an architecture, a comma list, or all")
    p.add_argument("--sizes", default="demo,base", help="comma list of " + ", ".join(SIZES))
    p.add_argument("--amp", default=None, help="comma list of fp32,bf16 (default: fp32; bf16 too at base size on a GPU)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--sentences", type=int, default=64, help="sentences per batch (~25 tokens each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    archs = list(ARCHS) if args.arch == "all" else args.arch.split(",")
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 15, 35).to(device)
    fns, rows, flops = {}, [], {}
    for arch in archs:
        models = {}
        for size, amp in variants(device, args.sizes.split(","), args.amp):
            if size not in models:
                model = build_model({"arch": arch, "size": size, **ARCH_OPTIONS.get(arch, {})}, d, SIZES,
                                    {"max_updates": 1000}).to(device).train()
                models[size] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
            model, opt = models[size]
            dtype = torch.bfloat16 if amp == "bf16" else None

            def step(model=model, opt=opt, dtype=dtype):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = total_loss(model.losses(batch, 0))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            name = f"{arch} {size}/{amp}"
            try:
                step()                   # a configuration that does not fit is reported, not fatal
            except torch.cuda.OutOfMemoryError:
                rows.append({"config": f"{size}/{amp}", "arch": arch, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            fns[name] = step
            flops[name] = counted_flops(step)
    seconds = interleaved(fns, device, rounds=args.rounds, repeat=args.repeat)
    for name, sec in seconds.items():
        arch, config = name.split(" ")
        tflops = flops[name] / sec / 1e12
        peak = bf16_peak_tflops(device)
        rows.append({"config": config, "arch": arch, "target_tokens_per_batch": batch.ntokens,
                     "tokens_per_s": round(batch.ntokens / sec, 1), "s_per_update": round(sec, 4),
                     "gflops_per_step": round(flops[name] / 1e9, 2), "tflops_per_s": round(tflops, 3),
                     "mfu_bf16_peak": round(tflops / peak, 4) if peak else None})
    for name, sec in seconds.items():
        arch, config = name.split(" ")
        size, amp = config.split("/")
        if amp == "bf16" and f"{arch} {size}/fp32" in seconds:
            rows.append({"ratio": f"{size} bf16 / {size} fp32", "arch": arch,
                         "speedup": round(seconds[f"{arch} {size}/fp32"] / sec, 2)})
    report("train_throughput", rows, device_info(device))


if __name__ == "__main__":
    main()
