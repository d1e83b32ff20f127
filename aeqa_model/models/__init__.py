"""Model registry: arch name -> class. One model per file; all share transformer.py."""
from __future__ import annotations

import importlib

# arch -> "module:Class"; modules are imported lazily so one broken optional model
# never blocks the others.
ARCHS = {
    "at": "aeqa_model.models.at:ATTransformer",
    "vanilla_nat": "aeqa_model.models.nat:VanillaNAT",
    "ctc": "aeqa_model.models.ctc:CTCNAT",
    "glat": "aeqa_model.models.glat:GLAT",
    "cmlm": "aeqa_model.models.cmlm:CMLM",
    "dat": "aeqa_model.models.dat:DATransformer",
    "aeqa_nat": "aeqa_model.models.aeqa_nat:AEQANAT",
    "aeqa_dat": "aeqa_model.models.aeqa_dat:AEQADAT",
}


def model_class(arch: str):
    if arch not in ARCHS:
        raise KeyError(f"unknown model arch {arch!r}; known: {sorted(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)
