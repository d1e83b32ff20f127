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

``--compile both`` measures every configuration eager and compiled side by side, in the
same interleaved rounds (issue 27: ``training.compile``): the compiled step is the
trainer's (``train.runtime.compile_training_step``, inductor) on the batch padded as the
trainer pads it (``--pad-to-multiple``, the training default). Its row is the
configuration ``<size>/<amp>+compile`` with its ``compile_s`` (the first call, compiling
included), then a ratio row compiled / eager. Its FLOPs are the eager step's (padding is
not useful work), so the two MFU figures compare directly. ``--compile on``: compiled
only.

    python benchmarks/train_throughput.py [--device cuda] [--arch at|all|a,b] [--sizes demo,base] [--amp fp32,bf16]
                                          [--compile off|on|both] [--pad-to-multiple 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import (SIZES, bf16_peak_tflops, counted_flops, device_info, interleaved, report, synthetic_batch,
                     synthetic_dictionary)
from aeqa_model.data.batching import Batch, collate
from aeqa_model.models import ARCHS
from aeqa_model.models.base import LossTerm, total_loss
from aeqa_model.models.build import build_model
from aeqa_model.train.settings import DEFAULTS
from aeqa_model.train.runtime import compile_training_step

# Options an architecture is measured with (the AEQA models at the paper's K).
ARCH_OPTIONS = {"aeqa_nat": {"codebook_size": 2048}, "aeqa_dat": {"codebook_size": 2048}}


def variants(device: torch.device, sizes: list[str], amp: str | None) -> list[tuple[str, str]]:
    if amp is None:  # the default: fp32 everywhere, bf16 at base size on a GPU
        out = [(size, "fp32") for size in sizes]
        if device.type == "cuda" and "base" in sizes:
            out.append(("base", "bf16"))
        return out
    return [(size, a) for size in sizes for a in amp.split(",")]


def bucketed(batch: Batch, d, multiple: int) -> Batch:
    """``batch`` re-collated with its widths padded as the compiled trainer pads them."""
    src = [row[:n - 1].numpy() for row, n in zip(batch.src.cpu(), batch.src_lengths.tolist())]
    tgt = [row[:n].numpy() for row, n in zip(batch.target.cpu(), batch.target_lengths.tolist())]
    return collate(batch.ids.tolist(), src, tgt, d, pad_to_multiple=multiple)


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
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="the eager step, the compiled one (the trainer's torch.compile), or both side by side")
    p.add_argument("--pad-to-multiple", type=int, default=DEFAULTS["pad_to_multiple"],
                   help="the compiled step's batch widths are padded up to a multiple of this (training default)")
    args = p.parse_args()
    device = torch.device(args.device)
    archs = list(ARCHS) if args.arch == "all" else args.arch.split(",")
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    plain = synthetic_batch(d, args.sentences, 15, 35)
    batch = plain.to(device)
    padded = bucketed(plain, d, args.pad_to_multiple).to(device)
    ways = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    fns, rows, flops, compile_seconds = {}, [], {}, {}
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

            def compiled_step(model=model, opt=opt, dtype=dtype):
                # The trainer's compiled path: the module's compiled __call__ (its forward's
                # (value, weight) pairs) on the padded batch.
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = total_loss({k: LossTerm(v, w) for k, (v, w) in model(padded, 0).items()})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            if True in ways and getattr(model, "_compiled_call_impl", None) is None:
                compile_training_step(model)  # in place: model.losses (the eager step) stays eager
            for compiled in ways:
                name = f"{arch} {size}/{amp}" + ("+compile" if compiled else "")
                started = time.perf_counter()
                try:
                    (compiled_step if compiled else step)()  # a configuration that does not fit is reported, not fatal
                except torch.cuda.OutOfMemoryError:
                    rows.append({"config": name.split(" ")[1], "arch": arch, "error": "out of memory"})
                    torch.cuda.empty_cache()
                    continue
                if compiled:
                    compile_seconds[name] = round(time.perf_counter() - started, 1)
                fns[name] = compiled_step if compiled else step
                # Model FLOPs are the eager step's on the unpadded batch, compiled or not.
                flops[name] = counted_flops(step)
    seconds = interleaved(fns, device, rounds=args.rounds, repeat=args.repeat)
    for name, sec in seconds.items():
        arch, config = name.split(" ")
        tflops = flops[name] / sec / 1e12
        peak = bf16_peak_tflops(device)
        rows.append({"config": config, "arch": arch, "target_tokens_per_batch": batch.ntokens,
                     "tokens_per_s": round(batch.ntokens / sec, 1), "s_per_update": round(sec, 4),
                     "gflops_per_step": round(flops[name] / 1e9, 2), "tflops_per_s": round(tflops, 3),
                     "mfu_bf16_peak": round(tflops / peak, 4) if peak else None,
                     **({"compile_s": compile_seconds[name]} if name in compile_seconds else {})})
    for name, sec in seconds.items():
        arch, config = name.split(" ")
        size, amp = config.split("/")
        if amp == "bf16" and f"{arch} {size}/fp32" in seconds:
            rows.append({"ratio": f"{size} bf16 / {size} fp32", "arch": arch,
                         "speedup": round(seconds[f"{arch} {size}/fp32"] / sec, 2)})
        if amp.endswith("+compile") and name.removesuffix("+compile") in seconds:
            rows.append({"ratio": f"{config} / {config.removesuffix('+compile')}", "arch": arch,
                         "speedup": round(seconds[name.removesuffix("+compile")] / sec, 2)})
    report("train_throughput", rows, device_info(device))


if __name__ == "__main__":
    main()
