"""Inverse square-root learning-rate schedule with linear warm-up (Vaswani et al.; fairseq)."""
from __future__ import annotations


def inverse_sqrt_lr(update: int, peak_lr: float, warmup_updates: int, warmup_init_lr: float = 1e-7) -> float:
    """lr at ``update`` (0-based): linear from warmup_init_lr to peak over the warm-up,
    then peak * sqrt(warmup / update)."""
    step = update + 1
    if warmup_updates > 0 and step <= warmup_updates:
        return warmup_init_lr + (peak_lr - warmup_init_lr) * step / warmup_updates
    return peak_lr * (max(warmup_updates, 1) / step) ** 0.5
