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
``nan_loss:FROM[-TO]``
    Multiply the loss of every micro-batch of updates FROM to TO (1-based, as in the
    log; without TO: to the end) by NaN, as an overflow or a bad batch would.
``poison_step:K``
    Right after the K-th optimizer step, set one weight to +Inf (an optimizer step
    that overflowed although its gradients were finite).
``signal_in_batch:U#B``
    Send this process SIGTERM right after the B-th forward pass of update U (1-based),
    i.e. between two micro-batches of one update.
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
from aeqa_model.models.base import LossTerm  # noqa: E402
from aeqa_model.train import checkpoint as checkpoint_module  # noqa: E402
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
        save = checkpoint_module.save_checkpoint

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

        checkpoint_module.save_checkpoint = killing_save
        cli.save_checkpoint = killing_save
    elif kind == "nan_loss":
        first, _, last = arg.partition("-")
        first, last = int(first), int(last) if last else None
        forward = trainer_module.Trainer._forward

        def nan_forward(self, batch, update):
            terms = forward(self, batch, update)
            if first <= update + 1 and (last is None or update + 1 <= last):
                terms = {name: LossTerm(term.value * float("nan"), term.weight) for name, term in terms.items()}
            return terms

        trainer_module.Trainer._forward = nan_forward
    elif kind == "poison_step":
        k, steps = int(arg), [0]
        step = torch.optim.AdamW.step

        def poisoning_step(self, *args, **kwargs):
            out = step(self, *args, **kwargs)
            steps[0] += 1
            if steps[0] == k:
                with torch.no_grad():
                    self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
            return out

        torch.optim.AdamW.step = poisoning_step
    elif kind == "signal_in_batch":
        target_update, _, target_batch = arg.partition("#")
        target_update, target_batch = int(target_update), int(target_batch)
        seen: dict[int, int] = {}
        forward = trainer_module.Trainer._forward

        def signalling_forward(self, batch, update):
            out = forward(self, batch, update)
            seen[update + 1] = seen.get(update + 1, 0) + 1
            if update + 1 == target_update and seen[update + 1] == target_batch:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        trainer_module.Trainer._forward = signalling_forward
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
