"""Fetch the pipeline's source files into a checksummed, offline-capable cache.

Two kinds of source are supported (the ``type`` key of a ``sources:`` entry):

``type: url``
    A file on an HTTP(S) server. Keys: ``url`` (one address) and/or ``urls`` /
    ``mirrors`` (a list tried in order), optional ``filename`` (default: the last
    path component of the first URL), optional ``size`` (bytes) and ``sha256`` or
    ``md5``. The download streams into ``<file>.part`` with a progress bar,
    retries transient failures with exponential back-off, resumes a partial
    file with an HTTP ``Range`` request, and falls back to the next mirror on a
    permanent failure (404, wrong checksum, an HTML page instead of the file).
    Without a checksum, an archive (``.tgz``, ``.gz``, ``.zip``, ``.tar``,
    ``.bz2``, ``.xz``) must read to its end (:func:`archive_problem`), so a cut
    file served as if complete is refused too. Only a verified file is renamed
    to its final name, so the cache never holds a file that looks finished but
    is not.

``type: pip_wheel``
    A wheel from PyPI fetched with ``pip download --no-deps --only-binary=:all:``
    (so pip's index, proxy and certificate settings apply), then checked against
    ``sha256`` and moved into the cache.

``type: local``
    A file that is already on disk (``path``), checked like the others and used
    in place; this is how manually obtained corpora (e.g. CWMT) enter the DAG.

Cache layout: ``<cache>/<source name>/<file name>``. The cache directory is the
``AEQA_DATA_CACHE`` environment variable when set, else the caller's default.
A cached file whose checksum (or, without one, size) matches is reused without
touching the network.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from tqdm import tqdm

from aeqa_model.io import InputError

CHUNK = 1 << 16
USER_AGENT = "aeqa-nat-data/0.1 (+reproduction pipeline; python-urllib)"

#: File name endings of binary archives: such a download must never start like HTML.
ARCHIVE_SUFFIXES = (".gz", ".tgz", ".zip", ".tar", ".xz", ".bz2", ".whl", ".7z", ".zst")
#: The only downloads allowed to be HTML pages (any other file that starts like one is an
#: error or login page served with status 200).
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


@dataclass
class FetchedSource:
    """Where a source ended up and how it was verified (goes into manifests)."""

    name: str
    path: str
    sha256: str
    size: int
    origin: str
    from_cache: bool
    checksum_verified: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _PermanentError(Exception):
    """This mirror cannot deliver the file (try the next one, do not retry)."""


class _TransientError(Exception):
    """A retry against the same mirror may succeed (network hiccup, 5xx)."""


def resolve_cache_dir(default: str | os.PathLike) -> Path:
    """The cache directory: ``$AEQA_DATA_CACHE`` if set and non-empty, else ``default``."""
    env = os.environ.get("AEQA_DATA_CACHE", "").strip()
    return Path(env if env else default).expanduser()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_checksum(spec: Mapping) -> tuple[str, str] | None:
    """(algorithm, lowercase hex) from the spec, or None when it gives none."""
    for algorithm in ("sha256", "md5"):
        value = spec.get(algorithm)
        if value:
            return algorithm, str(value).strip().lower()
    return None


def _verify(path: Path, spec: Mapping) -> tuple[bool, str]:
    """Check size and checksum of ``path`` against ``spec``; returns (ok, reason)."""
    size = spec.get("size")
    actual_size = path.stat().st_size
    if size is not None and actual_size != int(size):
        return False, f"size {actual_size} bytes, expected {int(size)} bytes"
    expected = _expected_checksum(spec)
    if expected is not None:
        algorithm, value = expected
        actual = file_digest(path, algorithm)
        if actual != value:
            return False, f"{algorithm} mismatch: expected {value}, actual {actual}"
    return True, ""


def archive_problem(path: str | os.PathLike, filename: str | None = None) -> str | None:
    """Read an archive to its end; why it is cut or corrupt, or None when it is whole.

    Used for downloads without a configured checksum, whose bytes nothing else can
    vouch for: a mirror that serves a cut ``.tgz`` with a matching Content-Length
    would otherwise land in the cache and fail much later, far from its URL.
    ``filename`` (default: the path's name) decides the format; formats the
    standard library cannot read (``.7z``, ``.zst``, split parts) are not checked.
    """
    path = Path(path)
    name = (filename or path.name).lower()
    try:
        if name.endswith((".zip", ".whl")):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # every member, CRC-checked
            return f"zip member {bad} is corrupt (CRC mismatch)" if bad else None
        opener = {".gz": gzip.open, ".tgz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(
            next((s for s in (".tgz", ".gz", ".bz2", ".xz") if name.endswith(s)), ""))
        if opener is not None:
            with opener(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
            return None
        if name.endswith(".tar"):
            size = path.stat().st_size
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if member.offset_data + member.size > size:
                        return f"tar member {member.name} is cut off"
            return None
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError, zlib.error) as err:
        return f"not a complete archive ({type(err).__name__}: {err})"
    return None


def _looks_like_html(head: bytes) -> bool:
    """True if the first bytes of a download are an HTML page (an error or login page)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<!doctype") or text.startswith(b"<html")


def _mirrors(spec: Mapping) -> list[str]:
    urls: list[str] = []
    if spec.get("url"):
        urls.append(str(spec["url"]))
    for key in ("urls", "mirrors"):
        value = spec.get(key) or []
        if isinstance(value, str):
            value = [value]
        urls.extend(str(u) for u in value)
    # Keep the order, drop repeats.
    return list(dict.fromkeys(urls))


def _filename(name: str, spec: Mapping, urls: list[str]) -> str:
    if spec.get("filename"):
        return str(spec["filename"])
    if not urls:
        raise InputError(f"source {name!r}: type url needs 'url' or 'urls' (a list of mirrors)")
    base = os.path.basename(urllib.parse.urlparse(urls[0]).path)
    if not base:
        raise InputError(f"source {name!r}: cannot derive a file name from {urls[0]}; set 'filename'")
    return base


def _download_once(url: str, part: Path, target_name: str, reject_html: bool,
                   timeout: float, progress: bool) -> None:
    """One HTTP attempt: stream ``url`` into ``part``, resuming from its current size.

    Raises _TransientError (retry the same URL), _PermanentError (next mirror).
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # The server says our partial file already covers the whole range:
            # let the caller verify it as it is.
            return
        if err.code in (408, 425, 429) or err.code >= 500:
            raise _TransientError(f"HTTP {err.code} {err.reason}") from None
        raise _PermanentError(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _TransientError(f"connection failed: {reason}") from None

    with contextlib.closing(response):
        status = getattr(response, "status", None) or 200
        length = response.headers.get("Content-Length")
        if offset and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                # A server that answers a different range than asked: start over.
                part.unlink()
                raise _TransientError(f"unexpected Content-Range {content_range!r}; restarting")
            total = offset + int(length) if length else None
            mode = "ab"
        else:
            # 200: the server ignores Range (or this is a fresh download).
            offset = 0
            total = int(length) if length else None
            mode = "wb"
        received = 0
        try:
            out = open(part, mode)
        except OSError as err:
            raise _disk_error(err, part, url) from err
        with out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=target_name, disable=not progress, mininterval=1.0, leave=False,
        ) as bar:
            first = True
            while True:
                try:
                    block = response.read(CHUNK)
                except (socket.timeout, ConnectionError, http.client.HTTPException) as err:
                    raise _TransientError(f"connection dropped after {offset + received} bytes: {err!r}") from None
                if not block:
                    break
                if first and offset == 0 and reject_html and _looks_like_html(block[:512]):
                    out.close()
                    part.unlink()
                    raise _PermanentError(
                        "the server sent an HTML page (status 200) instead of the file; "
                        "the URL probably moved or needs a login")
                first = False
                try:
                    out.write(block)
                except OSError as err:  # a full disk or quota: retrying or another mirror cannot help
                    raise _disk_error(err, part, url) from err
                received += len(block)
                bar.update(len(block))
        if total is not None and offset + received < total:
            raise _TransientError(f"truncated: got {offset + received} of {total} bytes")


def _disk_error(err: OSError, part: Path, url: str) -> OSError:
    """The local write of a download failed: name the file, the URL and what to do."""
    message = (f"{err.strerror or err} while writing {part} (downloading {url}); the partial file is kept "
               f"and the next run resumes it: free space in {part.parent} (or set AEQA_DATA_CACHE to a "
               f"larger disk) and rerun")
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _fetch_from_mirror(name, url, spec, part, filename, reject_html, *, retries, backoff,
                       timeout, progress, sleep, log) -> str | None:
    """Try one mirror (with retries); None when ``part`` now holds the verified file, else why not."""
    failure = "not attempted"
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            log(f"[download] {name}: retry {attempt}/{retries} of {url} in {wait:.1f}s")
            sleep(wait)
        resumed = part.exists()
        try:
            _download_once(url, part, filename, reject_html, timeout, progress)
        except _TransientError as err:
            failure = f"{err} (after {attempt + 1} attempt(s))"
            log(f"[download] {name}: {url}: {err}")
            continue
        except _PermanentError as err:
            log(f"[download] {name}: {url}: {err}")
            return str(err)
        if not part.exists():
            return "empty response"
        ok, reason = _verify(part, spec)
        if ok and _expected_checksum(spec) is None:
            # No checksum to vouch for the bytes: an archive must at least read to its end.
            problem = archive_problem(part, filename)
            ok, reason = problem is None, problem or ""
        if not ok:
            # The bytes are proven wrong: never resume from them.
            part.unlink()
            log(f"[download] {name}: {url}: {reason}")
            if resumed:
                # The stale partial file may have been the culprit: one fresh try.
                failure = f"{reason} (resumed download)"
                continue
            return reason
        return None
    return failure


def fetch_url(name: str, spec: Mapping, cache_dir: str | os.PathLike, *, retries: int = 4,
              backoff: float = 2.0, timeout: float = 60.0, progress: bool = True,
              sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None
              ) -> FetchedSource:
    """Download a ``type: url`` source into ``cache_dir/name/`` and verify it.

    ``retries`` is the number of extra attempts per mirror for transient
    failures; the wait before attempt k is ``backoff * 2**(k-1)`` seconds.
    Raises InputError naming the file, each URL tried and, for a checksum
    mismatch, the expected and actual checksum.
    """
    log = log or _stderr
    urls = _mirrors(spec)
    target_dir = Path(cache_dir) / name
    filename = _filename(name, spec, urls)
    target = target_dir / filename
    part = target.with_name(target.name + ".part")
    reject_html = bool(spec.get("binary")) or not filename.lower().endswith(HTML_SUFFIXES)
    has_checksum = _expected_checksum(spec) is not None
    notes = [] if has_checksum else ["no checksum in config: the sha256 recorded here is the first download's"]

    if target.exists():
        ok, reason = _verify(target, spec)
        if ok:
            log(f"[download] {name}: using cached {target}")
            return FetchedSource(name, str(target), file_digest(target), target.stat().st_size,
                                 "cache", True, has_checksum, notes)
        log(f"[download] {name}: cached {target} is bad ({reason}); fetching again")
        target.unlink()
    if not urls:
        raise InputError(f"source {name!r}: type url needs 'url' or 'urls' (a list of mirrors)")

    target_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for url in urls:
        failure = _fetch_from_mirror(name, url, spec, part, filename, reject_html, retries=retries,
                                     backoff=backoff, timeout=timeout, progress=progress, sleep=sleep, log=log)
        if failure is None:
            os.replace(part, target)
            log(f"[download] {name}: saved {target} ({target.stat().st_size} bytes) from {url}")
            return FetchedSource(name, str(target), file_digest(target), target.stat().st_size,
                                 url, False, has_checksum, notes)
        failures.append(f"{url}: {failure}")
    expected = _expected_checksum(spec)
    wanted = f"{expected[0]} {expected[1]}" if expected else "no checksum configured"
    kept = f"; the partial file {part} is kept for resuming" if part.exists() else ""
    raise InputError(
        f"could not fetch source {name!r} into {target} (expected {wanted}):\n  - "
        + "\n  - ".join(failures)
        + f"\nCheck the URLs/mirrors in the config, or place a verified copy at {target}{kept}.")


def _run_pip(cmd: list[str]) -> int:
    """Run pip (a separate function so tests can replace it)."""
    return subprocess.run(cmd, check=False).returncode


def fetch_pip_wheel(name: str, spec: Mapping, cache_dir: str | os.PathLike, *,
                    log: Callable[[str], None] | None = None) -> FetchedSource:
    """Fetch ``package==version`` as a wheel with pip and verify its sha256."""
    log = log or _stderr
    package, version = spec.get("package"), spec.get("version")
    if not package or not version:
        raise InputError(f"source {name!r}: type pip_wheel needs 'package' and 'version'")
    expected = _expected_checksum(spec)
    has_checksum = expected is not None
    notes = [] if has_checksum else ["no checksum in config: the sha256 recorded here is the first download's"]
    target_dir = Path(cache_dir) / name
    stem = _wheel_stem(str(package), str(version))

    for candidate in sorted(target_dir.glob("*.whl")) if target_dir.is_dir() else []:
        if not candidate.name.lower().startswith(stem):
            continue
        ok, reason = _verify(candidate, spec)
        if ok:
            log(f"[download] {name}: using cached {candidate}")
            return FetchedSource(name, str(candidate), file_digest(candidate), candidate.stat().st_size,
                                 "cache", True, has_checksum, notes)
        log(f"[download] {name}: cached {candidate} is bad ({reason}); fetching again")
        candidate.unlink()

    target_dir.mkdir(parents=True, exist_ok=True)
    # The temporary directory sits inside the cache so that the final move is a rename.
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=target_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"{package}=={version}", "-d", tmp]
        log(f"[download] {name}: {' '.join(cmd)}")
        code = _run_pip(cmd)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if code != 0 or len(wheels) != 1:
            raise InputError(
                f"source {name!r}: `pip download {package}=={version}` failed (exit {code}, "
                f"{len(wheels)} wheel(s) produced); check the package name/version and your PyPI access "
                f"(pip's own log is above)")
        wheel = wheels[0]
        ok, reason = _verify(wheel, spec)
        if not ok:
            raise InputError(
                f"source {name!r}: {wheel.name} from PyPI ({package}=={version}): {reason}. "
                f"The wheel was not cached; check the config's sha256 for this source.")
        final = target_dir / wheel.name
        os.replace(wheel, final)
    log(f"[download] {name}: saved {final} ({final.stat().st_size} bytes)")
    return FetchedSource(name, str(final), file_digest(final), final.stat().st_size,
                         f"pypi:{package}=={version}", False, has_checksum, notes)


def _wheel_stem(package: str, version: str) -> str:
    """Lower-case wheel file name prefix of ``package==version`` (PEP 427 escaping)."""
    return f"{package.replace('-', '_').replace('.', '_')}-{version}-".lower()


def fetch_local(name: str, spec: Mapping, *, log: Callable[[str], None] | None = None) -> FetchedSource:
    """Use a file already on disk (``path``), verified against size/checksum if given."""
    log = log or _stderr
    path = Path(str(spec.get("path", ""))).expanduser()
    if not spec.get("path") or not path.is_file():
        hint = spec.get("instructions") or "download it manually and set 'path' in the config"
        raise InputError(f"source {name!r}: local file {path} not found; {hint}")
    ok, reason = _verify(path, spec)
    if not ok:
        raise InputError(f"source {name!r}: {path}: {reason}")
    has_checksum = _expected_checksum(spec) is not None
    log(f"[download] {name}: using local file {path}")
    return FetchedSource(name, str(path), file_digest(path), path.stat().st_size, "local",
                         True, has_checksum, [] if has_checksum else ["no checksum in config"])


def fetch_source(name: str, spec: Mapping, cache_dir: str | os.PathLike, **kwargs) -> FetchedSource:
    """Fetch one ``sources:`` entry according to its ``type``."""
    kind = spec.get("type")
    if kind == "url":
        return fetch_url(name, spec, cache_dir, **kwargs)
    if kind == "pip_wheel":
        return fetch_pip_wheel(name, spec, cache_dir, log=kwargs.get("log"))
    if kind == "local":
        return fetch_local(name, spec, log=kwargs.get("log"))
    raise InputError(f"source {name!r}: unknown type {kind!r} (expected url, pip_wheel or local)")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["FetchedSource", "resolve_cache_dir", "file_digest", "archive_problem", "fetch_url",
           "fetch_pip_wheel", "fetch_local", "fetch_source"]
