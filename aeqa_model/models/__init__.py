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


# Keys of a config model entry that are not model options, the same for every arch:
# handled by the workflow and the trainer (size, per-model training overrides,
# default decoding, the model's own training seed). The options of an arch are its
# class's ``Options`` (models/options.py); the TransformerConfig fields overlay its size.
ENTRY_KEYS = {"arch", "size", "training", "decoding", "seed"}


def check_options(name: str, spec: dict) -> list[str]:
    """Problems with a config entry ``models.<name>``: unknown arch or option keys
    (a typo such as ``codebook_szie`` would otherwise be silently ignored), then
    options that do not go together (``Options.conflicts``)."""
    from aeqa_model.models.transformer import TransformerConfig

    if spec.get("arch") not in ARCHS:
        return [f"models.{name}.arch: unknown arch {spec.get('arch')!r}; known: {sorted(ARCHS)}"]
    known = set(ENTRY_KEYS) | set(TransformerConfig.__dataclass_fields__) | model_class(spec["arch"]).Options.names()
    unknown = [f"models.{name}.{key}: unknown option for arch {spec['arch']!r}; known: {sorted(known - ENTRY_KEYS)}"
               for key in spec if key not in known]
    return unknown or [f"models.{name}: {problem}" for problem in model_options(spec).conflicts()]


def model_options(spec: dict):
    """The options of a config entry as its model reads them (its arch's Options,
    every option it does not set at the declared default)."""
    return model_class(spec["arch"]).Options.from_dict(spec)


def option_schemas() -> dict[str, dict]:
    """The JSON schema of every option of every arch, by name (the config schema's
    model entries; an option several archs declare has one schema)."""
    out: dict[str, dict] = {}
    for arch in ARCHS:
        for key, schema in model_class(arch).Options.schema_of().items():
            known = out.setdefault(key, schema)
            strip = lambda s: {k: v for k, v in s.items() if k != "description"}  # noqa: E731
            if strip(known) != strip(schema):
                raise ValueError(f"model option {key!r} is declared with two schemas: {known} and {schema}")
    return out


def model_class(arch: str):
    if arch not in ARCHS:
        raise KeyError(f"unknown model arch {arch!r}; known: {sorted(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)
