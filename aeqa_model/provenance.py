"""Provenance written next to every number: config hash, git commit, versions, seed, device."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "numpy", "sacrebleu", "sacremoses", "subword-nmt", "sentencepiece", "snakemake",
            "unbabel-comet")


def config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def git_commit(root: str | Path | None = None) -> str:
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(seed: int | None = None, device: str | None = None, config_sha256: str = "") -> dict:
    return {"config_sha256": config_sha256, "git_commit": git_commit(), "versions": versions(),
            "seed": seed, "device": device,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
