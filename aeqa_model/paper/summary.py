"""One Markdown row per evaluated cell of a run: the compact view docs/fidelity.md quotes.

    python -m aeqa_model.paper.summary results/fidelity [--dataset ddtp_ende] [--direction en-de]

Without ``--dataset`` the run's only evaluated dataset is used (an error lists
them when there are several).

Every number comes from the run's own files: test scores and the seed from
``eval/.../metrics.json``, the last validation BLEU from the model's
``train_log.csv``. (The log's ``valid_loss`` is each model's own training
objective, glancing and SQA terms included, so it is not comparable across
architectures and is left out.)
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from aeqa_model.io import EXIT_BAD_INPUT, InputError

HEADER = ("| data | model | decoding | seed | test BLEU (tok) | chrF | hyp/ref length | last valid BLEU (update) |\n"
          "|---|---|---|---|---|---|---|---|")


def last_validation(log: Path) -> tuple[float, int] | None:
    if not log.exists():
        return None
    with open(log, encoding="utf-8", newline="") as handle:
        points = [(float(r["valid_bleu"]), int(r["update"])) for r in csv.DictReader(handle) if r.get("valid_bleu")]
    return points[-1] if points else None


def summary_rows(run_dir: str | Path, dataset: str, direction: str) -> list[str]:
    run = Path(run_dir)
    paths = sorted((run / "eval" / dataset / direction).glob("*/*/*/metrics.json"))
    if not paths:
        raise InputError(f"{run}/eval/{dataset}/{direction}: no metrics.json (run the workflow first)")
    rows = []
    for path in paths:
        data, model, decoding = path.parts[-4:-1]
        doc = json.loads(path.read_text(encoding="utf-8"))
        bleu = doc["metrics"]["bleu_tok"]
        valid = last_validation(run / "models" / dataset / direction / data / model / "train_log.csv")
        valid_text = f"{valid[0]:.2f} ({valid[1]})" if valid else "—"
        rows.append(f"| {data} | {model} | {decoding} | {doc['provenance'].get('seed')} | {bleu['score']:.2f} | "
                    f"{doc['metrics']['chrf']['score']:.1f} | {bleu['sys_len'] / max(bleu['ref_len'], 1):.2f} | "
                    f"{valid_text} |")
    return rows


def only_dataset(run_dir: str | Path) -> str:
    """The one dataset with evaluated cells under ``run_dir/eval``."""
    run = Path(run_dir)
    found = sorted(p.name for p in (run / "eval").glob("*") if p.is_dir())
    if len(found) != 1:
        raise InputError(f"{run}/eval: " + (f"several datasets ({', '.join(found)}); pick one with --dataset"
                                             if found else "no evaluated cells (run the workflow first)"))
    return found[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="results/<run_name>")
    p.add_argument("--dataset", help="default: the run's only evaluated dataset")
    p.add_argument("--direction", default="en-de")
    args = p.parse_args(argv)
    try:
        rows = summary_rows(args.run_dir, args.dataset or only_dataset(args.run_dir), args.direction)
    except InputError as err:
        print(f"summary: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
