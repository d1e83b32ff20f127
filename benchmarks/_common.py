"""Shared helpers for the benchmarks: device description, synthetic batches, timers, FLOPs."""
from __future__ import annotations

import json
import platform
import time

import numpy as np
import torch

from aeqa_model.data.batching import collate
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.decode.timing import sync


# Model sizes every benchmark compares: the demo's and transformer-base.
SIZES = {"demo": dict(embed_dim=64, ffn_dim=256, heads=4, encoder_layers=2, decoder_layers=2, dropout=0.1),
         "base": dict(embed_dim=512, ffn_dim=2048, heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1)}


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synthetic_dictionary(vocab: int) -> Dictionary:
    return Dictionary([f"w{i}" for i in range(vocab)])


def synthetic_batch(d: Dictionary, sentences: int, min_len: int, max_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    src = [rng.integers(6, len(d), size=int(rng.integers(min_len, max_len))) for _ in range(sentences)]
    tgt = [rng.integers(6, len(d), size=max(1, len(s) + int(rng.integers(-2, 3)))) for s in src]
    return collate(list(range(sentences)), src, tgt, d)


def pin_length_prediction(model) -> None:
    """Make a NAT's length head predict |Y| = |X| (then |X|+-1, +-2, ... for further
    length candidates). Latency grows with the output length, and an untrained or
    barely trained head picks a different, arbitrary length for each model, so
    without this the benchmarks would compare different amounts of work."""
    if getattr(model, "length", None) is None:
        return
    proj = model.length.proj
    with torch.no_grad():
        proj.weight.zero_()
        offsets = torch.arange(proj.out_features, device=proj.bias.device) - model.length.max_offset
        proj.bias.copy_(-offsets.abs().float())


def timed(fn, device, repeat: int, warmup: int = 2) -> float:
    """Mean seconds per call after ``warmup`` calls, with device synchronisation."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


#: Dense bf16 tensor-core peak TFLOP/s by device name (vendor data sheets; SXM
#: parts unless the name says PCIe/NVL). The first key contained in the device
#: name wins, so longer, more specific names come first. Unknown devices (and CPUs)
#: get no share of peak: the TFLOP/s are printed alone.
BF16_PEAK_TFLOPS = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L40": 181.0, "A10G": 70.0, "A10": 125.0, "L4": 121.0,
    "RTX 4090": 165.0, "RTX A6000": 155.0, "B200": 2250.0,
}


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def counted_flops(fn) -> int:
    """FLOPs of one call of ``fn`` as torch's FlopCounterMode counts them: every
    matrix product (linear layers, attention through SDPA or bmm, the output layer)
    in the forward and the backward pass, 2 FLOPs per multiply-add; elementwise
    work, softmax and the optimizer are not counted. That is the usual "model FLOPs"
    of model FLOPs utilisation, counted on the real step, not estimated from a
    per-architecture formula (glancing's second forward pass, CTC's upsampling and
    the SQS search are in it as they run)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def report(name: str, rows: list[dict], info: dict) -> None:
    print(f"# {name}")
    print(json.dumps(info))
    for row in rows:
        print(json.dumps(row))


def interleaved(fns: dict, device, rounds: int, repeat: int, warmup: int = 2) -> dict:
    """Median seconds per call of each function, measured in alternating rounds so
    that background load affects all of them alike (ratios stay meaningful)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(timed(fn, device, repeat, warmup=0))
    return {name: float(np.median(values)) for name, values in samples.items()}
