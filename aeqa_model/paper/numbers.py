"""Exact number handling for the paper tables.

Reproduced values arrive as JSON floats; the paper's values are strings such as
``"26.57"``, ``"+0.29"`` or ``"17.0x"``.  Everything is converted to
:class:`decimal.Decimal` through the shortest ``repr`` of the float, so that a
metrics value of ``2.675`` renders as ``2.68`` (what a reader expects) rather
than ``2.67`` (what binary rounding of ``2.67499999...`` gives), and
differences are computed on the full-precision value, never on a rounded one.
"""
from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_TWO = Decimal("0.01")
_PAPER_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(x?)\s*$")


def to_decimal(value) -> Decimal | None:
    """Convert a metrics value (int, float, numeric string) to Decimal; None if not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # repr() is the shortest string that round-trips, i.e. the value the
        # metric code meant to write.
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return None


def parse_paper_number(text: str | None) -> Decimal | None:
    """Numeric value of a paper cell (``"26.57"``, ``"+0.29"``, ``"17.0x"``); None for ``-``, ``M``, ``✓``, blanks."""
    if not text:
        return None
    match = _PAPER_NUMBER.match(text)
    if not match:
        return None
    return Decimal(match.group(1))


def fmt2(value: Decimal | float | None, signed: bool = False) -> str:
    """Exactly two decimals, rounded half-up from the full-precision value."""
    dec = to_decimal(value)
    if dec is None:
        return ""
    quantized = dec.quantize(_TWO, rounding=ROUND_HALF_UP)
    if quantized == 0:
        quantized = abs(quantized)  # never print "-0.00"
    text = f"{quantized:f}"
    if signed and quantized >= 0:
        text = "+" + text
    return text


def full(value: Decimal | float | None) -> str:
    """Full-precision text for CSV output (no rounding at all)."""
    dec = to_decimal(value)
    if dec is None:
        return ""
    return format(dec.normalize(), "f") if dec == dec.to_integral_value() else format(dec, "f")
