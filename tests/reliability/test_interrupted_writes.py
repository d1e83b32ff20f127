"""The atomic write every stage uses (aeqa_model.io.atomic_open), interrupted: Ctrl-C in the
middle of a corpus, SIGKILL in the middle of a file. The previous file stays whole and a
torn write is only ever a hidden temporary file. Outputs are readable like any file the
user writes (the umask decides), so a shared results directory stays shared."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import textwrap

import pytest

from aeqa_model.io import atomic_open, read_lines, write_lines
from tests.reliability.faultlib import PYTHON, ROOT


@pytest.mark.fault
def test_ctrl_c_while_writing_a_corpus_keeps_the_previous_file(tmp_path, ledger):
    target = tmp_path / "train.de"
    write_lines(target, [f"old line {i}" for i in range(100)])
    ledger.protect(target)

    def lines():
        for i in range(100_000):
            if i == 5_000:
                raise KeyboardInterrupt
            yield f"new line {i}"

    with pytest.raises(KeyboardInterrupt):
        write_lines(target, lines())
    assert read_lines(target)[-1] == "old line 99"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.de"]


@pytest.mark.fault
def test_sigkill_while_writing_keeps_the_previous_file(tmp_path, ledger):
    target = tmp_path / "codes"
    write_lines(target, ["#version: 0.2", "a b"])
    ledger.protect(target)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from aeqa_model.io import atomic_open
        with atomic_open({str(target)!r}) as handle:
            handle.write("x y\\n" * 100_000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    torn = [p for p in tmp_path.iterdir() if p.name != "codes"]
    assert len(torn) == 1 and torn[0].name.startswith(".codes.") and torn[0].name.endswith(".tmp")


def test_outputs_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; an output must be readable by whoever the umask allows."""
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_open(tmp_path / "report.json") as handle:
        handle.write("{}\n")
    mode = stat.S_IMODE((tmp_path / "report.json").stat().st_mode)
    assert mode == 0o666 & ~umask, oct(mode)
