"""The evaluate settings (the config's ``evaluate:`` section), each declared once.

:class:`EvaluateSettings` declares every key of the section as one field, as the
training settings (aeqa_model/train/settings.py) and the models' options do: its type,
its default, a help line and the JSON-schema keywords that refine its type. From it:

* the config schema's ``evaluate`` section is :func:`schema` (aeqa_model.config fills it
  in before validating; ``workflow/schemas/config.schema.yaml`` keeps a stub);
* the evaluator reads :func:`checked` (the ``--spec`` it is given, every missing key at
  its default, every key checked against the same schema, so a direct call with a bad
  spec fails as the config check would);
* the decode command line's speed-protocol defaults and the workflow's rules read
  :func:`spec_value`.

The config is not rewritten with the defaults: the evaluate jobs' settings hash
(workflow/rules/common.smk) covers the section as written, so adding a declaration
does not re-evaluate existing runs.

This module imports only ``aeqa_model.declared`` and ``aeqa_model.io`` (its own layer,
``evaluate_settings``, in tests/test_layers.py), so decode, the metrics and the
workflow's start-up all read it without torch or sacrebleu.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from aeqa_model.declared import closed_schema, declared, declared_defaults
from aeqa_model.io import InputError

# sacrebleu's default SACREBLEU_SEED: the paired bootstrap resamples the same way
# sacrebleu's own significance test does unless a run sets another seed.
DEFAULT_BOOTSTRAP_SEED = 12345

POSINT = {"minimum": 1}
STRING_OR_NULL = {"type": ["string", "null"]}
# The modes of speed_graphs (aeqa_model/decode/graphs.py runs them; named here, where
# the setting is declared, as this module must not import torch).
SPEED_GRAPHS = ("none", "compile", "cuda_graphs", "auto")


@dataclass(frozen=True, kw_only=True)
class EvaluateSettings:
    """The ``evaluate:`` section of the config."""

    test_split: str = declared(help="split every model is decoded and scored on (valid: a quick look without "
                                    "touching the test set)", choices=("test", "valid"))
    # -- the speed protocol of the decode rule (decode.cli, docs/metrics.md)
    speed_subset: int = declared(50, "sentences of the test split timed at batch size 1 for the speed-up column",
                                 schema=POSINT)
    speed_warmup: int = declared(5, "untimed batch-1 decodes before the timing (kernel and allocator warm-up)",
                                 schema={"minimum": 0})
    speed_graphs: str = declared(
        "none", "also time batch-1 decoding through graphs, the model and the AT alike (aeqa_model/decode/graphs.py): "
        "compile (torch.compile reduce-overhead: CUDA graphs on a GPU), cuda_graphs (captured eager code, CUDA only) "
        "or auto (cuda_graphs on a GPU, compile elsewhere); speed.json then holds both ways and its speedup is the "
        "optimised one (docs/metrics.md); none: eager only", choices=SPEED_GRAPHS)
    # -- the scores
    length_buckets: tuple[float, ...] = declared(
        (0, 5, 10, 20, 40, 1000), "edges of the reference-length buckets of Figure 3's BLEU by length",
        schema={"items": {"type": "number", "minimum": 0}, "minItems": 2})
    repetition_max_n: int = declared(4, "longest n-gram counted by the repetition rate", schema=POSINT)
    bootstrap_samples: int = declared(1000, "resamples of the paired bootstrap against the significance baseline",
                                      schema=POSINT)
    bootstrap_seed: int = declared(DEFAULT_BOOTSTRAP_SEED, "seed of the paired bootstrap's resampling",
                                   schema={"minimum": 0})
    significance_baseline: str | None = declared(
        None, "model every other model of a dataset is tested against (null: no significance test)",
        schema=STRING_OR_NULL)
    comet_model: str | None = declared(None, "local COMET checkpoint (null: COMET is reported as not available)",
                                       schema=STRING_OR_NULL)
    bleurt_checkpoint: str | None = declared(None, "local BLEURT checkpoint, bleurt-pytorch (null: not available)",
                                             schema=STRING_OR_NULL)
    comet_batch_size: int = declared(16, "sentences per COMET forward pass", schema=POSINT)
    bleurt_batch_size: int = declared(32, "sentences per BLEURT forward pass", schema=POSINT)


# The defaults as a config writes them (JSON: a list, not the field's immutable tuple).
DEFAULTS = {name: list(value) if isinstance(value, tuple) else value
            for name, value in declared_defaults(EvaluateSettings).items()}


def schema() -> dict:
    """The JSON schema of the ``evaluate:`` section: closed (a typo is an unknown key), the
    keys without a default required, each key's schema from its declaration."""
    return closed_schema(EvaluateSettings)


def spec_value(spec: Mapping, key: str):
    """``evaluate.<key>`` of a raw section as written, else its declared default."""
    return spec[key] if key in spec else DEFAULTS[key]


def checked(spec) -> dict:
    """The ``evaluate:`` section ``spec`` with every missing key at its default, checked
    against :func:`schema` (``test_split``, which only the workflow reads, may be missing
    here). Raises InputError listing every problem, one per line, each naming its key."""
    import jsonschema

    if not isinstance(spec, Mapping):
        raise InputError(f"the evaluate settings must be a JSON object (the evaluate: config section), "
                         f"got {type(spec).__name__}")
    merged = {**DEFAULTS, **spec}
    rules = closed_schema(EvaluateSettings, require=False)
    problems = []
    for err in jsonschema.Draft202012Validator(rules).iter_errors(merged):
        key = ".".join(str(part) for part in err.absolute_path)
        problems.append(f"evaluate.{key}: {err.message}" if key else f"evaluate: {err.message}")
    if problems:
        raise InputError("\n".join(sorted(problems)))
    return merged

