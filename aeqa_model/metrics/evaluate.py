"""The evaluate stage: every metric of one decoded cell into one metrics.json.

``aeqa_model.evaluate.cli`` (called by the Snakemake ``evaluate`` rule) parses
the flags and calls :func:`evaluate_cell`. The output layout is the ``metrics.json``
contract of docs/formats.md; docs/metrics.md says what each number means.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

import sacrebleu

from ..io import EXIT_BAD_INPUT, InputError, read_json, read_lines, write_json
from .bleu import multi_reference_bleu, tokenized_bleu
from .buckets import length_bucket_bleu, validate_edges
from .detok import detok_metrics
from .neural import bleurt_score, comet_score
from .repetition import ngram_repetition
from .settings import checked as checked_settings
from .significance import paired_bootstrap

log = logging.getLogger("aeqa_model.metrics.evaluate")

def _check_spec(spec) -> dict:
    """The evaluate settings ``spec`` (the ``evaluate:`` config section) with its defaults,
    checked against their declarations (metrics/settings.py), the bucket edges in order."""
    merged = checked_settings(spec)
    try:
        merged["length_buckets"] = validate_edges(merged["length_buckets"])
    except (ValueError, TypeError) as err:
        raise InputError(f"evaluate.length_buckets: {err}") from None
    return merged


def _aligned(a: tuple[str, list[str]], b: tuple[str, list[str]]) -> None:
    """Raise an InputError naming both files when their line counts differ."""
    (name_a, lines_a), (name_b, lines_b) = a, b
    if len(lines_a) != len(lines_b):
        raise InputError(
            f"line count mismatch: {name_a} has {len(lines_a)} lines but {name_b} has "
            f"{len(lines_b)}; they must be aligned line by line")


def _no_empty(name: str, lines: list[str]) -> None:
    # An empty reference makes every hypothesis for it score zero silently;
    # it is a data-preparation bug, so fail loudly. Empty hypotheses are
    # legitimate model output and are kept.
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{name}:{i}: empty reference line; the test set must have none")


def evaluate(*, hyp_tok: Sequence[str], ref_tok: Sequence[str], hyp_detok: Sequence[str],
             ref_detok: Sequence[str], src_detok: Sequence[str], tgt_lang: str, spec: dict,
             baseline_hyp_tok: Sequence[str] | None = None, baseline_name: str | None = None,
             extra_refs_tok: Sequence[Sequence[str]] | None = None,
             progress: bool = True, device: str = "auto") -> dict:
    """Compute the ``metrics`` object of metrics.json from aligned line lists.

    Inputs must already be aligned (same length); :func:`main` checks that on
    the files. ``spec`` is the ``evaluate:`` config section. ``device`` (auto, cpu or
    cuda): where the neural metrics run; auto takes a GPU when torch sees one.
    """
    spec = _check_spec(spec)
    # Leftover subword marks would silently deflate tokenized BLEU; warn
    # rather than fail because "@@" can in principle be a real token.
    if any("@@ " in h or h.endswith("@@") for h in hyp_tok):
        log.warning("hypotheses contain '@@' BPE marks; tokenized BLEU expects BPE-removed text")
    metrics: dict = {}
    metrics["bleu_tok"] = tokenized_bleu(hyp_tok, ref_tok)
    metrics.update(detok_metrics(hyp_detok, ref_detok, tgt_lang))

    log.info("COMET ...")
    metrics["comet"] = comet_score(src_detok, hyp_detok, ref_detok, spec["comet_model"],
                                   batch_size=spec["comet_batch_size"], progress=progress,
                                   gpus=None if device == "auto" else int(device == "cuda"))
    log.info("BLEURT ...")
    metrics["bleurt"] = bleurt_score(hyp_detok, ref_detok, spec["bleurt_checkpoint"],
                                     batch_size=spec["bleurt_batch_size"], progress=progress,
                                     device=None if device == "auto" else device)

    metrics["repetition"] = ngram_repetition(hyp_tok, spec["repetition_max_n"])
    buckets = length_bucket_bleu(hyp_tok, ref_tok, spec["length_buckets"])
    metrics["length_buckets"] = buckets["buckets"]
    metrics["length_buckets_outside"] = buckets["outside"]

    if extra_refs_tok:
        metrics["multi_reference"] = multi_reference_bleu(hyp_tok, [list(ref_tok), *map(list, extra_refs_tok)])
    else:
        metrics["multi_reference"] = {
            "score": None, "single_ref_score": metrics["bleu_tok"]["score"], "n_refs": 1,
            "status": "not available: no extra references given (--extra-refs-tok)"}

    n_bs = spec["bootstrap_samples"]
    seed = spec["bootstrap_seed"]
    method = f"paired bootstrap (sacrebleu), tokenized BLEU, n={n_bs}, seed={seed}"
    if baseline_hyp_tok is not None:
        result = paired_bootstrap(hyp_tok, baseline_hyp_tok, ref_tok, n_samples=n_bs, seed=seed,
                                  progress=progress)
        metrics["significance"] = {"baseline": baseline_name, **result, "method": method}
    else:
        metrics["significance"] = {
            "baseline": None, "p_value": None, "method": method,
            "status": "not available: no baseline given (--baseline-hyp-tok)"}
    return metrics


def _json_arg(value: str, flag: str) -> dict:
    """A JSON object given inline (``'{"a": 1}'``) or as a path to a .json file."""
    text = value.strip()
    try:
        obj = json.loads(text) if text.startswith("{") else read_json(value)
    except FileNotFoundError:
        raise InputError(f"{flag}: {value!r} is neither inline JSON nor an existing file") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{flag}: invalid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{flag}: expected a JSON object, got {type(obj).__name__}")
    return obj


def evaluate_cell(*, hyp_tok: str, ref_tok: str, hyp_detok: str, ref_detok: str, src_detok: str, tgt_lang: str,
                  spec: str, cell: str, provenance: str, out: str, speed: str | None = None,
                  baseline_hyp_tok: str | None = None, baseline_name: str | None = None,
                  extra_refs_tok: Sequence[str] | None = None, multi_reference_from: str | None = None,
                  no_progress: bool = False, device: str = "auto") -> int:
    """Score the files named (aeqa_model.evaluate.cli's flags, whose help lines say what
    each is; ``spec``, ``cell``, ``provenance``, ``speed`` and ``multi_reference_from`` are
    JSON inline or a path) and write ``out``.

    Returns the exit code: 0, or 2 on bad input (reported on stderr)."""
    paths = {"hyp_tok": hyp_tok, "ref_tok": ref_tok, "hyp_detok": hyp_detok, "ref_detok": ref_detok,
             "src_detok": src_detok}
    try:
        spec_values = _json_arg(spec, "--spec")
        cell_values = _json_arg(cell, "--cell")
        provenance_values = _json_arg(provenance, "--provenance")

        files = {k: (path, read_lines(path)) for k, path in paths.items()}
        _aligned(files["hyp_tok"], files["ref_tok"])
        _aligned(files["hyp_detok"], files["ref_detok"])
        _aligned(files["hyp_tok"], files["hyp_detok"])
        _aligned(files["src_detok"], files["ref_detok"])
        if not files["ref_tok"][1]:
            raise InputError(f"{ref_tok}: no sentences to evaluate")
        _no_empty(*files["ref_tok"])
        _no_empty(*files["ref_detok"])

        baseline = None
        if baseline_hyp_tok:
            baseline = (baseline_hyp_tok, read_lines(baseline_hyp_tok))
            _aligned(files["hyp_tok"], baseline)
        elif baseline_name:
            raise InputError("--baseline-name given without --baseline-hyp-tok")
        extra = []
        for path in extra_refs_tok or []:
            ref = (path, read_lines(path))
            _aligned(files["ref_tok"], ref)
            _no_empty(*ref)
            extra.append(ref[1])

        if speed:
            speed_values = _json_arg(speed, "--speed")
        else:
            speed_values = {"status": "not available: no --speed file given"}

        metrics = evaluate(
            hyp_tok=files["hyp_tok"][1], ref_tok=files["ref_tok"][1],
            hyp_detok=files["hyp_detok"][1], ref_detok=files["ref_detok"][1],
            src_detok=files["src_detok"][1], tgt_lang=tgt_lang, spec=spec_values,
            baseline_hyp_tok=baseline[1] if baseline else None,
            baseline_name=(baseline_name or baseline_hyp_tok) if baseline else None,
            extra_refs_tok=extra or None, progress=not no_progress, device=device)
        if multi_reference_from:
            other = _json_arg(multi_reference_from, "--multi-reference-from")
            entry = dict(other["metrics"]["multi_reference"])
            entry["evaluated_on"] = {"file": multi_reference_from, "cell": other.get("cell"),
                                     "n_sentences": other.get("n_sentences")}
            metrics["multi_reference"] = entry
    except InputError as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Sources the decoder had to cut to the model's positions (decode.cli counts them in
    # speed.json): a score over cut sentences says so next to the numbers.
    if isinstance(speed_values, dict) and "source_truncation" in speed_values:
        provenance_values["source_truncation"] = speed_values["source_truncation"]
    # The metric library's version belongs next to the numbers it produced.
    provenance_values.setdefault("versions", {}).setdefault("sacrebleu", sacrebleu.__version__)
    write_json(out, {
        "cell": cell_values,
        "n_sentences": len(files["hyp_tok"][1]),
        "metrics": metrics,
        "speed": speed_values,
        "provenance": provenance_values,
    })
    log.info("wrote %s: bleu_tok %.2f, sacrebleu %.2f, chrf %.2f", out,
             metrics["bleu_tok"]["score"], metrics["sacrebleu"]["score"], metrics["chrf"]["score"])
    return 0
