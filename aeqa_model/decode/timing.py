"""Side-by-side timing of decoders: the speed protocol of evaluate (Table 1's speedup
column, decode/cli.py) and of the benchmarks (benchmarks/decode_speed.py).

Two decoders timed one after the other on a shared machine see different loads, and
their ratio drifts: the demo's Table 1 once showed the AT at 1.54x over itself. Here
the functions alternate item by item (A(x1), B(x1), A(x2), B(x2), ...), which one goes
first alternates from round to round, and each function's time is the median over the
rounds of its summed time, so background load falls on all of them alike.
"""
from __future__ import annotations

import time

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_items(fns: dict, items: list, device: torch.device, rounds: int, warmup: int = 1,
                      clock=time.perf_counter) -> dict:
    """Median over ``rounds`` of the summed seconds of ``fn(item)`` over ``items``, for
    every function of ``fns`` (name -> callable), the functions alternating item by item
    and their order reversed every other round. ``warmup`` passes over the items first."""
    for fn in fns.values():
        for _ in range(warmup):
            for item in items:
                fn(item)
    samples = {name: [] for name in fns}
    for r in range(rounds):
        totals = dict.fromkeys(fns, 0.0)
        names = list(fns) if r % 2 == 0 else list(reversed(fns))   # alternate who goes first
        for item in items:
            for name in names:
                sync(device)
                start = clock()
                fns[name](item)
                sync(device)
                totals[name] += clock() - start
        for name, total in totals.items():
            samples[name].append(total)
    return {name: float(np.median(values)) for name, values in samples.items()}
