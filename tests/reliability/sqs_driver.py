"""Run ``aeqa_model.pretrain_sqs.cli`` with one injected fault (the process of test_sqs_resume.py).

Called through :func:`run` in a process forked from a forkserver (torch imported
once), or as a script with ``AEQA_FAULT`` set. Faults, counted in optimizer steps
(one per update in both stages):

``kill_at_update:K``
    SIGKILL this process in update K+1, before its optimizer step (K updates
    done, no chance to clean up).
``term_at_update:K``
    Send this process SIGTERM (SLURM's time-limit warning) during update K; the
    stage must checkpoint after update K and exit 75.
``kill_in_write:N``
    SIGKILL this process while it writes its N-th checkpoint: half of the bytes
    are in the temporary file when it dies.
"""
from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from aeqa_model.pretrain_sqs import cli, pretrain, stage  # noqa: E402
from aeqa_model.io import atomic_open  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, _, arg = fault.partition(":")
    if kind in ("kill_at_update", "term_at_update"):
        k = int(arg)
        step = torch.optim.AdamW.step
        calls = [0]

        def faulty_step(self, *args, **kwargs):
            calls[0] += 1
            if kind == "kill_at_update" and calls[0] == k + 1:
                die()
            if kind == "term_at_update" and calls[0] == k:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(self, *args, **kwargs)

        torch.optim.AdamW.step = faulty_step
    elif kind == "kill_in_write":
        nth, seen = int(arg), [0]
        save = pretrain.save_checkpoint

        def killing_save(path, payload):
            seen[0] += 1
            if seen[0] == nth:
                buffer = io.BytesIO()
                torch.save(payload, buffer)
                data = buffer.getvalue()
                with atomic_open(path, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    die()
            return save(path, payload)

        # the stage's checkpoints (stage.py) and its outputs (pretrain.py) both count
        pretrain.save_checkpoint = stage.save_checkpoint = killing_save
    elif fault:
        raise SystemExit(f"unknown AEQA_FAULT {fault!r}")


def run(argv: list[str], fault: str, log_path: str) -> None:
    """Body of a process forked from a forkserver: stdout/stderr go to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    install(fault)
    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    install(os.environ.get("AEQA_FAULT", ""))
    sys.exit(cli.main(sys.argv[1:]))
