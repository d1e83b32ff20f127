"""Model options, each declared once.

Every architecture declares the options of its config entry as one dataclass next
to its model class, in the manner of fairseq's dataclass configs: one field per
option with its type, its default and a help line
(``field(default, metadata={"help": ...})``, written ``option(default, help)``).
The dataclasses follow the class hierarchy (``NATOptions(ModelOptions)``,
``GLATOptions(NATOptions)``, ``AEQANATOptions(SQSOptions, NATOptions)``, ...); a
model class names its own as ``Options``. Everything else derives from them:

* the defaults: ``Seq2SeqModel.__init__`` sets ``self.opts = Options.from_dict(options)``,
  which the models read; a value is cast to its field's type (``float``, ``int``,
  ``bool``) as the models did, default or not;
* the typo check (``aeqa_model.models.check_options``): a key of a config entry
  must be a field of its arch's Options, of ``TransformerConfig`` or one of
  ``models.ENTRY_KEYS`` (keys every entry has: arch, size, training, ...);
* the schema of the config's model entries: ``aeqa_model.config`` adds every
  option's JSON schema (``schema_of``: from its type or ``choices``, refined by
  ``schema``; its help line is the description) to
  ``workflow/schemas/config.schema.yaml`` before validating;
* what the workflow reads of a model's options (``aeqa_model.config_facts.codebook_size``,
  ``needs_sqs``): the declared defaults through ``Options.from_dict``.

To add an option, add one field to the Options of the class that reads it, e.g.::

    my_weight: float = option(0.5, "weight of L_my (Eq. 42)", schema={"minimum": 0})

and read ``self.opts.my_weight``. Nothing else restates it; ``workflow=True`` marks
an option the workflow reads and the model does not (``sqs_init``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from aeqa_model.declared import declared, field_schemas, from_values

# How a value of a field's type is read from a config entry (as the models always did).
CASTS = {float: float, int: int, bool: bool}


def option(default, help: str, *, choices=None, schema: dict | None = None, workflow: bool = False):
    """A field of an Options dataclass: its ``default`` and ``help`` line; ``choices``,
    the values it takes; ``schema``, JSON-schema keywords that refine (or replace) the
    ones its type gives, for the config check; ``workflow``: read by the workflow only."""
    return declared(default, help, choices=choices, schema=schema, workflow=workflow)


@dataclass(frozen=True)
class ModelOptions:
    """The base of every architecture's options (no options of its own)."""

    @classmethod
    def from_dict(cls, options: dict):
        """The options of a config entry (the keys it does not declare are ignored:
        ``check_options`` refuses them first), every missing one at its default."""
        return from_values(cls, options, CASTS)

    def conflicts(self) -> list[str]:
        """Combinations of options a model cannot run with (each a sentence naming the
        options); the config check reports them at start-up. None by default."""
        return []

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        """Every option at its declared default, as a model reads it."""
        return {f.name: getattr(cls.from_dict({}), f.name) for f in fields(cls)}

    @classmethod
    def schema_of(cls) -> dict[str, dict]:
        """The JSON schema of every option (for the config's model entries)."""
        return field_schemas(cls)
