"""Recipe ``parallel_corpora``: the WMT / IWSLT recipes. Aligned files (plain
text, SGML ``<seg>`` files, IWSLT ``train.tags`` files) read from
``.tgz``/``.tar``/``.zip``/``.gz`` archives, concatenated per split; ``valid``
may be every n-th training line (fairseq's ``prepare-wmt14en2de.sh --icml17``
and ``prepare-iwslt14.sh``)."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Mapping, Sequence

from aeqa_model.declared import declared
from aeqa_model.io import InputError, atomic_open

from .common import SPLITS, Recipe, read_options

# --------------------------------------------------------------------------
# archives and line readers (WMT / IWSLT)
# --------------------------------------------------------------------------

class _ConcatReader(io.RawIOBase):
    """Read several files as one stream (archives split into parts, e.g. UNv1.0 ``.tar.gz.00``)."""

    def __init__(self, paths: Sequence[str]):
        self._paths = list(paths)
        self._handle: IO[bytes] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._handle is None:
                if not self._paths:
                    return 0
                self._handle = open(self._paths.pop(0), "rb")
            count = self._handle.readinto(buffer)
            if count:
                return count
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        super().close()


def _is_tar(paths: Sequence[str]) -> bool:
    name = paths[0].lower()
    return name.endswith((".tgz", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz")) or ".tar.gz." in name \
        or ".tgz." in name


def extract_members(paths: Sequence[str], members: Iterable[str], dest: str | os.PathLike,
                    source_name: str = "") -> dict[str, Path]:
    """Extract the named ``members`` of an archive (given as one path or its parts) into ``dest``.

    Tar archives (any compression, also split into parts) are read in one
    streaming pass; zip archives by name. A member name ``None`` or ``""``
    means the file itself (``.gz`` files are decompressed). Returns
    member -> extracted path. A missing member is an InputError that lists a
    few members that do exist.
    """
    wanted = list(dict.fromkeys(members))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    label = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"
    found: dict[str, Path] = {}
    if any(not m for m in wanted):
        if len(paths) != 1:
            raise InputError(f"source {source_name!r}: a multi-part source needs member names")
        path = Path(paths[0])
        if path.name.lower().endswith(".gz") and not _is_tar(paths):
            target = dest / path.name[:-3]
            try:
                with gzip.open(path, "rb") as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (OSError, EOFError) as err:
                raise InputError(f"{path} (source {source_name!r}): not a valid gzip file ({err}); "
                                 f"delete it from the cache and download again") from None
            found[""] = target
        else:
            found[""] = path
        wanted = [m for m in wanted if m]
    if not wanted:
        return found
    try:
        if _is_tar(paths):
            with _ConcatReader(paths) as raw, io.BufferedReader(raw, 1 << 20) as buffered, \
                    tarfile.open(fileobj=buffered, mode="r|*") as tar:
                for info in tar:
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    if name in wanted and info.isfile():
                        target = dest / f"{len(found)}_{Path(name).name}"
                        with tar.extractfile(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        found[name] = target
                        if all(m in found for m in wanted):
                            break
            available_hint = ""
            if not all(m in found for m in wanted):
                with _ConcatReader(paths) as raw, io.BufferedReader(raw, 1 << 20) as buffered, \
                        tarfile.open(fileobj=buffered, mode="r|*") as tar:
                    names = [i.name for i in tar if i.isfile()][:15]
                available_hint = ", ".join(names)
        elif paths[0].lower().endswith(".zip"):
            with zipfile.ZipFile(paths[0]) as archive:
                names = archive.namelist()
                for member in wanted:
                    if member in names:
                        target = dest / f"{len(found)}_{Path(member).name}"
                        with archive.open(member) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        found[member] = target
                available_hint = ", ".join(names[:15])
        else:
            raise InputError(f"{label} (source {source_name!r}): members {wanted} requested, but the file is "
                             f"not a .tgz/.tar/.zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(f"{label} (source {source_name!r}): cannot read the archive ({err}); "
                         f"delete it from the cache and download again") from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise InputError(f"{label} (source {source_name!r}): member(s) {missing} not in the archive; "
                         f"it has e.g. {available_hint}. Fix 'files' in the dataset's recipe_options.")
    return found


_SEG = re.compile(rb"<seg[^>]*>\s*(.*?)\s*</seg>", re.IGNORECASE)
#: Metadata lines fairseq's prepare-iwslt14.sh removes with ``grep -v`` (a substring anywhere).
FORMATS = ("text", "sgm", "xml", "iwslt_tags")

# One corpus entry of a split (read_segments and _corpus_pairs say what each key does).
CORPUS_ENTRY = {
    "type": "object", "additionalProperties": False, "required": ["source", "files"],
    "properties": {
        "source": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             {"type": "object", "additionalProperties": {"type": "string"}}]},
        "files": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "format": {"enum": list(FORMATS)},
        "replace": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                                               "maxItems": 2}},
        "skip": {"type": "array", "items": {"type": "string"}},
    },
}
CORPORA = {"type": "array", "items": CORPUS_ENTRY, "minItems": 1}
CORPORA_OR_EVERY_NTH = {"anyOf": [CORPORA, {
    "type": "object", "additionalProperties": False, "required": ["every_nth_train"],
    "properties": {"every_nth_train": {"type": "integer", "minimum": 2}}}]}


@dataclass(frozen=True, kw_only=True)
class ParallelCorporaOptions:
    """The ``recipe_options`` of :func:`parallel_corpora`: the corpus entries of each split."""

    train: list = declared(help="corpus entries concatenated into train", schema=CORPORA)
    valid: list | dict = declared(help="corpus entries of valid, or {every_nth_train: N} (taken out of train)",
                                  schema=CORPORA_OR_EVERY_NTH)
    test: list | dict = declared(help="corpus entries of test, or {every_nth_train: N}", schema=CORPORA_OR_EVERY_NTH)


IWSLT_SKIP_DEFAULT = ("<url>", "<talkid>", "<keywords>")
_IWSLT_DROP_TAGS = re.compile(rb"</?(?:title|description)>")


def read_segments(path: str | os.PathLike, fmt: str, skip: Sequence[str] | None = None) -> Iterator[bytes]:
    """Yield the segments of a corpus file as bytes lines (without line ends).

    ``text``: one segment a line (split on ``\\n`` only, a trailing ``\\r``
    removed; other separators such as U+2028 stay inside the line, so lines
    never shift). ``sgm``/``xml``: the text of every ``<seg ...>`` line, tags
    and surrounding space removed (as fairseq's ``grep '<seg id' | sed``).
    ``iwslt_tags``: an IWSLT ``train.tags`` file: lines containing one of
    ``skip`` (default :data:`IWSLT_SKIP_DEFAULT`, fairseq's
    ``prepare-iwslt14.sh``: ``<url>``, ``<talkid>``, ``<keywords>``) are
    dropped, ``<title>``/``<description>`` tags removed (their text kept) and
    the line stripped.
    """
    skip_bytes = [s.encode("utf-8") for s in (IWSLT_SKIP_DEFAULT if skip is None else skip)]
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            if fmt == "text":
                yield line
            elif fmt in ("sgm", "xml"):
                if b"<seg" in line:
                    match = _SEG.search(line)
                    if match is None:
                        raise InputError(f"{path}: cannot parse the <seg> line {line[:80]!r}")
                    yield match.group(1)
            elif fmt == "iwslt_tags":
                if any(tag in line for tag in skip_bytes):
                    continue
                yield _IWSLT_DROP_TAGS.sub(b"", line).strip()
            else:
                raise InputError(f"{path}: unknown corpus format {fmt!r} ({', '.join(FORMATS)})")


def _apply_replacements(line: bytes, replacements: Sequence[Sequence[str]]) -> bytes:
    for old, new in replacements:
        line = line.replace(old.encode("utf-8"), new.encode("utf-8"))
    return line


def _corpus_pairs(entry: Mapping, langs: Sequence[str], paths: Mapping[str, str], workdir: Path,
                  dataset: str) -> tuple[Iterator[tuple[bytes, ...]], dict]:
    """Aligned segment tuples (one per lang) of one corpus entry of ``recipe_options``.

    ``source`` is a source name, a list of names (the parts of one split
    archive, read as one stream), or a mapping ``{lang: name}`` when each
    language comes from its own source (e.g. two local text files).
    """
    spec_source = entry.get("source")
    if isinstance(spec_source, Mapping):
        per_lang = {lang: [spec_source.get(lang)] for lang in langs}
    else:
        names = spec_source if isinstance(spec_source, list) else [spec_source]
        per_lang = {lang: names for lang in langs}
    label = spec_source if isinstance(spec_source, str) else json.dumps(spec_source, ensure_ascii=False)
    for names in per_lang.values():
        for source in names:
            if source not in paths:
                raise InputError(f"dataset {dataset!r}: corpus entry {label} uses source {source!r}, which is "
                                 f"not in the dataset's sources list")
    files = entry.get("files") or {}
    missing = [lang for lang in langs if lang not in files]
    if missing:
        raise InputError(f"dataset {dataset!r}: corpus entry {label} has no file for language(s) {missing} "
                         f"under 'files' (use null for the source file itself)")
    fmt = entry.get("format", "text")
    files_by_lang: dict[str, Path] = {}
    groups: dict[tuple[str, ...], list[str]] = {}
    for lang in langs:
        groups.setdefault(tuple(per_lang[lang]), []).append(lang)
    for names, group_langs in groups.items():
        extracted = extract_members([paths[n] for n in names], [files[lang] for lang in group_langs],
                                    workdir / f"x{len(list(workdir.iterdir()))}", names[0])
        for lang in group_langs:
            files_by_lang[lang] = extracted[files[lang] or ""]
    replacements = entry.get("replace") or []
    skip = entry.get("skip")
    info = {"source": spec_source, "files": {lang: files[lang] for lang in langs}, "format": fmt, "lines": 0}

    def generate() -> Iterator[tuple[bytes, ...]]:
        iterators = [read_segments(files_by_lang[lang], fmt, skip) for lang in langs]
        count = 0
        while True:
            row = [next(it, None) for it in iterators]
            if all(item is None for item in row):
                break
            if any(item is None for item in row):
                counts = {lang: count + sum(1 for _ in it) + (row[i] is not None)
                          for i, (lang, it) in enumerate(zip(langs, iterators))}
                raise InputError(
                    f"dataset {dataset!r}: {label}: files are not aligned: "
                    + ", ".join(f"{files[lang] or paths[per_lang[lang][0]]} has {counts[lang]} segments"
                                for lang in langs)
                    + "; check the 'files' and 'format' of this corpus entry")
            count += 1
            yield tuple(_apply_replacements(item, replacements) for item in row)
        info["lines"] = count

    return generate(), info


def parallel_corpora(dataset: str, spec: Mapping, paths: Mapping[str, str], out_dir: str | os.PathLike,
                     log: Callable[[str], None] = print) -> dict:
    """Concatenate aligned corpus files per split (the WMT and IWSLT recipes).

    ``recipe_options`` keys:

    ``train``, ``valid``, ``test``
        Lists of corpus entries ``{source: NAME (or a list of parts), files:
        {lang: member path inside the archive, or null for the file itself},
        format: text|sgm|xml|iwslt_tags, replace: [[old, new], ...]}``,
        concatenated in order. ``valid`` (and ``test``) may instead be
        ``{every_nth_train: N}``: every N-th line of the concatenated training
        data (1-based, ``awk 'NR % N == 0'``) goes there and is removed from
        train, as in fairseq's WMT14 ``--icml17`` (N=100) and IWSLT14 (N=23)
        recipes.

    Lines are copied as bytes, so invalid UTF-8 in a raw corpus reaches the
    prepare stage, which counts and drops it on train. The text is not
    otherwise changed (no tokenization, no cleaning).
    """
    options = read_options(ParallelCorporaOptions, "parallel_corpora", dataset, spec)
    langs = list(spec["langs"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nth = {split: int(getattr(options, split)["every_nth_train"])
           for split in ("valid", "test") if isinstance(getattr(options, split), Mapping)}
    manifest: dict = {"recipe": "parallel_corpora", "corpora": {}, "splits": {}}
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=out_dir) as tmp:
        workdir = Path(tmp)
        # Train first, routing every n-th line to the held-out split(s).
        with _SplitWriter(out_dir, langs, ["train", *nth]) as writer:
            line_no = 0
            manifest["corpora"]["train"] = []
            for entry in options.train:
                pairs, info = _corpus_pairs(entry, langs, paths, workdir, dataset)
                for row in pairs:
                    line_no += 1
                    target = next((s for s, n in nth.items() if line_no % n == 0), "train")
                    writer.write(target, row)
                manifest["corpora"]["train"].append(info)
                log(f"[recipe] {dataset}: train: {info['source']}: {info['lines']} lines")
                _clear(workdir)
            manifest["splits"].update(writer.counts)
        for split in ("valid", "test"):
            if split in nth:
                manifest["corpora"][split] = {"every_nth_train": nth[split]}
                continue
            entries = getattr(options, split)
            manifest["corpora"][split] = []
            with _SplitWriter(out_dir, langs, [split]) as writer:
                for entry in entries:
                    pairs, info = _corpus_pairs(entry, langs, paths, workdir, dataset)
                    for row in pairs:
                        writer.write(split, row)
                    manifest["corpora"][split].append(info)
                    log(f"[recipe] {dataset}: {split}: {info['source']}: {info['lines']} lines")
                    _clear(workdir)
                manifest["splits"].update(writer.counts)
    for split in SPLITS:
        if not manifest["splits"].get(split):
            raise InputError(f"dataset {dataset!r}: split {split} came out empty; check recipe_options")
    manifest["splits"] = {split: manifest["splits"][split] for split in SPLITS}
    log(f"[recipe] {dataset}: " + ", ".join(f"{s} {n}" for s, n in manifest["splits"].items()))
    return manifest


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


class _SplitWriter:
    """Atomic binary writers for ``{split}.{lang}`` files, committed together on success."""

    def __init__(self, out_dir: Path, langs: Sequence[str], splits: Sequence[str]):
        self.out_dir, self.langs, self.splits = out_dir, list(langs), list(splits)
        self.counts = {split: 0 for split in splits}
        self._handles: dict[tuple[str, str], IO[bytes]] = {}

    def __enter__(self) -> "_SplitWriter":
        self._stack = contextlib.ExitStack()
        self._stack.__enter__()
        for split in self.splits:
            for lang in self.langs:
                self._handles[split, lang] = self._stack.enter_context(
                    atomic_open(self.out_dir / f"{split}.{lang}", "wb"))
        return self

    def write(self, split: str, row: Sequence[bytes]) -> None:
        for lang, item in zip(self.langs, row):
            self._handles[split, lang].write(item + b"\n")
        self.counts[split] += 1

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)


RECIPE = Recipe(parallel_corpora, ParallelCorporaOptions)
