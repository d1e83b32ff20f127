"""The training step without host-device synchronisation (issue 15).

On CPU the sync-free form of the training step (the one a GPU runs, selected
here with ``force_sync_free``) must give the same codes, tokens, losses and
gradients as the CPU form, bit for bit. A guard that makes the Python-level
syncing ops raise must let the sync-free step through. On a GPU,
benchmarks/sync_check.py runs one training step of every architecture under
``torch.cuda.set_sync_debug_mode("error")``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aeqa_model.data.batching import collate
from aeqa_model.models import model_class
from aeqa_model.models.base import total_loss
from aeqa_model.models.hostsync import HostSyncError, force_sync_free, forbid_host_syncs
from aeqa_model.models.sqs import SemanticQuantizer
from tests.conftest import make_pairs

ROOT = Path(__file__).resolve().parents[1]

# The architectures whose training step has no host sync left, with the options
# that reach every branch of their step.
SYNC_FREE = {
    "at": {"arch": "at"},
    "vanilla_nat": {"arch": "vanilla_nat"},
    "vanilla_nat_dslp": {"arch": "vanilla_nat", "dslp": True},
    "glat": {"arch": "glat", "glancing_schedule": "0.5:0.3@1000"},
    "cmlm": {"arch": "cmlm"},
    "aeqa_nat": {"arch": "aeqa_nat", "codebook_size": 16},
    "aeqa_nat_uniform": {"arch": "aeqa_nat", "codebook_size": 16, "glancing": "uniform"},
    "aeqa_nat_reordering": {"arch": "aeqa_nat", "codebook_size": 16, "reordering": True},
    "aeqa_nat_unglanced": {"arch": "aeqa_nat", "codebook_size": 16, "glance_loss": "unglanced",
                           "quantize_input": False},
    # issue 25's readings: glancing into H_m (B), Eq. 6's EMA in NAT training
    "aeqa_nat_reading_b": {"arch": "aeqa_nat", "codebook_size": 16, "glance_into": "continuous"},
    "aeqa_nat_b_ema": {"arch": "aeqa_nat", "codebook_size": 16, "glance_into": "continuous",
                       "codebook_update": "ema", "reordering": True},
}


def _batch(dictionary, n=8, seed=0):
    pairs = make_pairs(n, seed)
    return collate(list(range(n)), [p[0] for p in pairs], [p[1] for p in pairs], dictionary)


def _model(spec, dictionary, cfg, seed=0):
    torch.manual_seed(seed)
    options = {k: v for k, v in spec.items() if k != "arch"}
    return model_class(spec["arch"])(dictionary, cfg, options).train()


def _step(model, batch, update=10, seed=1):
    """Losses and gradients of one training step from a fixed random state."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    terms = model.losses(batch, update)
    total_loss(terms).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: t.value.detach().clone() for k, t in terms.items()}, grads


@pytest.mark.parametrize("name", sorted(n for n in SYNC_FREE if n.startswith(("aeqa", "glat", "vanilla"))))
def test_sync_free_step_equals_cpu_step_bit_for_bit(name, dictionary, tiny_cfg):
    """Everything but the reset draw (off here: codebook_reset 0) is the same computation
    in the two forms; the losses, gradients and codebook usage must match exactly."""
    spec = {**SYNC_FREE[name]}
    if spec["arch"] == "aeqa_nat":
        spec["codebook_reset"] = 0.0
    batch = _batch(dictionary)
    assert batch.target.eq(dictionary.pad).any()                       # ragged: padding to handle
    results = {}
    for sync_free in (False, True):
        model = _model(spec, dictionary, tiny_cfg)
        with force_sync_free(sync_free):
            losses, grads = _step(model, batch)
        usage = model.sqs.usage.clone() if hasattr(model, "sqs") else None
        results[sync_free] = (losses, grads, usage)
    (l0, g0, u0), (l1, g1, u1) = results[False], results[True]
    assert l0.keys() == l1.keys()
    for key in l0:
        if key == "pointer":
            # The reordering ablation's pointer loss: a mean over the real rows in the
            # CPU form, over all rows with padding ignored in the sync-free one; the
            # summation order differs, so the last bit may too.
            assert torch.allclose(l0[key], l1[key], rtol=1e-6, atol=0), f"loss {key}: {l0[key]} != {l1[key]}"
        else:
            assert torch.equal(l0[key], l1[key]), f"loss {key}: {l0[key]} != {l1[key]}"
    assert g0.keys() == g1.keys()
    for key in g0:
        assert torch.equal(g0[key], g1[key]), f"gradient of {key} differs"
    if u0 is not None:
        assert torch.equal(u0, u1)                                     # same codes chosen, padding not counted


def test_sync_free_quantizer_gives_the_same_codes_and_counts():
    torch.manual_seed(0)
    h = torch.randn(5, 9, 12)
    mask = torch.rand(5, 9) < 0.3
    outs = {}
    for sync_free in (False, True):
        torch.manual_seed(1)
        q = SemanticQuantizer(64, 12).train()
        with force_sync_free(sync_free):
            out = q(h, mask)
        outs[sync_free] = (out.indices, out.codes, q.usage.clone())
    for a, b in zip(outs[False], outs[True]):
        assert torch.equal(a, b)
    assert (outs[True][0][mask] == 0).all()
    assert int(outs[True][2].sum()) == int((~mask).sum())


def test_sync_free_reset_moves_only_unused_codes_onto_real_states():
    """The device form of the training reset: the same rule (only codes far below an
    even share move, each onto a current non-padding state), another random draw."""
    torch.manual_seed(0)
    sqs = SemanticQuantizer(16, 4)
    with torch.no_grad():
        sqs.codebook.copy_(torch.randn(16, 4) * 0.01)
        sqs.codebook[3] = torch.full((4,), 5.0)
    h = torch.randn(2, 40, 4) * 0.1 + 5.0
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[1, 25:] = True
    h[mask] = -1000.0                                                  # padding: must never be drawn
    before = sqs.codebook.detach().clone()
    sqs.enable_reset(0.01)
    sqs.train()
    with force_sync_free(True), forbid_host_syncs():
        sqs(h, mask)
    assert torch.equal(sqs.codebook[3], before[3])                     # the used code is untouched
    moved = (sqs.codebook.detach() != before).any(1)
    assert int(moved.sum()) == 15 and not moved[3]
    real = h[~mask]
    for row in sqs.codebook.detach()[moved]:
        assert (real == row).all(1).any(), "a code moved onto something that is not a real state"
    share = sqs.recent_usage[moved]                                  # moved codes count as an even share
    assert (share == share[0]).all() and share[0] > 0
    assert len(sqs.nearest(h[~mask]).unique()) > 5


def test_sync_free_reset_on_an_all_padding_batch_moves_nothing():
    sqs = SemanticQuantizer(8, 4)
    sqs.enable_reset(0.5)
    sqs.train()
    before = sqs.codebook.detach().clone()
    with force_sync_free(True):
        sqs(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(sqs.codebook.detach(), before)


@pytest.mark.parametrize("name", sorted(SYNC_FREE))
def test_training_step_makes_no_python_level_host_sync(name, dictionary, tiny_cfg):
    """CPU-side guard: in the sync-free form, forward and backward of one training step
    never read a value back to the host or select rows with a mask (with the codebook
    reset on, as AEQA-NAT trains by default). Without the changes of issue 15 this
    fails at int(tgt_lengths.max()), h[~mask], bincount, int(unused.sum()) ..."""
    model = _model(SYNC_FREE[name], dictionary, tiny_cfg)
    batch = _batch(dictionary)
    with force_sync_free(True), forbid_host_syncs():
        total_loss(model.losses(batch, 10)).backward()


def test_the_guard_catches_each_kind_of_sync():
    x = torch.arange(6.0)
    mask = x > 2
    with forbid_host_syncs():
        for bad in (lambda: x[mask], lambda: int(x.sum()), lambda: x.sum().item(), lambda: x.tolist(),
                    lambda: torch.bincount(mask.long(), minlength=3), lambda: mask.nonzero(),
                    lambda: torch.where(mask), lambda: x.masked_select(mask), lambda: bool(mask.any())):
            with pytest.raises(HostSyncError):
                bad()
        assert torch.equal(x[2:4], torch.tensor([2.0, 3.0]))           # plain indexing is fine
        assert torch.equal(torch.where(mask, x, -x)[:3], torch.tensor([-0.0, -1.0, -2.0]))
    assert x[mask].tolist() == [3.0, 4.0, 5.0]                          # restored afterwards


def _sync_check(*args):
    done = subprocess.run([sys.executable, "sync_check.py", *args], cwd=ROOT / "benchmarks", capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = done.stdout.splitlines()
    return done, [json.loads(line) for line in lines[1:] if line.startswith("{")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (set_sync_debug_mode)")
def test_every_architecture_trains_one_step_under_cuda_sync_debug_mode():
    """One training step (forward, backward, AdamW step; fp32 and bf16 autocast) of every
    architecture under torch.cuda.set_sync_debug_mode('error'). The architectures
    listed as known to sync (CTC, DAT, AEQA-DAT) are reported, not failed."""
    done, rows = _sync_check("--device", "cuda")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = {row["model"]: row for row in rows if "model" in row}
    for name in ("at", "vanilla_nat", "glat", "cmlm", "aeqa_nat", "aeqa_nat_uniform"):
        assert steps[name]["sync_free"], steps[name]
