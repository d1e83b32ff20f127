"""Host-device synchronisation in the training step (issue 15).

On a GPU, reading a value back to the host (``.item()``, ``int(t)``,
``.tolist()``) or running an op whose output size depends on the data
(boolean-mask row selection ``x[mask]``, ``nonzero``, ``masked_scatter``,
``bincount``) makes the host wait until the device has caught up. The host can
then no longer queue kernels ahead, so the device idles for each sync.

Some training-time code has two forms, chosen by :func:`avoid_sync`:

* on CUDA, a form without host syncs. It has fixed shapes and masks padding
  instead of selecting rows, so it computes a little more (padding positions
  are searched and projected too);
* on CPU, where a sync costs nothing, the data-dependent form. It computes
  less and is the one every earlier CPU result came from, so those results
  stay bit-identical.

Both forms give the same codes, tokens and losses. The one exception is the
draw of the states that unused codes move to (``SemanticQuantizer``'s training
reset), which takes a different random draw. :func:`force_sync_free` selects
the sync-free form on CPU, which is how tests compare the two.
:func:`forbid_host_syncs` is a CPU-side guard: it makes the Python-level ops
that would sync on a GPU raise an error.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_forced: bool | None = None


def avoid_sync(tensor: torch.Tensor) -> bool:
    """True where the training step must not wait for the device: for CUDA tensors,
    or everywhere inside ``force_sync_free(True)``."""
    return tensor.is_cuda if _forced is None else _forced


@contextlib.contextmanager
def force_sync_free(flag: bool = True) -> Iterator[None]:
    """Use the sync-free form (``True``) or the data-dependent form (``False``)
    whatever the device (for tests and for the CPU self-check of
    benchmarks/sync_check.py)."""
    global _forced
    before, _forced = _forced, flag
    try:
        yield
    finally:
        _forced = before


class HostSyncError(RuntimeError):
    """Raised by :func:`forbid_host_syncs` at an op that would sync on a GPU."""


def _is_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@contextlib.contextmanager
def forbid_host_syncs() -> Iterator[None]:
    """Make the Python-level ops that synchronise with a GPU raise
    :class:`HostSyncError`. They are reading values to the host
    (``item``, ``tolist``, ``int()``, ``float()``, ``bool()``, ``cpu``,
    ``numpy``), boolean-mask indexing, ``nonzero``, one-argument
    ``torch.where``, ``masked_select``, ``masked_scatter``, ``bincount``,
    ``unique`` and ``repeat_interleave``.

    This is a CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``. It
    sees only calls made from Python (our model code), not syncs inside torch's
    C++ kernels; benchmarks/sync_check.py runs the real check on a GPU. Use it
    around a forward and backward pass, not around an optimizer step (torch's
    optimizers read their CPU step counters with ``item``).
    """
    def refuse(name):
        def raiser(*args, **kwargs):
            raise HostSyncError(f"{name} synchronises the host with a GPU")
        return raiser

    patches = {}
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "cpu", "numpy", "nonzero",
                 "masked_select", "masked_scatter", "masked_scatter_", "bincount", "unique",
                 "repeat_interleave"):
        patches[(torch.Tensor, name)] = refuse(f"Tensor.{name}")
    for name in ("nonzero", "masked_select", "bincount", "unique", "repeat_interleave", "argwhere"):
        patches[(torch, name)] = refuse(f"torch.{name}")
    getitem, setitem, where = torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.where

    def checked_getitem(self, index):
        if _is_bool_index(index):
            raise HostSyncError("boolean-mask indexing x[mask] synchronises the host with a GPU "
                                "(its output size depends on the data)")
        return getitem(self, index)

    def checked_setitem(self, index, value):
        if _is_bool_index(index):
            raise HostSyncError("boolean-mask assignment x[mask] = v synchronises the host with a GPU")
        return setitem(self, index, value)

    def checked_where(condition, *args, **kwargs):
        if not args and not kwargs:
            raise HostSyncError("torch.where(condition) synchronises the host with a GPU (it is nonzero)")
        return where(condition, *args, **kwargs)

    patches[(torch.Tensor, "__getitem__")] = checked_getitem
    patches[(torch.Tensor, "__setitem__")] = checked_setitem
    patches[(torch, "where")] = checked_where
    saved = {key: key[0].__dict__.get(key[1], _MISSING) for key in patches}
    try:
        for (owner, name), value in patches.items():
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name), value in saved.items():
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()
