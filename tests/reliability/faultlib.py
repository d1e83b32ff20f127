"""Shared fault injectors for tests/reliability (not a test module)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import VOCAB, make_pairs  # the unit tests' toy task

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


# ------------------------------------------------------------------ corpora --
def write_tiny_corpus(out: Path) -> Path:
    """dict.txt + binarized train (200 pairs) and valid (30 pairs) under ``out``."""
    from aeqa_model.data.dictionary import Dictionary
    from aeqa_model.data.indexed import write_indexed

    out.mkdir(parents=True, exist_ok=True)
    Dictionary(VOCAB).save(out / "dict.txt")
    for split, n, seed in (("train", 200, 0), ("valid", 30, 1)):
        pairs = make_pairs(n, seed)
        write_indexed(out / f"{split}.src", [p[0] for p in pairs])
        write_indexed(out / f"{split}.tgt", [p[1] for p in pairs])
    return out


# --------------------------------------------------------------- disk full --
class _FullDisk:
    """A file object that accepts ``budget`` bytes, then fails every write with ENOSPC."""

    def __init__(self, handle, budget: int, path: str):
        self._handle, self._budget, self._path = handle, budget, path

    def write(self, data):
        size = len(data)
        if size > self._budget:
            self._handle.write(data[: self._budget])
            self._budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __iter__(self):
        return iter(self._handle)


@contextlib.contextmanager
def disk_full(monkeypatch, name_part: str, budget: int = 0, nth: int = 1):
    """Make the ``nth`` atomic write whose file name contains ``name_part`` fail with
    ENOSPC after ``budget`` bytes (the write of :func:`aeqa_model.io.atomic_open`'s
    temporary file is patched, as a full disk would fail it). Yields a list that
    receives the paths of the writes that failed."""
    import aeqa_model.io as aio

    real_fdopen = os.fdopen
    failed: list[str] = []
    seen = [0]

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if isinstance(fd, int):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if name_part in Path(path).name:
                seen[0] += 1
                if seen[0] == nth:
                    failed.append(path)
                    return _FullDisk(handle, budget, path)
        return handle

    monkeypatch.setattr(aio.os, "fdopen", fdopen)
    try:
        yield failed
    finally:
        monkeypatch.setattr(aio.os, "fdopen", real_fdopen)


# ------------------------------------------------------------------- files --
def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- snakemake --
def snakemake_cmd(workdir: Path, configfile: Path, results: Path, *extra: str) -> list[str]:
    """Snakemake on the repo's workflow, run from ``workdir`` (its .snakemake/ lock and
    metadata stay there, away from the checkout's and other tests')."""
    return [PYTHON, "-m", "snakemake", "--snakefile", str(ROOT / "workflow/Snakefile"),
            "--profile", str(ROOT / "profiles/local"), "--workflow-profile", str(ROOT / "profiles/default"),
            "--configfile", str(configfile), "--config", f"results_dir={results}", *extra]


def snakemake_env() -> dict:
    env = dict(os.environ)
    env.setdefault("AEQA_DATA_CACHE", str(ROOT / "results/.cache"))
    return env


def run_snakemake(workdir: Path, configfile: Path, results: Path, *extra: str, timeout: float = 600):
    return subprocess.run(snakemake_cmd(workdir, configfile, results, *extra), cwd=workdir, env=snakemake_env(),
                          capture_output=True, text=True, timeout=timeout)


_FORKSERVER = None


def forkserver(preload: list[str]):
    """A forkserver that imports ``preload`` once: each run of a driver is a fresh
    process (a SIGKILL kills just it), without paying for the torch import every time.
    The forkserver is one per test session: the first caller's preload list wins, the
    others' modules are imported by the children themselves."""
    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(list(preload))
    return _FORKSERVER


class Run:
    """A finished (or running) driver process: its exit code and its log."""

    def __init__(self, process, log: Path):
        self.process, self.log = process, log

    @property
    def returncode(self):
        return self.process.exitcode

    @property
    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    stdout = ""   # the driver logs everything to its log file (read as stderr)


def write_text_corpus(out: Path, sentences: int) -> Path:
    """``out/train.en`` and ``out/train.de``: ``sentences`` seeded pseudo-sentence pairs
    (the target reverses and renames the source words), the raw text pretrain_sqs reads."""
    import numpy as np

    rng = np.random.default_rng(0)
    src, tgt = [], []
    for _ in range(sentences):
        ids = rng.integers(0, 40, size=int(rng.integers(3, 10)))
        src.append(" ".join(f"word{i}" for i in ids))
        tgt.append(" ".join(f"wort{(i * 7) % 40}" for i in ids[::-1]))
    (out / "train.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    (out / "train.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return out
