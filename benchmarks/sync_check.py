"""Host-device synchronisations in one training step of every architecture.

On a GPU every step (forward, backward, AdamW step; fp32 and bf16 autocast)
runs under ``torch.cuda.set_sync_debug_mode("error")``, so the first operation
that makes the host wait for the device raises and is reported with the line
of the model code that called it. On a CPU (a quick self-check) the sync-free
form of the step runs under ``aeqa_model.models.hostsync.forbid_host_syncs``.
That guard sees only the Python-level syncing ops of the forward and backward
pass, not syncs inside torch's kernels.

The architectures in KNOWN_SYNCS still synchronise, for the reasons given
there; the script exits 1 only when another architecture does.

    python benchmarks/sync_check.py [--device cuda|cpu] [--size demo|base] [--amp fp32,bf16]
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import torch

from _common import SIZES, device_info, report, synthetic_batch, synthetic_dictionary
from aeqa_model.models.base import total_loss
from aeqa_model.models.hostsync import force_sync_free, forbid_host_syncs
from aeqa_model.models.build import build_model

STEP_MODELS = [
    ("at", {"arch": "at"}),
    ("vanilla_nat", {"arch": "vanilla_nat"}),
    ("ctc", {"arch": "ctc"}),
    ("glat", {"arch": "glat", "glancing_schedule": "0.5:0.3@1000"}),
    ("cmlm", {"arch": "cmlm"}),
    ("dat", {"arch": "dat", "glancing_schedule": "0.5:0.1@1000"}),
    ("aeqa_nat", {"arch": "aeqa_nat", "codebook_size": 256}),
    ("aeqa_nat_uniform", {"arch": "aeqa_nat", "codebook_size": 256, "glancing": "uniform"}),
    ("aeqa_nat_reordering", {"arch": "aeqa_nat", "codebook_size": 256, "reordering": True}),
    ("aeqa_nat_reading_b_ema", {"arch": "aeqa_nat", "codebook_size": 256, "glance_into": "continuous",
                                "codebook_update": "ema"}),
    ("aeqa_dat", {"arch": "aeqa_dat", "codebook_size": 256, "glancing_schedule": "0.5:0.1@1000"}),
]

# Architectures whose training step still synchronises, and why (not issue 15's AEQA-NAT path).
KNOWN_SYNCS = {
    "ctc": "the decoder length upsample*max|X| is read back (copy_inputs), and F.ctc_loss copies the "
           "lengths to the host",
    "dat": "the graph size max(round(factor*|X|), |Y|) is read back (copy_inputs)",
    "aeqa_dat": "the graph size is read back (copy_inputs), as in DAT",
}

ROOT = Path(__file__).resolve().parents[1]


def where(exc: BaseException) -> str:
    """The innermost frame of this repository in ``exc``'s traceback, with the message."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if str(ROOT) in f.filename and "hostsync.py" not in f.filename]
    place = f"{Path(frames[-1].filename).relative_to(ROOT)}:{frames[-1].lineno} ({frames[-1].line})" if frames else "?"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{place}: {message}"


def check_step(model, batch, device: torch.device, dtype) -> str | None:
    """Run one training step; the first host sync as 'file:line: message', or None."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def forward_backward():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = total_loss(model.losses(batch, 500))
        opt.zero_grad(set_to_none=True)
        loss.backward()

    forward_backward()                       # warm-up outside the check: lazy initialisations
    opt.step()
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                forward_backward()
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize(device)
        else:
            with force_sync_free(True):
                with forbid_host_syncs():
                    forward_backward()
                opt.step()
    except RuntimeError as err:              # HostSyncError is a RuntimeError too
        return where(err)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="demo", choices=SIZES)
    p.add_argument("--amp", default=None, help="comma list of fp32,bf16 (default: both on a GPU, fp32 on CPU)")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--sentences", type=int, default=16)
    p.add_argument("--models", default="all", help="comma list of the names below, or all")
    args = p.parse_args()
    device = torch.device(args.device)
    amps = (args.amp or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    torch.manual_seed(0)
    d = synthetic_dictionary(args.vocab)
    batch = synthetic_batch(d, args.sentences, 5, 20).to(device)
    chosen = [m for m in STEP_MODELS if args.models == "all" or m[0] in args.models.split(",")]
    rows, unexpected = [], []
    for name, spec in chosen:
        first = {}
        for amp in amps:
            model = build_model({**spec, "size": args.size}, d, SIZES, {"max_updates": 1000}).to(device).train()
            found = check_step(model, batch, device, torch.bfloat16 if amp == "bf16" else None)
            if found:
                first[amp] = found
        row = {"model": name, "sync_free": not first, "expected_sync_free": name not in KNOWN_SYNCS,
               "amp": ",".join(amps)}
        if first:
            row["first_sync"] = "; ".join(f"{amp}: {text}" for amp, text in first.items())
        if name in KNOWN_SYNCS:
            row["known"] = KNOWN_SYNCS[name]
        if first and name not in KNOWN_SYNCS:
            unexpected.append(name)
        rows.append(row)
    mode = "cuda sync_debug_mode=error" if device.type == "cuda" else "cpu guard (forbid_host_syncs, sync-free form)"
    report(f"sync_check size={args.size} {mode}", rows, device_info(device))
    if unexpected:
        print(f"host syncs in the training step of {', '.join(unexpected)} (see first_sync above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
