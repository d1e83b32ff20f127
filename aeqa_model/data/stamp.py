"""Completion stamp for stages whose outputs depend on a dataset's languages.

Snakemake tracks the stamp; it lists every file with its line count and sha256
and is written last, so a stage that died half way has no stamp and reruns.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from aeqa_model.io import InputError, write_json


def describe(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"{path}: expected output is missing")
    data = path.read_bytes()
    return {"path": str(path), "lines": data.count(b"\n"), "sha256": hashlib.sha256(data).hexdigest()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--files", nargs="+", required=True)
    args = parser.parse_args(argv)
    write_json(args.out, {"files": [describe(Path(f)) for f in args.files]})


if __name__ == "__main__":
    main()
