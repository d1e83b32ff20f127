"""File helpers shared by every stage: atomic writes and strict UTF-8 line reading.

Every output of the pipeline is written to a temporary file in the same
directory and renamed into place, so a killed job never leaves a file that
looks finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Iterable, Iterator


#: The process umask, read once at import (reading it means setting it, which is not
#: thread-safe later on): atomic_open gives its outputs the mode open() would.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# The exit codes of every stage CLI (python -m aeqa_model.<stage>.cli), one map for all
# (docs/cluster.md "Exit codes"): what a job's exit code tells its user and Snakemake.
EXIT_OK = 0
EXIT_FAILED = 1      # the run failed: training diverged, or a file could not be written or read (a full disk)
EXIT_BAD_INPUT = 2   # bad input or settings: the message names them; nothing was written
EXIT_RERUN = 75      # EX_TEMPFAIL: interrupted after a checkpoint (a signal); rerun the job to resume


class InputError(RuntimeError):
    """Bad user input (file, corpus, config): the message names what and what to do."""


class OutputError(OSError):
    """An output could not be written (a full disk, a quota, an I/O error); the message
    names the file, says that the previous one is unchanged and what to do. Its errno
    is the cause's, so it is still the OSError it was (ENOSPC stays ENOSPC)."""


def os_error_message(err: OSError) -> str:
    """One line for an OSError that ends a job, so that the command lines print it in
    place of a traceback: a failed write names its file and the way out already
    (OutputError); any other (a read, a mkdir) is given the way out here."""
    if isinstance(err, OutputError):
        return str(err)
    return f"{err}; free disk space or fix the cause (the path, its permissions) and rerun"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; an output should be as readable as any file
        # the user writes (a shared results directory on a cluster stays shared).
        with contextlib.suppress(OSError):  # best effort: some network file systems refuse
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if err.filename is not None or err.errno is None or isinstance(err, OutputError):
            raise  # already names its file (e.g. an input that could not be read)
        # A full disk, a quota or an I/O error in write()/fsync(), which name no file:
        # say which output failed and what is left. The errno (so the class) stays.
        raise OutputError(err.errno, f"{err.strerror or err} while writing {path}; nothing was replaced "
                                     f"(the previous {path.name}, if any, is unchanged): free disk space "
                                     f"or fix the error and rerun") from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def checksum_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the checksums of a ``torch.save`` file (None: every record checks).

    torch.save writes a zip archive that stores a CRC32 of every record (the pickled
    structure and each tensor's bytes), but torch.load never compares them: a region
    of a checkpoint zeroed on disk (size unchanged) loads as weights with zeros in
    them, and a run resumes from it or decodes with it without a word. Reading every
    record through ``zipfile`` checks them all: 0.7 s for 512 MiB from the page cache
    on the busy 2-core development machine (torch.load of the same file: 0.4-0.6 s),
    so a second or two for a paper-size checkpoint with its optimizer state. A file
    that is not a zip archive (torch's legacy format, or one whose directory was
    destroyed) has nothing to check here; torch.load then reads or refuses it."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as record:  # reading a record to its end checks its CRC32
                    while record.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"damaged on disk ({err}: its bytes no longer match the CRC32s and structure written with it)"
    return None


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write one line per item (no embedded newlines allowed), atomically."""
    with atomic_open(path) as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a text file as strict UTF-8 lines without their line endings.

    Invalid UTF-8 is an error that names the file and the line, never a silent
    replacement that could shift a corpus.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data[: err.start].count(b"\n") + 1
        raise InputError(f"{path}:{line_no}: invalid UTF-8 ({err.reason}); fix or drop that line") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
