"""Run ``aeqa_model.train.cli`` with one injected fault (the training process of test_kill_resume.py).

Either as a script (``AEQA_FAULT`` selects the fault; without it this is the plain
CLI) or through :func:`run` in a process forked from a forkserver. Faults:

``kill_at_update:K``
    SIGKILL this process in the middle of update K+1 (after its first forward
    pass), i.e. with K updates done and no chance to clean up.
``kill_in_write:NAME[#N]``
    SIGKILL this process while it writes the N-th checkpoint file named NAME
    (``checkpoint_last.pt``, ``checkpoint_8.pt``, ``checkpoint_best.pt``,
    ``model.pt``): half of the bytes are on disk in the temporary file, then
    the process dies, as when a node fails during the write.
``slow:SECONDS``
    Sleep that long before every forward pass (for faults sent from outside).
"""
from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from aeqa_model.io import atomic_open  # noqa: E402
from aeqa_model.train import cli  # noqa: E402
from aeqa_model.train import trainer as trainer_module  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, _, arg = fault.partition(":")
    if kind == "kill_at_update":
        k = int(arg)
        forward = trainer_module.Trainer._forward

        def killing_forward(self, batch, update):
            out = forward(self, batch, update)
            if update >= k:
                die()
            return out

        trainer_module.Trainer._forward = killing_forward
    elif kind == "slow":
        # Sleep before every update (numerics unchanged), so that a signal sent from
        # outside surely arrives before the run ends.
        seconds = float(arg)
        forward = trainer_module.Trainer._forward

        def slow_forward(self, batch, update):
            time.sleep(seconds)
            return forward(self, batch, update)

        trainer_module.Trainer._forward = slow_forward
    elif kind == "kill_in_write":
        name, _, nth = arg.partition("#")
        nth = int(nth or 1)
        seen = [0]
        save = trainer_module.save_checkpoint

        def killing_save(path, payload):
            if Path(path).name == name:
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

        trainer_module.save_checkpoint = killing_save
        cli.save_checkpoint = killing_save
    elif fault:
        raise SystemExit(f"unknown AEQA_FAULT {fault!r}")


def run(argv: list[str], fault: str, log_path: str) -> None:
    """Body of a fresh process forked from a forkserver that has torch imported already
    (saves the ~2 s of importing torch per run): stdout/stderr go to ``log_path``."""
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
