"""The GPU tier's helpers (benchmarks/gpu_tier.sh, issue 26).

``info CONFIG...``
    prints the run name and the data stages' final outputs (comma-separated) of the
    configs, merged as Snakemake merges several --configfile files.
``archive --run results/<run> --phases F --gpu-check DIR --out gpu_tier.tgz ...``
    writes summary.md (device and commit, the wall time of each phase, gpu_check's
    table, the calibration and ablation tables, one row per evaluated cell with its
    seed, how far each training got, the learning curves) and one archive holding it
    with every metrics.json, train_log.csv and log, and the rendered tables and figures.
    Whatever finished goes in: a run cut by its deadline still comes back.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: What the archive holds from the run directory, beside summary.md.
ARCHIVED = ("eval/**/metrics.json", "models/**/train_log.csv", "logs/**/*.log", "paper/**/*",
            "sqs/**/stats.json", "benchmarks/**/*.tsv")


def merged_config(paths: list[str]) -> dict:
    import yaml
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    return config


def info(paths: list[str]) -> str:
    config = merged_config(paths)
    run = config["run_name"]
    reports = [f"results/{run}/data/{ds}/bin/report.json" for ds in config["datasets"]]
    return f"{run} {','.join(reports)}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown (no git)"


def training_progress(run: Path) -> list[str]:
    """One row per model directory: the last update logged and whether model.pt exists."""
    rows = ["| model | updates logged | last valid BLEU | model.pt |", "|---|---|---|---|"]
    for log in sorted(run.glob("models/*/*/*/*/train_log.csv")):
        with open(log, newline="", encoding="utf-8") as handle:
            entries = list(csv.DictReader(handle))
        bleu = [r["valid_bleu"] for r in entries if r.get("valid_bleu")]
        name = "/".join(log.parent.relative_to(run / "models").parts)
        rows.append(f"| {name} | {entries[-1]['update'] if entries else 0} | {bleu[-1] if bleu else '-'} | "
                    f"{'yes' if (log.parent / 'model.pt').exists() else 'no'} |")
    return rows


def cell_rows(run: Path) -> list[str]:
    from aeqa_model.io import InputError
    from aeqa_model.paper.summary import HEADER, summary_rows

    out = []
    for direction_dir in sorted(run.glob("eval/*/*")):
        try:
            rows = summary_rows(run, direction_dir.parent.name, direction_dir.name)
        except InputError as err:
            rows = [f"(none: {err})"]
        out += [f"**{direction_dir.parent.name} {direction_dir.name}**", "", HEADER, *rows, ""]
    return out or ["(no cell was evaluated)"]


def device_line(device: str) -> str:
    try:
        import torch

        if device == "cuda" and torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()} (torch {torch.__version__})"
        return f"{device} (torch {torch.__version__})"
    except ImportError:
        return device


def summary(args) -> str:
    run = Path(args.run)
    phases = [line.split("\t") for line in Path(args.phases).read_text().splitlines()] if Path(args.phases).exists() else []
    lines = [f"# GPU tier of the fidelity testbed: {run.name}", "",
             f"- commit: {git_commit()}",
             f"- device: {device_line(args.device)}; GPUs shared: {args.gpus}, {args.slots} jobs per GPU",
             f"- written: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {int(time.time()) - int(args.started)} s after "
             f"the start", "",
             "## Phases (wall time)", "", "| phase | seconds | exit |", "|---|---|---|",
             *[f"| {name} | {seconds} | {code} |" for name, seconds, code in phases], ""]
    gpu_check = Path(args.gpu_check) / "summary.md"
    lines += ["## gpu_check", "", gpu_check.read_text(encoding="utf-8") if gpu_check.exists() else "(not run)", ""]
    for table, title in (("table1", "Calibration (table1)"), ("table6", "AEQA-NAT's readings (table6)")):
        path = run / "paper" / f"{table}.md"
        lines += [f"## {title}", "", path.read_text(encoding="utf-8") if path.exists() else "(not rendered)", ""]
    lines += ["## Every evaluated cell (seed included)", "", *cell_rows(run), "",
              "## Training progress", "", *training_progress(run), ""]
    curves = sorted(str(p.relative_to(run)) for p in run.glob("paper/learning_curves.*"))
    lines += ["## Learning curves", "", ", ".join(curves) if curves else "(not rendered)", ""]
    return "\n".join(lines)


def archive(args) -> Path:
    run, target = Path(args.run), Path(args.out)
    text = summary(args)
    tmp = target.with_name(f".{target.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        data = text.encode("utf-8")
        member = tarfile.TarInfo("gpu_tier/summary.md")
        member.size, member.mtime = len(data), int(time.time())
        tar.addfile(member, io.BytesIO(data))
        for pattern in ARCHIVED:
            for path in sorted(run.glob(pattern)):
                if path.is_file():
                    tar.add(path, arcname=f"gpu_tier/{run.name}/{path.relative_to(run)}")
        check = Path(args.gpu_check)
        for path in sorted(check.glob("*")) if check.is_dir() else []:
            tar.add(path, arcname=f"gpu_tier/gpu_check/{path.name}")
    os.replace(tmp, target)
    print(text)
    print(f"gpu_tier: wrote {target}", file=sys.stderr)
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info")
    p_info.add_argument("configs", nargs="+")
    p_arch = sub.add_parser("archive")
    for name in ("--run", "--phases", "--gpu-check", "--out", "--started", "--device", "--gpus", "--slots"):
        p_arch.add_argument(name, required=True)
    args = p.parse_args(argv)
    if args.command == "info":
        print(info(args.configs))
    else:
        archive(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
