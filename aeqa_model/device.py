"""The device choice shared by training, decoding and SQS pre-training."""
from __future__ import annotations

import logging

import torch

from aeqa_model.gpu_slots import claim_from_env


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other name as torch reads it.

    Under profiles/gpu-local (``AEQA_GPU_SLOTS`` set) every job that picks a device
    first claims a GPU slot, which sets its ``CUDA_VISIBLE_DEVICES``
    (aeqa_model/gpu_slots.py); this must happen before CUDA is initialised, i.e. before
    ``torch.cuda.is_available``. A CPU job claims one too (it only bounds how many
    run), so that the GPU tier's CPU rehearsal takes the same path."""
    claim_from_env(log=logging.getLogger(__name__).warning)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
