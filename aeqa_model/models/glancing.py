"""Glancing training shared by GLAT, DA-Transformer, AEQA-NAT and AEQA-DAT.

* ``GlanceSchedule``: the sampling ratio lambda annealed linearly, written as a
  string ``"start:end@updates"`` (``"0.5:0.3@300k"``: 0.5 at update 0, 0.3 from
  update 300,000 on; a bare number is a constant ratio).
* ``choose_glance_positions``: t_b random real positions per row, vectorized.
* ``same_dropout``: both glancing passes see the same dropout masks (GLAT
  runs its first, gradient-free pass with the randomness of the second).
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

_SCHEDULE = re.compile(r"^\s*([0-9.]+)\s*(?::\s*([0-9.]+)\s*@\s*([0-9.]+)\s*([kKmM]?)\s*)?$")


@dataclass(frozen=True)
class GlanceSchedule:
    start: float
    end: float
    updates: int

    @classmethod
    def parse(cls, text) -> "GlanceSchedule":
        if isinstance(text, (int, float)):
            return cls(float(text), float(text), 0)
        match = _SCHEDULE.match(str(text))
        if not match:
            raise ValueError(f"glancing schedule {text!r}: expected 'start:end@updates' such as '0.5:0.3@300k', "
                             "or a constant ratio such as '0.3'")
        start = float(match.group(1))
        if match.group(2) is None:
            return cls(start, start, 0)
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(4).lower()]
        schedule = cls(start, float(match.group(2)), int(float(match.group(3)) * scale))
        for value in (schedule.start, schedule.end):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"glancing schedule {text!r}: ratios must lie in [0, 1]")
        return schedule

    def __call__(self, update: int) -> float:
        if self.updates <= 0:
            return self.end
        frac = min(max(update / self.updates, 0.0), 1.0)
        return self.start + (self.end - self.start) * frac


def choose_glance_positions(scores: torch.Tensor, counts: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Pick ``counts[b]`` random non-padding positions per row, vectorized.

    ``scores`` are i.i.d. uniform noise; a position is chosen when its rank among
    the row's real positions is below the count.
    """
    scores = scores.masked_fill(pad_mask, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < counts[:, None]) & ~pad_mask


def glance_counts(ratio: float, predicted: torch.Tensor, target: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """t = floor(lambda * Hamming(Y, Y_hat)) per sentence (GLAT, Qian et al. 2021)."""
    hamming = (predicted.ne(target) & ~pad_mask).sum(1).float()
    return torch.floor(ratio * hamming).long()


@contextlib.contextmanager
def same_dropout(device: torch.device):
    """Run the enclosed code with a copy of the RNG state, then restore it, so the
    pass that follows draws exactly the same dropout masks as the enclosed one."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type == "cuda" else "cuda"):
        yield
