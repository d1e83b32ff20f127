"""Process pools of the data stages (prepare, BPE) that never outlive their job.

A job killed with SIGTERM (Snakemake cancelling it, SLURM's time limit, a user's
``kill``) dies at once, since its shell ``exec``s it; its pool workers would
go on with their current chunk of lines, and the queued ones, on their own.
Here every worker asks Linux to send it SIGTERM when the process that started
it dies (``PR_SET_PDEATHSIG``; also after a SIGKILL), and a pool left by an
exception is terminated, not drained.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterator

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGTERM this process when ``parent`` dies (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: no prctl
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """A ``multiprocessing`` pool (fork on POSIX) whose workers die with this process;
    on an exception (or SystemExit/KeyboardInterrupt) it is terminated at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = ctx.Pool(workers, initializer=_init, initargs=(os.getpid(), initializer, initargs))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
