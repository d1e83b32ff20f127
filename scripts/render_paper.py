#!/usr/bin/env python
"""Render a paper table/figure, or the index, from metrics.json files (see aeqa_model/paper/cli.py)."""
import sys
from pathlib import Path

# Rules call this file directly; make the package importable from a checkout too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aeqa_model.paper.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
