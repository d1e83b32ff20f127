"""Construct models from config entries and (re)load them from checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.io import InputError
from aeqa_model.models import check_options, model_class
from aeqa_model.models.transformer import SIZES, TransformerConfig


def transformer_config(model_spec: dict, sizes: dict | None = None) -> TransformerConfig:
    """``model_spec['size']`` names an entry of ``sizes`` (config) or SIZES; explicit keys win."""
    size = model_spec.get("size", "base")
    table = {**SIZES, **(sizes or {})}
    if size not in table:
        raise InputError(f"model size {size!r} is not defined; known sizes: {sorted(table)}")
    values = dict(table[size])
    values.update({k: v for k, v in model_spec.items() if k in TransformerConfig.__dataclass_fields__})
    return TransformerConfig.from_dict(values)


def build_model(model_spec: dict, dictionary: Dictionary, sizes: dict | None = None,
                extra_options: dict | None = None):
    problems = check_options(model_spec.get("name", "<entry>"), {k: v for k, v in model_spec.items() if k != "name"})
    if problems:
        raise InputError("invalid model entry:\n  " + "\n  ".join(problems))
    cfg = transformer_config(model_spec, sizes)
    options = {**model_spec, **(extra_options or {})}
    return model_class(model_spec["arch"])(dictionary, cfg, options)


def model_payload(model) -> dict:
    """What a decoder needs to rebuild the model without the config."""
    return {
        "arch": model.arch,
        "transformer": model.cfg.__dict__,
        "options": model.options,
        "dictionary": model.dictionary.symbols[6:],
        "state_dict": model.state_dict(),
    }


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model checkpoint not found; run the train rule for it first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated / corrupt files
        raise InputError(f"{path}: cannot read checkpoint ({err}); delete it and rerun training") from None
    dictionary = Dictionary(payload["dictionary"])
    cfg = TransformerConfig.from_dict(payload["transformer"])
    model = model_class(payload["arch"])(dictionary, cfg, payload["options"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
