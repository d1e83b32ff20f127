"""Construct models from config entries and (re)load them from checkpoints."""
from __future__ import annotations

from pathlib import Path

import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.io import InputError, checksum_problem
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


def nonfinite_entries(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding a NaN or an Inf.

    One host-device synchronisation in all (a stacked flag per tensor), however many
    tensors there are; the names are looked up only when something is wrong."""
    names = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(state_dict[k]).all() for k in names])
    if bool(flags.all()):
        return []
    return [name for name, ok in zip(names, flags.tolist()) if not ok]


def describe_nonfinite(bad: list[str], total: int) -> str:
    shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    return f"{len(bad)} of {total} weight tensors hold NaN or Inf ({shown})"


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model checkpoint not found; run the train rule for it first")
    # A damaged region (bytes zeroed, size unchanged) loads without a word: the CRC32s
    # the file carries are compared first (decoding with such weights gives numbers).
    damage = checksum_problem(path)
    if damage:
        raise InputError(f"{path}: {damage}; delete it and rerun its train rule (the run trains again)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated / corrupt files
        raise InputError(f"{path}: cannot read checkpoint ({err}); delete it and rerun training") from None
    bad = nonfinite_entries(payload["state_dict"])
    if bad:
        # A diverged run's weights decode every sentence to garbage that scores like a
        # weak model (BLEU 0.0, chrF ~1): refuse them rather than report numbers.
        raise InputError(f"{path}: {describe_nonfinite(bad, len(payload['state_dict']))}; the training run that "
                         "wrote it diverged. Delete it and rerun training (the trainer now stops a diverging "
                         "run with an error; a lower lr, longer warmup_updates or clip_norm may be needed)")
    dictionary = Dictionary(payload["dictionary"])
    cfg = TransformerConfig.from_dict(payload["transformer"])
    model = model_class(payload["arch"])(dictionary, cfg, payload["options"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
