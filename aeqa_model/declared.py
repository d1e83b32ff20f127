"""JSON schemas from declared settings: the one rule that turns a dataclass of declared
fields (model options, models/options.py; training settings, train/settings.py; evaluate
settings, metrics/settings.py; each recipe's options, data/recipes/) into the config
schema's entries. Each field carries ``help``, ``choices`` and ``schema`` in
its metadata; its type gives the JSON type unless ``choices`` list the values.
"""
from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import get_type_hints

SCHEMA_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", tuple[float, float]: "array", tuple[float, ...]: "array",
                int | None: "integer"}


def declared(default=MISSING, help: str = "", *, choices=None, schema: dict | None = None, **flags):
    """A declared field: its ``default`` (none: the field is required), ``help`` line,
    ``choices`` (the values it takes) and ``schema`` (JSON-schema keywords refining the
    ones its type gives), with ``flags`` of the declaring kind (``workflow``,
    ``resumable``, ...) in its metadata."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "schema": dict(schema or {}), **flags}
    return field(metadata=metadata) if default is MISSING else field(default=default, metadata=metadata)


def from_values(cls, values, casts: dict):
    """An instance of the dataclass ``cls`` from the mapping ``values``: every field it
    does not give at its declared default, each cast by ``casts`` of the field's type
    (a type it does not list is taken as it is)."""
    hints = get_type_hints(cls)
    return cls(**{f.name: casts.get(hints[f.name], lambda value: value)(values[f.name] if f.name in values
                                                                         else f.default)
                  for f in fields(cls)})


def declared_defaults(cls) -> dict:
    """The declared default of every field that has one (the others are required)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def closed_schema(cls, require: bool = True) -> dict:
    """The JSON schema of a mapping of ``cls``'s fields: closed (a typo is an unknown
    key), each key's schema from :func:`field_schemas`, and (``require``) the fields
    without a default required."""
    schema = {"type": "object", "additionalProperties": False, "properties": field_schemas(cls)}
    if require:
        schema["required"] = [f.name for f in fields(cls) if f.default is MISSING]
    return schema


def field_schemas(cls) -> dict[str, dict]:
    """The JSON schema of every field of the dataclass ``cls``: its help line as the
    description, ``enum`` from its choices or ``type`` from its type, refined by its
    ``schema`` keywords."""
    hints = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        meta = f.metadata
        schema = {"description": meta["help"]}
        if meta["choices"]:
            schema["enum"] = list(meta["choices"])
        elif hints[f.name] in SCHEMA_TYPES:
            schema["type"] = SCHEMA_TYPES[hints[f.name]]
        schema.update(meta["schema"])
        out[f.name] = schema
    return out
