"""Fault-injection suite: the ``fault`` marker, the output ledger and the closing summary.

Every test in this directory injects one fault (a kill, a corrupt download, a
bad corpus, a bad config, a concurrent run, a full disk) and checks that the
pipeline survives it. The ``ledger`` fixture records the files that must
survive the fault (``ledger.protect(path)`` stores their sha256 and mtime);
after the test, any protected file that vanished or changed counts as an output
lost and fails the test. The error messages a test saw are recorded with
``ledger.message(text, names=...)``, which also checks that the message names
the file/key and says what to do.

At the end of the session one line sums it up, computed from the results:

    reliability: 31 faults injected, 31 survived, 0 outputs lost

Set ``AEQA_RELIABILITY_REPORT=<file.json>`` to also write every fault test's
outcome and the error messages it saw (docs/reliability.md lists them).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

#: Words of an actionable message: it says what to do next.
ACTION_WORDS = re.compile(
    r"\b(rerun|re-run|run|fix|check|set|delete|remove|free|download|place|use|rebuild|make sure|"
    r"expected|allowed|must|needs?|required)\b", re.IGNORECASE)

_RESULTS: dict[str, dict] = {}
_KEY = pytest.StashKey[dict]()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Ledger:
    """Files that must survive the fault, and the error messages the fault produced."""

    def __init__(self):
        self.protected: dict[Path, tuple[str, int] | None] = {}
        self.messages: list[str] = []
        self.lost_earlier: list[str] = []

    def protect(self, *paths) -> None:
        """Record the current content and mtime of each path (a directory: every file under it)."""
        for path in paths:
            path = Path(path)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                self.protected[file] = (_sha256(file), file.stat().st_mtime_ns)

    def lost(self) -> list[str]:
        """Protected files that are gone or whose bytes or mtime changed."""
        out = []
        for path, (digest, mtime) in self.protected.items():
            if not path.is_file():
                out.append(f"{path} (gone)")
            elif _sha256(path) != digest:
                out.append(f"{path} (content changed)")
            elif path.stat().st_mtime_ns != mtime:
                out.append(f"{path} (rewritten)")
        return out

    def verify(self) -> None:
        """Check the protected files now, then release them (a later rerun may replace them)."""
        lost = self.lost()
        self.lost_earlier.extend(lost)
        self.protected.clear()
        assert not lost, "outputs lost after the fault:\n  " + "\n  ".join(lost)

    def message(self, text: str, names=()) -> str:
        """Record an error message; assert it names each of ``names`` and says what to do."""
        text = str(text)
        self.messages.append(text)
        for name in names:
            assert str(name) in text, f"the error message does not name {name!r}:\n{text}"
        assert ACTION_WORDS.search(text), f"the error message does not say what to do:\n{text}"
        return text


@pytest.fixture
def ledger(request):
    book = Ledger()
    yield book
    lost = book.lost_earlier + book.lost()
    request.node.stash[_KEY] = {"lost": lost, "messages": book.messages}
    assert not lost, "outputs lost after the fault:\n  " + "\n  ".join(lost)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if item.get_closest_marker("fault") is None:
        return report
    entry = _RESULTS.setdefault(item.nodeid, {"outcome": "passed", "lost": [], "messages": []})
    if report.skipped and call.when in ("setup", "call"):
        entry["outcome"] = "skipped"
    elif report.failed:
        entry["outcome"] = "failed"
    if call.when == "teardown":
        data = item.stash.get(_KEY, {})
        entry["lost"] = data.get("lost", [])
        entry["messages"] = data.get("messages", [])
    return report


def summary_line() -> str | None:
    ran = [e for e in _RESULTS.values() if e["outcome"] != "skipped"]
    if not _RESULTS:
        return None
    survived = sum(1 for e in ran if e["outcome"] == "passed")
    lost = sum(len(e["lost"]) for e in ran)
    skipped = len(_RESULTS) - len(ran)
    line = f"reliability: {len(ran)} faults injected, {survived} survived, {lost} outputs lost"
    return line + (f" ({skipped} skipped)" if skipped else "")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = summary_line()
    if line is None:
        return
    terminalreporter.write_sep("-", "fault injection")
    terminalreporter.write_line(line)
    target = os.environ.get("AEQA_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps({"summary": line, "faults": _RESULTS}, indent=2) + "\n",
                                encoding="utf-8")
