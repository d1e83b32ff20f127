"""Evaluate stage: score one decoded cell into metrics.json (called by the Snakemake evaluate rule).

Usage::

    python -m aeqa_model.evaluate.cli --hyp-tok F --ref-tok F --hyp-detok F --ref-detok F \
        --src-detok F --tgt-lang L --spec JSON --cell JSON --provenance JSON \
        --out metrics.json [--speed speed.json] \
        [--baseline-hyp-tok F --baseline-name NAME] [--extra-refs-tok F1 F2 ...]

See docs/metrics.md for what every number means and aeqa_model/metrics/evaluate.py
for the implementation.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from aeqa_model.metrics.evaluate import evaluate_cell


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aeqa-evaluate",
        description="Score one decoded cell (tokenized BLEU, SacreBLEU, chrF, chrF++, TER, "
                    "COMET, BLEURT, repetition, length buckets, multi-reference BLEU, "
                    "paired bootstrap) into metrics.json.")
    p.add_argument("--hyp-tok", required=True, help="hypotheses, Moses-tokenized, BPE removed")
    p.add_argument("--ref-tok", required=True, help="reference, Moses-tokenized")
    p.add_argument("--hyp-detok", required=True, help="hypotheses, detokenized")
    p.add_argument("--ref-detok", required=True, help="reference, detokenized (original text)")
    p.add_argument("--src-detok", required=True, help="source, detokenized (for COMET)")
    p.add_argument("--tgt-lang", required=True, help="target language code (zh selects tok:zh)")
    p.add_argument("--spec", required=True, help="the evaluate: config section, JSON (inline or file)")
    p.add_argument("--cell", required=True, help="JSON object copied to metrics.json 'cell'")
    p.add_argument("--provenance", required=True, help="JSON object copied to 'provenance'")
    p.add_argument("--out", required=True, help="metrics.json to write (atomically)")
    p.add_argument("--speed", help="speed.json of the decode stage, copied to 'speed'")
    p.add_argument("--baseline-hyp-tok", help="baseline hypotheses (tokenized) for the paired bootstrap")
    p.add_argument("--baseline-name", help="name of the baseline cell, recorded in 'significance'")
    p.add_argument("--extra-refs-tok", nargs="+", default=None,
                   help="additional tokenized reference files for multi-reference BLEU")
    p.add_argument("--multi-reference-from", default=None,
                   help="metrics.json of the same model on a multi-reference set (e.g. Ott et al. 2018); "
                        "its multi_reference entry replaces this one's (Table 4)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where COMET and BLEURT run (the config's device; auto: a GPU when torch sees one)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return evaluate_cell(**vars(args))


if __name__ == "__main__":
    sys.exit(main())
