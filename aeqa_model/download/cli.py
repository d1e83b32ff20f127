"""Download stage: fetch a dataset's sources into the cache and build ``orig/``.

Usage (as the Snakemake rule calls it)::

    python -m aeqa_model.download.cli --dataset demo_ende \
        --dataset-spec '{"recipe": "gettext_catalogs", "langs": ["en", "de"], ...}' \
        --sources-spec '{"django": {"type": "pip_wheel", ...}, ...}' \
        --cache-dir results/.cache --out-dir results/demo/data/demo_ende/orig

``--dataset-spec`` is the dataset's entry of ``datasets:`` and
``--sources-spec`` the ``sources:`` mapping (restricted to that dataset's
sources), both as JSON strings (or ``@file.json``). The cache directory is
overridden by ``$AEQA_DATA_CACHE``. Writes ``{train,valid,test}.{lang}`` and,
last, ``manifest.json`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aeqa_model.data.download import fetch_source, resolve_cache_dir
from aeqa_model.data.recipes import build_dataset
from aeqa_model.io import EXIT_BAD_INPUT, InputError, write_json


def _json_arg(value: str, flag: str):
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{flag}: not valid JSON ({err})") from None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aeqa-download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset name (a key of datasets:)")
    parser.add_argument("--dataset-spec", required=True, help="the dataset's config entry as JSON (or @file)")
    parser.add_argument("--sources-spec", required=True, help="sources: mapping as JSON (or @file)")
    parser.add_argument("--cache-dir", required=True, help="download cache (overridden by $AEQA_DATA_CACHE)")
    parser.add_argument("--out-dir", required=True, help="where orig/{split}.{lang} and manifest.json go")
    parser.add_argument("--retries", type=int, default=4, help="extra attempts per mirror (default 4)")
    parser.add_argument("--no-progress", action="store_true", help="hide download progress bars")
    args = parser.parse_args(argv)
    try:
        spec = _json_arg(args.dataset_spec, "--dataset-spec")
        sources = _json_arg(args.sources_spec, "--sources-spec")
        cache = resolve_cache_dir(args.cache_dir)
        log(f"[download] dataset {args.dataset}: recipe {spec.get('recipe')}, cache {cache}")
        started = time.monotonic()
        fetched = {}
        for name in spec.get("sources", []):
            if name not in sources:
                raise InputError(f"dataset {args.dataset!r} uses source {name!r}, which is not in sources:")
            kwargs = {"log": log}
            if sources[name].get("type") == "url":
                kwargs.update(retries=args.retries, progress=not args.no_progress)
            fetched[name] = fetch_source(name, sources[name], cache, **kwargs)
        fetch_seconds = time.monotonic() - started
        manifest = build_dataset(args.dataset, spec, fetched, args.out_dir, log=log)
        manifest["timings_s"] = {"fetch": round(fetch_seconds, 2),
                                 "recipe": round(time.monotonic() - started - fetch_seconds, 2)}
        write_json(Path(args.out_dir) / "manifest.json", manifest)
        log(f"[download] {args.dataset}: wrote {args.out_dir}/manifest.json "
            f"(fetch {fetch_seconds:.1f}s, recipe {manifest['timings_s']['recipe']:.1f}s)")
    except InputError as err:
        log(f"error: {err}")
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
