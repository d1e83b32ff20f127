"""The device choice shared by training, decoding and SQS pre-training."""
from __future__ import annotations

import logging

import torch

from aeqa_model.gpu_slots import claim_from_env
from aeqa_model.io import InputError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other name as torch reads it.

    Under profiles/gpu-local (``AEQA_GPU_SLOTS`` set) every job that picks a device
    first claims a GPU slot, which sets its ``CUDA_VISIBLE_DEVICES``
    (aeqa_model/gpu_slots.py); this must happen before CUDA is initialised, i.e. before
    ``torch.cuda.is_available``. A CPU job claims one too (it only bounds how many
    run), so that the GPU tier's CPU rehearsal takes the same path. A CUDA device where
    torch sees none is an InputError."""
    claim_from_env(log=logging.getLogger(__name__).warning)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        # A GPU job on a node without one (the config's start-up check trusts `gpu:`
        # resources): one line naming the setting, not torch's "not compiled with CUDA".
        raise InputError(f"--device {name} (the config's device): torch sees no CUDA GPU on this machine; "
                         f"set device: auto or cpu, or run the job on a GPU node")
    return device
