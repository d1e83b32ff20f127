"""The evaluate settings (metrics/settings.py), declared once: the config schema's
``evaluate`` section is generated from them, the evaluator checks its --spec with the
same schema, and the decode command line and the rules take their defaults."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aeqa_model import config as cfgmod
from aeqa_model.io import InputError
from aeqa_model.metrics.settings import DEFAULTS, checked, schema, spec_value
from tests.test_training_settings import without_descriptions

ROOT = Path(__file__).resolve().parents[1]

# The hand-written section of workflow/schemas/config.schema.yaml before the settings
# were declared (descriptions aside): the generated one must accept and refuse the same.
POSINT = {"type": "integer", "minimum": 1}
PREVIOUS_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["test_split"],
    "properties": {
        "test_split": {"enum": ["test", "valid"]},
        "speed_subset": POSINT,
        "speed_warmup": {"type": "integer", "minimum": 0},
        "length_buckets": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2},
        "repetition_max_n": POSINT,
        "bootstrap_samples": POSINT,
        "bootstrap_seed": {"type": "integer", "minimum": 0},
        "significance_baseline": {"type": ["string", "null"]},
        "comet_model": {"type": ["string", "null"]},
        "bleurt_checkpoint": {"type": ["string", "null"]},
        "comet_batch_size": POSINT,
        "bleurt_batch_size": POSINT,
    },
}
# Declared since (issue 27 item 3): batch-1 decoding also timed through graphs.
PREVIOUS_SCHEMA["properties"]["speed_graphs"] = {"enum": ["none", "compile", "cuda_graphs", "auto"]}


def test_the_generated_schema_is_the_previous_one_and_the_config_uses_it():
    generated = schema()
    assert without_descriptions(generated) == PREVIOUS_SCHEMA
    assert all(entry["description"] for entry in generated["properties"].values())
    rules = cfgmod.with_declared_settings(yaml.safe_load(cfgmod.SCHEMA.read_text(encoding="utf-8")))
    assert rules["properties"]["evaluate"] == generated


def test_the_schema_stub_declares_nothing():
    rules = yaml.safe_load(cfgmod.SCHEMA.read_text(encoding="utf-8"))
    assert rules["properties"]["evaluate"] == {}
    rules["properties"]["evaluate"] = {"properties": {"speed_subset": {"type": "integer"}}}
    with pytest.raises(ValueError, match=r"evaluate declares the evaluate settings \['speed_subset'\]"):
        cfgmod.with_declared_settings(rules)


def test_a_typo_or_a_wrong_type_in_the_config_names_the_key():
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))
    cfg["evaluate"].update(bootstrap_sampels=10, comet_batch_size="16")
    with pytest.raises(ValueError) as err:
        cfgmod.load(cfg, ROOT)
    assert "evaluate.bootstrap_sampels: unknown key" in str(err.value)
    assert "evaluate.comet_batch_size: '16' is not of type 'integer'" in str(err.value)


def test_checked_fills_the_defaults_and_refuses_what_the_config_would():
    assert checked({}) == DEFAULTS
    assert checked({"repetition_max_n": 2, "test_split": "valid"})["repetition_max_n"] == 2
    with pytest.raises(InputError) as err:
        checked({"bootstrap_samples": 0, "comet_model": 3, "speed_subst": 1})
    lines = str(err.value).splitlines()
    assert lines == sorted(lines) and len(lines) == 3
    assert any(line.startswith("evaluate.bootstrap_samples: 0 is less than the minimum of 1") for line in lines)
    assert any(line.startswith("evaluate.comet_model: 3 is not of type") for line in lines)
    assert any("speed_subst" in line and "unexpected" in line for line in lines)
    with pytest.raises(InputError, match="must be a JSON object"):
        checked([1, 2])
    with pytest.raises(InputError, match="evaluate.bootstrap_seed"):
        checked({"bootstrap_seed": True})      # YAML's true is no seed


def test_the_decode_command_line_and_the_rules_take_the_declared_defaults():
    from aeqa_model.decode import cli

    args = cli.build_parser().parse_args(["--model", "m", "--dict", "d", "--src-prefix", "s", "--tgt-prefix", "t",
                                          "--decoding", "{}", "--tgt-lang", "de", "--out-tok", "o"])
    assert (args.speed_subset, args.speed_warmup, args.speed_graphs) == (
        DEFAULTS["speed_subset"], DEFAULTS["speed_warmup"], DEFAULTS["speed_graphs"]) and args.speed_graphs == "none"
    assert spec_value({"speed_subset": 7}, "speed_subset") == 7
    assert spec_value({}, "speed_warmup") == DEFAULTS["speed_warmup"]
