#!/usr/bin/env python
"""Score one decoded cell into metrics.json (called by the Snakemake evaluate rule).

Usage:
  python scripts/evaluate.py --hyp-tok F --ref-tok F --hyp-detok F --ref-detok F \
      --src-detok F --tgt-lang L --spec JSON --cell JSON --provenance JSON \
      --out metrics.json [--speed speed.json] \
      [--baseline-hyp-tok F --baseline-name NAME] [--extra-refs-tok F1 F2 ...]

See docs/metrics.md for what every number means and aeqa_model/metrics/evaluate.py
for the implementation.
"""
import sys
from pathlib import Path

try:
    from aeqa_model.metrics.evaluate import main
except ModuleNotFoundError:
    # Run from a checkout whose package is not installed into this
    # interpreter (e.g. a side environment for the optional metrics).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aeqa_model.metrics.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
