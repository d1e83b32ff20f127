"""The training settings are declared once (aeqa_model/train/settings.py): the declared
defaults, resumable keys and schema are the ones the trainer, the checkpoints and the
config schema had before the declarations existed (issue 28), and the trainer and the
cluster derive gradient accumulation with one function."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from aeqa_model import cluster
from aeqa_model import config as cfgmod
from aeqa_model.io import InputError
from aeqa_model.train import settings as settings_module
from aeqa_model.train.settings import TrainingSettings, resumable_keys, schema, update_freq

ROOT = Path(__file__).resolve().parents[1]

# The literal defaults before issue 28: the trainer's spec.get(key, default) calls, the
# cli's and CheckpointManager's final-weights defaults (models/build.py
# FINAL_WEIGHTS_DEFAULTS) and trainer.MAX_CONSECUTIVE_SKIPS; label_smoothing was the
# models' Seq2SeqOptions default; effective_batch_tokens was spec.get() without one.
PREVIOUS = {"update_freq": 1, "effective_batch_tokens": None, "warmup_updates": 4000, "warmup_init_lr": 1e-7,
            "adam_betas": (0.9, 0.98), "adam_eps": 1e-8, "weight_decay": 0.0, "clip_norm": 0.0,
            "label_smoothing": 0.1, "amp": "auto", "validate_every": 1000, "validate_bleu_sentences": 0,
            "save_every": 1000, "keep_last": 3, "average_last": 1, "final": "average", "tensorboard": True,
            "max_consecutive_skips": 10}
# Settings added since, with their defaults (issue 27: the compiled training step); both
# resumable (they change how a step computes, not what).
ADDED = {"compile": False, "pad_to_multiple": 8}
# Read as spec[key] (no default): a run without them failed.
PREVIOUS_REQUIRED = ["max_updates", "max_tokens", "lr"]
# train/checkpoint.py RESUMABLE_KEYS before issue 28.
PREVIOUS_RESUMABLE = {"validate_every", "save_every", "keep_last", "average_last", "validate_bleu_sentences",
                      "tensorboard", "max_consecutive_skips"}
# workflow/schemas/config.schema.yaml $defs.training before issue 28, its $refs written out
# (posint: {type: integer, minimum: 1}; nonneg: {type: number, minimum: 0}).
POSINT = {"type": "integer", "minimum": 1}
NONNEG = {"type": "number", "minimum": 0}
PREVIOUS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "max_updates": POSINT, "max_tokens": POSINT, "update_freq": POSINT, "effective_batch_tokens": POSINT,
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "warmup_updates": {"type": "integer", "minimum": 0},
        "warmup_init_lr": NONNEG,
        "adam_betas": {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                       "minItems": 2, "maxItems": 2},
        "adam_eps": {"type": "number", "exclusiveMinimum": 0},
        "weight_decay": NONNEG, "clip_norm": NONNEG,
        "label_smoothing": {"type": "number", "minimum": 0, "maximum": 1},
        "validate_every": POSINT,
        "validate_bleu_sentences": {"type": "integer", "minimum": 0},
        "save_every": POSINT, "keep_last": POSINT, "average_last": POSINT,
        "final": {"enum": ["best", "last", "average"]},
        "amp": {"enum": ["auto", "bf16", "fp16", "none"]},
        "tensorboard": {"type": "boolean"},
        "max_consecutive_skips": POSINT,
    },
}
ADDED_SCHEMA = {"compile": {"enum": ["auto", True, False]}, "pad_to_multiple": POSINT}


def test_declared_defaults_are_the_previous_ones():
    defaults = TrainingSettings.defaults()
    assert defaults == PREVIOUS | ADDED
    assert [type(defaults[k]) for k in PREVIOUS] == [type(v) for v in PREVIOUS.values()]
    assert settings_module.required_keys() == PREVIOUS_REQUIRED
    assert set(TrainingSettings.names()) == set(PREVIOUS) | set(PREVIOUS_REQUIRED) | set(ADDED)


def test_label_smoothing_agrees_with_the_models_declaration():
    """The trainer always passes training.label_smoothing to the model: its default is the
    models' own (Seq2SeqOptions), declared in both places, kept equal here."""
    from aeqa_model.models import model_class

    assert model_class("at").Options.defaults()["label_smoothing"] == TrainingSettings.defaults()["label_smoothing"]


def test_resumable_keys_are_the_previous_ones():
    from aeqa_model.train.checkpoint import RESUMABLE_KEYS

    assert resumable_keys() == PREVIOUS_RESUMABLE | set(ADDED)
    assert RESUMABLE_KEYS == PREVIOUS_RESUMABLE | set(ADDED)


def test_the_setup_fingerprint_is_unchanged():
    """A run's setup fingerprint (its checkpoints resume only under the same one) hashes the
    spec as given minus the resumable keys, exactly as before: no run restarts."""
    from aeqa_model.train.checkpoint import setup_fingerprint

    def previous(model_spec, train_spec, seed, transformer=None, inputs=None):
        settings = {"model": model_spec, "seed": seed, "transformer": transformer or {}, "inputs": inputs or {},
                    "training": {k: v for k, v in train_spec.items() if k not in PREVIOUS_RESUMABLE}}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    model = {"arch": "glat", "size": "smoke"}
    for name in ("smoke", "demo", "fidelity", "config"):
        spec = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text(encoding="utf-8"))["training"]
        for extra in ({}, {"save_every": 7, "tensorboard": False}, {"lr": 1.0, "final": "best"}):
            train = {**spec, **extra}
            assert setup_fingerprint(model, train, 3, {"embed_dim": 8}) == previous(model, train, 3, {"embed_dim": 8})


def without_descriptions(node):
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    return node


def test_the_generated_schema_is_the_previous_one():
    generated = schema()
    assert without_descriptions(generated) == {**PREVIOUS_SCHEMA,
                                               "properties": PREVIOUS_SCHEMA["properties"] | ADDED_SCHEMA}
    assert all(entry["description"] for entry in generated["properties"].values())
    rules = cfgmod.with_declared_settings(yaml.safe_load(cfgmod.SCHEMA.read_text(encoding="utf-8")))
    assert rules["$defs"]["training"] == generated


def training_mappings(cfg: dict):
    """(where, mapping) of every training section a config file holds."""
    if isinstance(cfg.get("training"), dict):
        yield "training", cfg["training"]
    for name, ds in (cfg.get("datasets") or {}).items():
        if "training" in ds:
            yield f"datasets.{name}.training", ds["training"]
        for model, spec in (ds.get("model_training") or {}).items():
            yield f"datasets.{name}.model_training.{model}", spec
    for name, model in (cfg.get("models") or {}).items():
        if isinstance(model, dict) and "training" in model:
            yield f"models.{name}.training", model["training"]


SHIPPED = sorted(p for p in [*ROOT.glob("config/*.yaml"), *ROOT.glob("config/paper/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_generated_schema_accepts_every_shipped_config(path):
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    validator = jsonschema.Draft202012Validator(schema())
    for where, spec in training_mappings(cfg):
        assert not list(validator.iter_errors(spec)), where
        TrainingSettings.from_dict({"max_updates": 1, "max_tokens": 1, "lr": 1.0, **spec})


def load_problems(cfg: dict) -> str:
    with pytest.raises(ValueError) as err:
        cfgmod.load(cfg, ROOT)
    return str(err.value)


def smoke() -> dict:
    return yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))


def test_a_typo_or_a_wrong_type_names_the_key():
    cfg = smoke()
    model = next(iter(cfg["models"]))
    cfg["training"]["save_evry"] = 10
    cfg["training"]["keep_last"] = "3"
    cfg["models"][model]["training"] = {"lr": 0, "final": "mean"}
    message = load_problems(cfg)
    assert message.startswith("invalid config (4 problem(s)")
    assert "training.save_evry: unknown key (allowed here: adam_betas, adam_eps, amp," in message
    assert "training.keep_last: '3' is not of type 'integer'" in message
    assert f"models.{model}.training.lr: 0 is less than or equal to the minimum of 0" in message
    assert f"models.{model}.training.final: 'mean' is not one of ['best', 'last', 'average']" in message


def test_the_schema_stub_declares_nothing():
    rules = yaml.safe_load(cfgmod.SCHEMA.read_text(encoding="utf-8"))
    assert not rules["$defs"]["training"]
    rules["$defs"]["training"] = {"properties": {"lr": {"type": "number"}}}
    with pytest.raises(ValueError, match=r"declares the training settings \['lr'\]"):
        cfgmod.with_declared_settings(rules)


def test_from_dict_reads_defaults_casts_and_refuses_missing_required_keys():
    settings = TrainingSettings.from_dict({"max_updates": "5", "max_tokens": 100, "lr": 1, "adam_betas": [0.9, 0.99],
                                           "effective_batch_tokens": 8000.0, "amp": "none"})
    assert (settings.max_updates, settings.lr, settings.adam_betas) == (5, 1.0, (0.9, 0.99))
    assert settings.effective_batch_tokens == 8000 and type(settings.effective_batch_tokens) is int
    assert settings.amp == "none" and settings.save_every == 1000
    with pytest.raises(InputError, match="training: max_tokens, lr not set"):
        TrainingSettings.from_dict({"max_updates": 5})


def test_cluster_and_trainer_derive_update_freq_with_one_function():
    from aeqa_model.train import trainer as trainer_module

    assert cluster.update_freq is update_freq
    assert trainer_module.update_freq is update_freq
    cases = [({"max_tokens": 100, "effective_batch_tokens": 1600}, 1, 16),
             ({"max_tokens": 100, "effective_batch_tokens": 1600}, 8, 2),
             ({"max_tokens": 300, "effective_batch_tokens": 1600}, 1, 6),
             ({"max_tokens": 100, "update_freq": 3}, 4, 3),
             ({"max_tokens": 100}, 2, 1)]
    for spec, world, expected in cases:
        assert update_freq(spec, world) == expected
        assert trainer_module.Trainer.update_freq(SimpleNamespace(spec=spec, world=world)) == expected
