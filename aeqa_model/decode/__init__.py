"""Decoding strategies, kept apart from the models.

``generate(model, src, decoding, teacher=None, reference=None)`` dispatches on
``decoding['strategy']`` and returns one list of token ids per source row (no
specials). Each strategy is one entry of STRATEGIES: its function and its options.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import math
from dataclasses import dataclass

import torch

@dataclass(frozen=True)
class Strategy:
    """A decoding strategy: the function that runs it (``"module:function"``, imported
    on first use so that listing the strategies loads no decoder) and the options it
    reads besides ``strategy``. The functions take ``**_`` so that one decoding entry
    can be handed to any of them; without the option list a misspelt option
    (``len_pen``) would be ignored without a word."""

    function: str
    options: tuple[str, ...] = ()


# The one registry of strategies: a new strategy is one entry here (its options' rules
# in OPTION_RULES below, where an option is new).
STRATEGIES = {
    "beam": Strategy("aeqa_model.decode.beam:beam_search", ("beam", "lenpen", "max_len_a", "max_len_b")),
    "greedy": Strategy("aeqa_model.decode.beam:greedy", ("lenpen", "max_len_a", "max_len_b")),
    "argmax": Strategy("aeqa_model.decode.nat:argmax_decode", ("length_beam",)),
    "npd": Strategy("aeqa_model.decode.nat:noisy_parallel_decode", ("candidates", "rerank", "lambda_inf")),
    "aeqa_two_pass": Strategy("aeqa_model.decode.nat:argmax_decode", ("lambda_inf", "length_beam")),
    "oracle": Strategy("aeqa_model.decode.nat:oracle_decode", ("ratio", "seed")),
    "mask_predict": Strategy("aeqa_model.decode.mask_predict:mask_predict", ("iterations", "length_beam")),
    "lookahead": Strategy("aeqa_model.decode.dag:lookahead_decode"),
    "viterbi": Strategy("aeqa_model.decode.dag:viterbi_decode", ("lenpen",)),
}

# What each strategy option must be (JSON type and range; the defaults are the
# strategy functions' keyword defaults), checked at start-up with the config and
# again by generate(): `beam: four` or `beam: 0` used to reach the search and end in
# a TypeError or RuntimeError deep inside it.
OPTION_RULES = {
    "beam": {"type": "integer", "minimum": 1},
    "lenpen": {"type": "number"},
    "max_len_a": {"type": "number", "minimum": 0},
    "max_len_b": {"type": "integer", "minimum": 0},
    "length_beam": {"type": "integer", "minimum": 1},
    "candidates": {"type": "integer", "minimum": 1},
    "rerank": {"enum": ["teacher", "self"]},
    "lambda_inf": {"type": "number", "minimum": 0, "maximum": 1},
    "ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "seed": {"type": "integer", "minimum": 0},
    "iterations": {"type": "integer", "minimum": 1},
}


def option_problem(key: str, value) -> str | None:
    """Why ``value`` is not a valid value of decoding option ``key`` (None: it is)."""
    rule = OPTION_RULES[key]
    if "enum" in rule:
        return None if value in rule["enum"] else f"{value!r}: it must be one of {', '.join(rule['enum'])}"
    integer = isinstance(value, int) and not isinstance(value, bool)  # YAML's true is no beam size
    kind = "an integer" if rule["type"] == "integer" else "a finite number"
    bounds = [f"{sign} {rule[bound]}" for bound, sign in (("minimum", ">="), ("maximum", "<=")) if bound in rule]
    wanted = f"{kind} {' and '.join(bounds)}" if bounds else kind
    if not (integer or (rule["type"] == "number" and isinstance(value, float) and math.isfinite(value))):
        return f"{value!r} is not {kind}; it must be {wanted}"
    if not rule.get("minimum", value) <= value <= rule.get("maximum", value):
        return f"{value!r} is out of range; it must be {wanted}"
    return None


def check_decoding(name: str, decoding: dict) -> list[str]:
    """Problems with the config entry ``decodings.<name>``, one line each (empty if none)."""
    strategy = decoding.get("strategy")
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        return [f"decodings.{name}.strategy: unknown strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}"]
    allowed = STRATEGIES[strategy].options
    problems = [f"decodings.{name}.{key}: unknown option for strategy {strategy!r}; "
                f"known: {', '.join(allowed) if allowed else '(none)'}"
                for key in sorted(set(decoding) - {"strategy"} - set(allowed))]
    for key in allowed:
        problem = option_problem(key, decoding[key]) if key in decoding else None
        if problem:
            problems.append(f"decodings.{name}.{key}: {problem}")
    return problems


def strategy_fn(name: str):
    if name not in STRATEGIES:
        raise KeyError(f"unknown decoding strategy {name!r}; known: {sorted(STRATEGIES)}")
    module, fn = STRATEGIES[name].function.split(":")
    return getattr(importlib.import_module(module), fn)


def same_decoding(a: dict, b: dict) -> bool:
    """Whether two decoding entries run the same search: the same strategy, and the same
    options once those left at their strategy function's keyword default are filled in
    (``{beam: 4, lenpen: 1.0}`` is ``{beam: 4}``). An option the function only forwards
    (``**options``) counts as written, so this may say no to an equal pair, never yes to
    two different ones."""
    if a.get("strategy") != b.get("strategy") or a.get("strategy") not in STRATEGIES:
        return False
    defaults = {name: p.default for name, p in inspect.signature(strategy_fn(a["strategy"])).parameters.items()
                if p.default is not inspect.Parameter.empty}

    def filled(decoding: dict) -> dict:
        return {**defaults, **decoding}

    return filled(a) == filled(b)


def max_positions(model) -> int:
    """Positions of the model's sinusoidal table: the longest source (EOS included) and
    the longest decoder input it can read."""
    return int(model.cfg.max_positions)


def fit_source(model, src: torch.Tensor) -> torch.Tensor:
    """``src`` (B, S: tokens + EOS, right-padded) cut to the model's positions: a longer
    row keeps its first ``max_positions - 1`` tokens and ends in EOS. decode.cli cuts
    over-long sentences before batching and counts them; this is the guard for any
    other caller (a warning names how many rows were cut)."""
    limit = max_positions(model)
    if src.size(1) <= limit:
        return src
    d = model.dictionary
    lengths = src.ne(d.pad).sum(1)
    cut = lengths > limit
    out = src[:, :limit].clone()
    out[cut, limit - 1] = d.eos
    logging.getLogger(__name__).warning("%d source row(s) longer than the model's %d positions were cut to "
                                        "%d tokens + EOS", int(cut.sum()), limit, limit - 1)
    return out


def clamp_lengths(model, lengths: torch.Tensor) -> torch.Tensor:
    """Predicted target lengths (NAT, CMLM, CTC) capped at the model's positions: a
    length beyond them has no position embedding (a size mismatch, 1027 vs 1024)."""
    return lengths.clamp(min=1, max=max_positions(model))


@torch.no_grad()
def generate(model, src: torch.Tensor, decoding: dict, teacher=None, reference: torch.Tensor | None = None):
    problems = check_decoding("<entry>", decoding)
    if problems:
        raise ValueError("invalid decoding: " + "; ".join(problems))
    options = {k: v for k, v in decoding.items() if k != "strategy"}
    fn = strategy_fn(decoding["strategy"])
    src = fit_source(model, src)
    if reference is not None:
        reference = reference[:, :max_positions(model)]
    return fn(model, src, teacher=teacher, reference=reference, **options)


def strip(tokens: torch.Tensor, pad: int, eos: int) -> list[list[int]]:
    """Rows of ids -> lists without padding, cut at the first EOS."""
    out = []
    for row in tokens.tolist():
        seq = []
        for t in row:
            if t == eos:
                break
            if t != pad:
                seq.append(t)
        out.append(seq)
    return out
