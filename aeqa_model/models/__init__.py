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


# Keys of a config model entry that are not model options: handled by the workflow
# and the trainer (size, per-model training overrides, default decoding, the
# model's own training seed, where an AEQA codebook starts and the length of its
# pre-alignment when it has one of its own).
ENTRY_KEYS = {"arch", "size", "training", "decoding", "seed", "sqs_init", "sqs_align_updates"}


def check_options(name: str, spec: dict) -> list[str]:
    """Problems with a config entry ``models.<name>``: unknown arch or option keys
    (a typo such as ``codebook_szie`` would otherwise be silently ignored)."""
    from aeqa_model.models.transformer import TransformerConfig

    if spec.get("arch") not in ARCHS:
        return [f"models.{name}.arch: unknown arch {spec.get('arch')!r}; known: {sorted(ARCHS)}"]
    cls = model_class(spec["arch"])
    known = set(ENTRY_KEYS) | set(TransformerConfig.__dataclass_fields__)
    for klass in cls.__mro__:
        known |= set(klass.__dict__.get("OPTIONS", ()))
    return [f"models.{name}.{key}: unknown option for arch {spec['arch']!r}; known: {sorted(known - ENTRY_KEYS)}"
            for key in spec if key not in known]


def model_class(arch: str):
    if arch not in ARCHS:
        raise KeyError(f"unknown model arch {arch!r}; known: {sorted(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)
