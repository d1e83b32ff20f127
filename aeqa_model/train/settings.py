"""The training settings (the config's ``training:`` section), each declared once.

:class:`TrainingSettings` declares every key of the section as one field, in the manner
of the models' options (aeqa_model/models/options.py): its type, its default (the value
a run trains with when no config sets it), a help line, the JSON-schema keywords that
refine its type (``schema``) or its values (``choices``), and two flags:

* ``required``: the key has no default (a run cannot train without it: max_updates,
  max_tokens, lr). The config schema does not require it in every ``training:`` mapping,
  as before: a dataset's or a model's ``training:`` (and an overlay config's) sets only
  what it changes; the trainer refuses a run whose merged settings lack one.
* ``resumable``: the key only changes when and how results are written, so an
  interrupted run stays resumable across an edit of it (the run's setup fingerprint,
  ``train.checkpoint.setup_fingerprint``, leaves these keys out).

Everything else derives from the declarations:

* the trainer reads ``TrainingSettings.from_dict(train_spec)`` (every missing key at its
  default, cast to its type as the trainer always did); :func:`spec_value` reads one key
  of a raw spec, else its default;
* ``train.checkpoint.RESUMABLE_KEYS`` is :func:`resumable_keys`;
* the config schema's ``$defs.training`` is :func:`schema` (aeqa_model.config fills it in
  before validating; ``workflow/schemas/config.schema.yaml`` keeps a stub);
* gradient accumulation, :func:`update_freq`, is the trainer's and the cluster's
  (``aeqa_model.cluster``: the runtime from throughput, the batch check) alike.

This module imports nothing of the package but ``aeqa_model.io`` (tests/test_layers.py
gives it a layer of its own, ``train_settings``, below train, cluster and config), so
the workflow's start-up reads it without torch.

To add a setting, add one field, e.g.::

    my_every: int = setting(100, "updates between my things", schema={"minimum": 1}, resumable=True)

and read ``settings.my_every`` in the trainer.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Mapping

from aeqa_model.declared import closed_schema, declared, declared_defaults, from_values
from aeqa_model.io import InputError

# How a value of a field's type is read from a spec (as the trainer always did: int(),
# float(), tuple(); strings as they are, so that amp: none / false keep their meaning).
CASTS = {int: int, float: float, bool: bool, tuple[float, float]: tuple,
         int | None: lambda value: None if value is None else int(value)}

POSINT = {"minimum": 1}   # on an integer: the schema's $defs.posint
NONNEG = {"minimum": 0}   # on a number: the schema's $defs.nonneg


def setting(default=MISSING, help: str = "", *, choices=None, schema: dict | None = None, resumable: bool = False):
    """A field of :class:`TrainingSettings`: its ``default`` (none: the key is required),
    ``help`` line, ``choices`` (the values it takes), ``schema`` (JSON-schema keywords
    refining the ones its type gives) and ``resumable`` (left out of the setup
    fingerprint: editing it keeps an interrupted run resumable)."""
    return declared(default, help, choices=choices, schema=schema, resumable=resumable, required=default is MISSING)


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The ``training:`` section of the config (overlaid by a dataset's ``training:``, a
    model's ``training:`` and the dataset's ``model_training.<model>``: cluster.train_spec)."""

    # -- length and batches
    max_updates: int = setting(help="updates to train for (lambda and the glancing ratio anneal over it, models' "
                                    "anneal_updates default)", schema=POSINT)
    max_tokens: int = setting(help="tokens (source or target, the larger) per batch and process", schema=POSINT)
    update_freq: int = setting(1, "batches accumulated per update (without effective_batch_tokens)", schema=POSINT)
    effective_batch_tokens: int | None = setting(
        None, "tokens per update (the paper's 64k/8k): update_freq is then ceil(effective_batch_tokens / "
              "(max_tokens x processes)), whatever the GPU count", schema=POSINT)
    # -- optimizer and schedule
    lr: float = setting(help="peak learning rate of the inverse-sqrt schedule (AdamW)", schema={"exclusiveMinimum": 0})
    warmup_updates: int = setting(4000, "updates of linear warm-up to lr", schema={"minimum": 0})
    warmup_init_lr: float = setting(1e-7, "learning rate at update 0 of the warm-up", schema=NONNEG)
    adam_betas: tuple[float, float] = setting(
        (0.9, 0.98), "AdamW's (beta1, beta2)",
        schema={"items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "minItems": 2, "maxItems": 2})
    adam_eps: float = setting(1e-8, "AdamW's epsilon", schema={"exclusiveMinimum": 0})
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", schema=NONNEG)
    clip_norm: float = setting(0.0, "gradient norm clipping (0: none)", schema=NONNEG)
    # The models' own Seq2SeqOptions.label_smoothing declares 0.1 too; the trainer always
    # passes this one to the model (tests/test_training_settings.py checks they agree).
    label_smoothing: float = setting(0.1, "epsilon of the label-smoothed cross-entropy, passed to the model",
                                     schema={"minimum": 0, "maximum": 1})
    amp: str = setting("auto", "autocast on CUDA: auto = bf16, bf16, fp16 (with loss scaling), none = fp32; CPU "
                               "runs are always fp32", choices=("auto", "bf16", "fp16", "none"))
    # Resumable: compiling changes how the step is computed (fused kernels, float rounding,
    # batch widths padded to pad_to_multiple), not what: the same losses of the same
    # batches, up to float tolerance (tests/test_train_compile.py). And `auto` already
    # compiles or not with the device, which the fingerprint does not see either: a run
    # interrupted on a GPU and resumed on a CPU goes on eager under the same setting.
    # Off by default until a GPU run has measured it (issue 27): inductor on CUDA, bf16 and
    # NCCL are untested here, and a paper run should not be the first to try them.
    compile: str | bool = setting(
        False, "torch.compile the training step (the model's losses, forward and backward): auto = on CUDA only "
               "(CPU runs stay eager), true, false (the default until measured on a GPU); eager is the reference",
        choices=("auto", True, False), resumable=True)
    pad_to_multiple: int = setting(
        8, "with compile on: a training batch's source and target widths are padded up to a multiple of this, so "
           "that the compiled step sees few shapes (1: no padding); every model masks padding", schema=POSINT,
        resumable=True)
    # -- validation, checkpoints, logs (resumable: the weights of every update are the same whatever they are)
    validate_every: int = setting(1000, "updates between validations (and checkpoint_best.pt)", schema=POSINT,
                                  resumable=True)
    validate_bleu_sentences: int = setting(0, "validation sentences decoded for the logged validation BLEU "
                                              "(0: none)", schema={"minimum": 0}, resumable=True)
    save_every: int = setting(1000, "updates between periodic checkpoints", schema=POSINT, resumable=True)
    keep_last: int = setting(3, "periodic checkpoints kept", schema=POSINT, resumable=True)
    average_last: int = setting(1, "final: average averages this many last checkpoints (the final weights "
                                   "included); at most keep_last", schema=POSINT, resumable=True)
    final: str = setting("average", "the weights of model.pt: best (lowest valid loss), last, or the average of "
                                    "the last average_last checkpoints", choices=("best", "last", "average"))
    tensorboard: bool = setting(True, "also log to tensorboard/ (when tensorboard is installed)", resumable=True)
    max_consecutive_skips: int = setting(10, "stop (exit 1) after this many updates in a row skipped for a "
                                             "non-finite loss or gradient", schema=POSINT,
                                         resumable=True)

    @classmethod
    def from_dict(cls, spec: Mapping) -> "TrainingSettings":
        """The settings of a (merged) training spec, every missing key at its default, each
        cast to its type; InputError naming the required keys it lacks. Keys it does not
        declare are ignored (the config schema refuses them first)."""
        missing = [name for name in required_keys() if name not in spec]
        if missing:
            raise InputError(f"training: {', '.join(missing)} not set; the training settings need "
                             f"{', '.join(required_keys())} (config section training:, or a dataset's or "
                             f"model's training:)")
        return from_values(cls, spec, CASTS)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        """The declared default of every key that has one (not the required ones)."""
        return declared_defaults(cls)


def resumable_keys() -> set[str]:
    """The keys left out of a run's setup fingerprint (``train.checkpoint.RESUMABLE_KEYS``)."""
    return {f.name for f in fields(TrainingSettings) if f.metadata["resumable"]}


def required_keys() -> list[str]:
    """The keys without a default, in declaration order."""
    return [f.name for f in fields(TrainingSettings) if f.metadata["required"]]


def schema() -> dict:
    """The JSON schema of a ``training:`` mapping (the config schema's ``$defs.training``):
    closed (a typo is an unknown key), each key's schema from its type or choices, refined
    by its ``schema`` keywords, its help line as the description. No key is required in
    it (module docstring)."""
    return closed_schema(TrainingSettings, require=False)


DEFAULTS = TrainingSettings.defaults()


def spec_value(spec: Mapping, key: str):
    """``training.<key>`` of a raw spec as written, else its declared default (KeyError for
    a required key the spec lacks, as a spec lookup)."""
    if key in spec:
        return spec[key]
    return DEFAULTS[key]


def update_freq(spec: Mapping, world: int) -> int:
    """Micro-batches per update, for the trainer (``Trainer.update_freq``) and the cluster's
    runtimes and batch check alike. With ``effective_batch_tokens`` (the paper's 64k/8k
    tokens per update) it is derived from max_tokens and the number of processes,
    ``ceil(effective_batch_tokens / (max_tokens x world))``, so the effective batch stays
    the same whatever the GPU count; else ``update_freq``."""
    target = spec_value(spec, "effective_batch_tokens")
    if target:
        return max(1, math.ceil(int(target) / (int(spec["max_tokens"]) * world)))
    return int(spec_value(spec, "update_freq"))


def averaging_problem(spec: Mapping) -> str | None:
    """Why the final weights could not be the average asked for (None: they can): only the
    last ``keep_last`` periodic checkpoints are kept, so ``average_last`` above it used to
    average fewer of them (``keep_last: 1``: the final weights alone) without a word."""
    average_last = int(spec_value(spec, "average_last"))
    keep_last = int(spec_value(spec, "keep_last"))
    if spec_value(spec, "final") != "average" or average_last <= keep_last:
        return None
    return (f"average_last {average_last} is larger than keep_last {keep_last}: only the last {keep_last} "
            f"periodic checkpoints are kept, so the final model could not average {average_last}; set "
            f"average_last <= keep_last (or raise keep_last)")
