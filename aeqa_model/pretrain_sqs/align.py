"""The alignment of App. A.2: ``L_AL = L_a + alpha * L_x`` (Eq. 16-18) on the encoder's
projected states, with the EMA codebook of Eq. 6 on the source states, optionally with
the encoder's denoising task kept (``align_denoise_weight``, docs/method.md #28).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from aeqa_model.models.base import masked_mean
from aeqa_model.models.sqs import SemanticQuantizer, usage_statistics
from aeqa_model.pretrain_sqs.encoders import pad_batch, noised_batch
from aeqa_model.pretrain_sqs.stage import Runtime, StageLog, StageRun


class AlignNet(nn.Module):
    """What the alignment trains: the encoder and the projection to the NAT width.
    ``forward(x, y)`` returns the projected states (fp32) and padding masks of both
    sides; one module, so DDP sees every trained parameter."""

    def __init__(self, encoder: nn.Module, projection: nn.Linear, encode: Callable, task: nn.Module | None = None):
        super().__init__()
        self.encoder, self.projection = encoder, projection
        self.encode = encode   # (encoder, ids) -> (states, padding mask)
        self.task = task       # the denoising model around the same encoder (align_denoise_weight > 0)

    def states(self, ids):
        h, mask = self.encode(self.encoder, ids)
        return h, mask

    def forward(self, x, y, denoise: tuple | None = None):
        hx, mx = self.states(x)
        hy, my = self.states(y)
        task_loss = self.task(*denoise) if denoise is not None else None
        return self.projection(hx).float(), mx, self.projection(hy).float(), my, task_loss


def align(encoder: nn.Module, encode: Callable, dim_in: int, pairs: list[tuple[list[int], list[int]]], codes: int,
          dim: int, updates: int, alpha: float, decay: float, lr: float, batch_size: int, seed: int, log,
          run: StageRun | None = None, find_unused: bool = False, denoiser: nn.Module | None = None,
          denoise_weight: float = 0.0):
    """Eq. 16-18 with the EMA codebook of Eq. 6. ``encode(encoder, ids)`` gives the
    encoder states and padding mask of a padded batch. Returns (quantizer, projection,
    history, usage without dropout), or None when a signal stopped it (after a
    checkpoint). ``find_unused``: under DDP, some encoder parameters may get no gradient
    (mBART's layer drop).

    ``denoise_weight`` > 0 adds the encoder's own denoising loss (``denoiser``, a
    DenoiseNet around the same encoder) on the batch's sentences of both sides:
    L = L_AL + w L_denoise (docs/method.md #28). L_AL alone lets the encoder collapse:
    every state on one point minimises Eq. 17 and 18."""
    run = run or StageRun()
    rt = run.rt
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    projection = nn.Linear(dim_in, dim)
    quantizer = SemanticQuantizer(codes, dim, decay=decay)
    net = AlignNet(encoder, projection, encode, denoiser if denoise_weight > 0 else None).to(rt.device)
    # the denoising noise has its own stream: the batches are the same with and without it
    noise_rng = np.random.default_rng([seed, 1, rt.rank])
    quantizer.to(rt.device)
    if run.resume is None:
        # Start the codebook on projected target states so no code begins far from the data.
        with torch.no_grad(), rt.autocast():
            seed_ids = rng.integers(0, len(pairs), size=min(len(pairs), 256))
            states = []
            for start in range(0, len(seed_ids), 64):
                h, m = net.states(pad_batch([pairs[i][1] for i in seed_ids[start:start + 64]]).to(rt.device))
                states.append(projection(h).float()[~m])
            states = torch.cat(states)
            pick = torch.randint(len(states), (codes,), generator=torch.Generator().manual_seed(seed))
            quantizer.codebook.data.copy_(states[pick.to(states.device)])
            quantizer.ema_sum.copy_(states[pick.to(states.device)])
    trained_params = list(encoder.parameters()) + list(projection.parameters())
    if net.task is not None:   # the denoiser's own parameters (its decoder), once each
        known = {id(p) for p in trained_params}
        trained_params += [p for p in net.task.parameters() if id(p) not in known]
    opt = torch.optim.AdamW(trained_params, lr=lr, weight_decay=0.01)
    trained = rt.wrap(net, find_unused)
    names = ("L_a", "L_x", "L_AL") + (("L_denoise",) if net.task is not None else ())
    stage = StageLog(run.csv_path, names, rt, "pretrain_sqs align", updates)
    start = run.resume_into({"net": net, "quantizer": quantizer, "optimizer": opt},
                            {"np_rng": rng, "noise_rng": noise_rng}, stage)
    quantizer.train()
    every = max(updates // 5, 1)
    for step in range(start, updates):
        ids = rt.shard(rng.integers(0, len(pairs), size=batch_size))
        x = pad_batch([pairs[i][0] for i in ids]).to(rt.device)
        y = pad_batch([pairs[i][1] for i in ids]).to(rt.device)
        denoise = None
        if net.task is not None:
            sides = [pairs[i][0] for i in ids] + [pairs[i][1] for i in ids]
            denoise = tuple(t.to(rt.device) for t in noised_batch(sides, noise_rng, net.task.at.dictionary))
        with rt.autocast():
            hx, mx, hy, my, task_loss = trained(x, y, denoise)            # fp32 from here on
        qx, qy = quantizer(hx, mx), quantizer(hy, my)
        zbar_x = masked_mean(qx.straight, mx)                            # z_q-bar(H_x), grads reach H_x
        zbar_y = masked_mean(qy.codes, my)
        l_a = (zbar_x - zbar_y.detach()).pow(2).mean()                   # Eq. 17
        keep_x = (~mx).float()
        l_x = ((hx - qx.codes.detach()).pow(2).mean(-1) * keep_x).sum() / keep_x.sum()  # Eq. 18
        loss = l_a + alpha * l_x                                         # Eq. 16
        values = [l_a, l_x, loss]
        if task_loss is not None:                                        # the fine-tuning task (#28)
            loss = loss + denoise_weight * task_loss.float()
            values.append(task_loss.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():                                            # Eq. 6: the source states H_x
            quantizer.ema_update(hx.detach(), qx.indices, mx)
        stage.add(step + 1, lr, torch.stack([v.detach() for v in values]))
        if (step + 1) % every == 0:
            stage.flush()
            last = stage.rows[-1]
            log(f"align update {step + 1}/{updates}: L_AL {last['L_AL']:.4f} (L_a {last['L_a']:.4f}, "
                f"L_x {last['L_x']:.4f}), codes used {quantizer.statistics()['used']}")
        if run.after_update(step + 1, updates, stage, lambda: {
                "stage": "align", "net": net.state_dict(), "quantizer": quantizer.state_dict(),
                "optimizer": opt.state_dict(), "np_rng": rng.bit_generator.state,
                "noise_rng": noise_rng.bit_generator.state}):
            return None
    stage.close()
    history = [{"update": r["update"], "L_a": r["L_a"], "L_x": r["L_x"], "L_AL": r["L_AL"]} for r in stage.rows]
    return quantizer, projection, history, usage_without_dropout(net, quantizer, pairs, rt, seed)


@torch.no_grad()
def usage_without_dropout(net: AlignNet, quantizer: SemanticQuantizer, pairs: list, rt: Runtime, seed: int,
                          sentences: int = 512) -> dict:
    """Codebook usage of the aligned encoder's states *without dropout* (what a frozen
    encoder gives, e.g. for h_y_encoder: pretrained), on a fixed sample of both sides.
    The training usage counts states under dropout, whose noise alone can spread them
    over every code: an encoder whose states all coincide (a collapsed or untrained
    one) still reports every code used there, and only this figure shows it."""
    was = net.training
    net.eval()
    pick = np.random.default_rng(seed).permutation(len(pairs))[:sentences]
    counts = torch.zeros(quantizer.num_codes)
    for start in range(0, len(pick), 64):
        chosen = [pairs[i] for i in pick[start:start + 64]]
        with rt.autocast():
            hx, mx, hy, my, _ = net(pad_batch([p[0] for p in chosen]).to(rt.device),
                                 pad_batch([p[1] for p in chosen]).to(rt.device))
        for h, m in ((hx, mx), (hy, my)):
            counts += torch.bincount(quantizer.nearest(h)[~m].cpu(), minlength=quantizer.num_codes).float()
    net.train(was)
    return {**usage_statistics(counts), "sentences": int(len(pick))}
