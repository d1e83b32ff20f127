"""Render-paper stage: one paper table/figure, the index or the learning curves (the paper rules).

    python -m aeqa_model.paper.cli --target table1 --spec JSON --paper-dir config/paper --metrics F1 F2 ... --out-dir DIR
    python -m aeqa_model.paper.cli --target index --inputs DIR/table1.csv ... --out-dir DIR
    python -m aeqa_model.paper.cli --target learning_curves --inputs .../model/train_log.csv ... --out-dir DIR

``--spec`` is the output's spec from the grid file as a JSON string (what the
Snakefile passes) or the path of a JSON/YAML file holding it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from aeqa_model.io import EXIT_BAD_INPUT, InputError
from aeqa_model.paper.grid import FIGURES, TABLES


def _load_spec(text: str) -> dict:
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"--spec: neither a file nor valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise InputError("--spec: must be a JSON object")
    return spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aeqa-render-paper",
                                description="Render one paper table/figure (or the index) from metrics.json files.")
    p.add_argument("--target", required=True, help="table1..table7, figure1/4/5/6/7, index or learning_curves")
    p.add_argument("--spec", default="{}", help="the output's grid spec: JSON string or a JSON/YAML file")
    p.add_argument("--paper-dir", default="config/paper", help="directory of the paper's transcribed numbers")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files of the output's cells")
    p.add_argument("--inputs", nargs="*", default=[], help="(index) rendered table CSVs and figure files; (learning_curves) train_log.csv files")
    p.add_argument("--out-dir", required=True, help="where NAME.md/.tex/.csv or NAME.png/.pdf go")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.target == "index":
            from aeqa_model.paper.index import render_index
            spec = _load_spec(args.spec)
            path = render_index(args.inputs, args.out_dir, notice=spec.get("notice", ""))
            print(f"wrote {path}")
            return 0
        spec = _load_spec(args.spec)
        if args.target == "learning_curves":
            from aeqa_model.paper.curves import render_learning_curves
            paths = render_learning_curves(args.inputs, args.out_dir, notice=spec.get("notice", ""))
        elif args.target in TABLES:
            from aeqa_model.paper.tables import render_table
            paths = render_table(args.target, spec, args.paper_dir, args.metrics, args.out_dir)
        elif args.target in FIGURES:
            from aeqa_model.paper.figures import render_figure
            paths = render_figure(args.target, spec, args.paper_dir, args.metrics, args.out_dir)
        else:
            raise InputError(f"--target: unknown {args.target!r}; one of {', '.join(TABLES + FIGURES)}, index, "
                             "learning_curves")
    except InputError as err:
        print(f"render_paper: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
