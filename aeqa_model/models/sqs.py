"""Semantic Quantization Space (Sec. 2.3): a K x D codebook shared by both languages.

* nearest-neighbour quantization z_q(h) = argmin_k ||h - e_k||  (Eq. 4-5),
  vectorized as one fused ``||e||^2 - 2 h.e`` matrix product over all codes
  (``||h||^2`` is the same for every code and cannot change the argmin); on CPU
  only non-padding vectors are searched, on a GPU every position is and padding
  is masked afterwards (no host sync, see models/hostsync.py);
* straight-through estimator: h + sg(z_q(h) - h) passes gradients to h;
* EMA codebook update (Eq. 6) with Laplace-smoothed counts; dead codes are
  re-seeded from the current batch; counts and sums are all-reduced across DDP
  ranks so every rank keeps the same codebook.

Interpretation of Eq. 6 (docs/method.md): the paper writes
``e_k <- (gamma e_k + (1-gamma) w_k) / n_k``; read literally that divides the
old code vector by a count. We use the standard VQ-VAE EMA it abbreviates:
``m_k <- gamma m_k + (1-gamma) w_k`` and ``e_k = m_k / n_k``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aeqa_model.io import InputError, checksum_problem
from aeqa_model.models.hostsync import avoid_sync


def usage_statistics(counts: torch.Tensor) -> dict:
    """How per-code counts (K,) spread over the codebook: the number of codes, how many
    were used, and the perplexity exp(H(p)) of their shares (0 when nothing was counted)."""
    total = float(counts.sum())
    if total == 0:
        return {"codes": len(counts), "used": 0, "perplexity": 0.0}
    p = counts / total
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"codes": len(counts), "used": int((counts > 0).sum()), "perplexity": float(torch.tensor(entropy).exp())}


@dataclass
class Quantized:
    indices: torch.Tensor   # (..., ) code index per vector
    codes: torch.Tensor     # (..., D) e_k, differentiable w.r.t. the codebook
    source: torch.Tensor    # (..., D) the quantized vectors h

    @property
    def straight(self) -> torch.Tensor:
        """h + sg(e_k - h): the code's value with gradients reaching h (built on demand:
        inference never needs it)."""
        return self.source + (self.codes - self.source).detach()


class SemanticQuantizer(nn.Module):
    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 dead_fraction: float = 0.01):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        # dead_fraction: ema_update re-seeds codes whose recent usage (decay 0.9) is below
        # this share of an even share (0 = never). It used to be an absolute threshold of
        # 1e-3 on ema_count, which starts at 1 and decays by `decay` per update: ~688
        # updates before a code could count as dead, against 300 of pre-alignment.
        self.decay, self.epsilon, self.dead_fraction = decay, epsilon, dead_fraction
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) * dim ** -0.5)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.codebook.detach().clone())
        self.register_buffer("usage", torch.zeros(num_codes))
        # Training-time reset (docs/method.md #22): a short-horizon usage average; codes
        # far below an even share are moved onto current states. Off unless enabled.
        self.reset_decay, self.reset_fraction = 0.9, 0.0
        self.register_buffer("recent_usage", torch.zeros(num_codes))
        self._norms_cache: tuple | None = None

    def train(self, mode: bool = True):
        if mode:
            # Training may change the codebook through ``.data`` (code resets), which does
            # not bump the version the cache is keyed on; the cache is only built outside
            # training, so dropping it on entering training is enough.
            self._norms_cache = None
        return super().train(mode)

    def code_norms(self) -> torch.Tensor:
        """||e_k||^2 for every code. Cached while not training (batch-1 decoding would
        otherwise recompute it for every sentence); any in-place change to the
        codebook (load_state_dict, optimizer step) bumps its version and the key."""
        book = self.codebook.detach()
        if self.training:
            return book.float().pow(2).sum(1)
        key = (book.data_ptr(), self.codebook._version, book.device)
        if self._norms_cache is None or self._norms_cache[0] != key:
            self._norms_cache = (key, book.float().pow(2).sum(1))
        return self._norms_cache[1]

    def enable_reset(self, fraction: float = 0.01, decay: float = 0.9) -> None:
        """Re-seed, during NAT training, the codes whose recent usage is below
        ``fraction`` of an even share (0 disables)."""
        self.reset_fraction, self.reset_decay = float(fraction), float(decay)

    def load_pretrained(self, path) -> None:
        """Start from the codebook of the pretrain_sqs stage (App. A.2). Every problem with
        the file (damaged on disk, unreadable, another K or width, non-finite) is an
        InputError naming it and the stage to rerun."""
        damage = checksum_problem(path)  # a zeroed region would load as codes at the origin
        if damage:
            raise InputError(f"{path}: {damage}; delete it and rerun pretrain_sqs (snakemake reruns it "
                             f"when it is missing)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            book = state["codebook"]
        except Exception as err:  # truncated, damaged or not a pretrain_sqs output
            raise InputError(f"{path}: cannot read the pre-aligned SQS ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}); "
                             f"delete it and rerun pretrain_sqs (snakemake reruns it when it is missing)") from None
        if book.shape != self.codebook.shape:
            raise InputError(f"{path}: codebook {tuple(book.shape)} does not match the model's "
                             f"{tuple(self.codebook.shape)}; pretrain_sqs K/width must equal the model's")
        if not bool(torch.isfinite(book).all()):
            raise InputError(f"{path}: the pre-aligned codebook holds NaN or Inf values (pre-alignment diverged); "
                             f"fix the pretrain_sqs settings (e.g. a lower pretrain_sqs.lr) and rerun pretrain_sqs")
        with torch.no_grad():
            self.codebook.copy_(book)
            self.ema_sum.copy_(book)

    def nearest(self, h: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for every vector in ``h`` (..., D)."""
        flat = h.reshape(-1, self.dim).float()
        book = self.codebook.detach().float()
        # argmin_k ||h - e_k||^2 = argmin_k (||e_k||^2 - 2 h.e_k): one addmm, no (N, K)
        # elementwise passes, which cost three times the product itself on a CPU. In
        # fp32 even under AMP: bf16 would round near-ties to the wrong code.
        with torch.autocast(flat.device.type, enabled=False):
            scores = torch.addmm(self.code_norms()[None, :], flat, book.t(), alpha=-2.0)
        return scores.argmin(dim=1).view(h.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> Quantized:
        """Quantize ``h``; in training, ``mask`` (True at padding) leaves padding out of
        the search and the usage counts (padding positions get code 0; every consumer
        masks them). Outside training every position is searched: at inference padding
        is rare and selecting rows would cost more than it saves.

        On a GPU (``avoid_sync``) training searches every position too and sets
        padding to code 0 afterwards: selecting the non-padding rows would make the
        host wait for the device. The codes are the same; padding costs a little
        search."""
        keep = kept = None
        if mask is None or not self.training:
            indices = self.nearest(h.detach())
        elif avoid_sync(h):
            indices = self.nearest(h.detach()).masked_fill(mask, 0)
            keep = ~mask
        else:
            keep = ~mask
            kept = h.detach()[keep]
            indices = torch.zeros(mask.shape, dtype=torch.long, device=h.device).masked_scatter(keep, self.nearest(kept))
        codes = self.lookup(indices).to(h.dtype)
        if self.training:
            with torch.no_grad():
                counts = self._count(indices, keep)
                self.usage += counts
                if self.reset_fraction > 0:
                    self._reset_unused(h.detach().reshape(-1, self.dim), None if keep is None else keep.reshape(-1),
                                       counts, kept)
        return Quantized(indices, codes, h)

    def _count(self, indices: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """How many (non-padding) vectors chose each code: ``bincount`` with a fixed
        size, as an ``index_add_`` of ones (``bincount`` reads its input's maximum back
        to the host on CUDA, even with ``minlength``). The counts are whole numbers, so
        the order of the additions cannot change them."""
        flat = indices.reshape(-1)
        ones = (torch.ones(flat.shape, device=flat.device) if keep is None
                else keep.reshape(-1).to(torch.float32))
        return torch.zeros(self.num_codes, device=flat.device).index_add_(0, flat, ones)

    @torch.no_grad()
    def ema_update(self, h: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None = None,
                   reseed: bool = True) -> None:
        """Eq. 6 over the non-padding vectors of a batch (synchronized across ranks), then,
        with ``reseed``, the dead codes re-seeded (``dead_fraction``). Masked sums rather
        than selected rows: no host-device synchronisation, so it can run inside a
        training step."""
        keep = torch.ones_like(indices, dtype=torch.bool) if mask is None else ~mask
        flat, idx = h.reshape(-1, self.dim).float(), indices.reshape(-1)
        weight = keep.reshape(-1).float()
        counts = torch.zeros(self.num_codes, device=h.device).index_add_(0, idx, weight)   # sum_i 1(z(h_i)=k)
        sums = flat.new_zeros(self.num_codes, self.dim).index_add_(0, idx, flat * weight[:, None])   # w_k
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps unused codes from dividing by ~0.
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.codebook.data.copy_(self.ema_sum / smoothed[:, None])
        if reseed and self.dead_fraction > 0:
            # counts are already summed over ranks: _reset_unused must not sum them again
            self._reset_unused(flat, keep.reshape(-1), counts, fraction=self.dead_fraction, reduced=True)

    @staticmethod
    def _draw_states(vecs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        """``n`` rows of ``vecs`` drawn with a seeded generator; under DDP rank 0's draw
        is broadcast, so every rank moves its codes to the same vectors."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        chosen = vecs[torch.randint(len(vecs), (n,), generator=gen).to(vecs.device)].contiguous()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(chosen, src=0)
        return chosen

    @torch.no_grad()
    def _reset_unused(self, flat: torch.Tensor, keep: torch.Tensor | None, counts: torch.Tensor,
                      kept: torch.Tensor | None = None, fraction: float | None = None,
                      reduced: bool = False) -> None:
        """Codes that (almost) no state chose lately move to random current states; a
        used code is never touched. In NAT training (``reset_fraction``) the NAT's
        encoder starts untrained, so at first its states may all fall next to one
        pre-aligned code, and the commitment term L_ax would keep them there (codebook
        collapse); in pre-alignment (``ema_update``, ``dead_fraction``) these are
        VQ-VAE's dead codes.

        ``flat`` (N, D) are this call's vectors and ``keep`` (N,) marks the non-padding
        ones (None: all); ``kept``, when given, is ``flat[keep]`` already selected;
        ``reduced``: ``counts`` are already summed over the DDP ranks."""
        fraction = self.reset_fraction if fraction is None else fraction
        if not reduced and dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self.recent_usage.mul_(self.reset_decay).add_(counts, alpha=1 - self.reset_decay)
        even_share = self.recent_usage.sum() / self.num_codes
        unused = self.recent_usage < fraction * even_share
        if avoid_sync(flat):
            self._reset_on_device(flat, keep, unused, even_share)
            return
        if kept is None:
            kept = flat if keep is None else flat[keep]
        vecs = kept.float()
        n_unused = int(unused.sum())
        if n_unused == 0 or len(vecs) == 0:
            return
        chosen = self._draw_states(vecs, n_unused, seed=int(self.usage.sum()) + n_unused)
        self._move_codes(unused, chosen, even_share)

    def _move_codes(self, moved: torch.Tensor, chosen: torch.Tensor, even_share: torch.Tensor) -> None:
        """Put the codes of the boolean mask ``moved`` at ``chosen`` (one row per moved
        code, or K rows of which the moved ones are taken). Their EMA statistics move
        with them, as if each had held an average count there, so that the next Eq. 6
        update neither snaps them back nor declares them dead again at once."""
        rows = chosen.to(self.codebook.dtype)
        if rows.size(0) != self.num_codes:  # n_moved rows (CPU path): scatter them into place
            full = self.codebook.data.clone()
            full[moved] = rows
            rows = full
        average = self.ema_count.mean()
        mask = moved[:, None]
        self.codebook.data.copy_(torch.where(mask, rows, self.codebook.data))
        self.ema_sum.copy_(torch.where(mask, rows.float() * average, self.ema_sum))
        self.ema_count.copy_(torch.where(moved, average, self.ema_count))
        self.recent_usage.copy_(torch.where(moved, even_share, self.recent_usage))

    def _reset_on_device(self, flat: torch.Tensor, keep: torch.Tensor | None, unused: torch.Tensor,
                         even_share: torch.Tensor) -> None:
        """The reset without host syncs (GPU): every code draws a random non-padding
        state, and ``torch.where`` moves only the unused codes onto theirs. The draw
        comes from torch's global generator (saved in checkpoints with the other
        random states), a fixed K numbers per call whether or not a code moves. It
        is not the CPU form's draw: the codes move to other (equally random) states."""
        keep = torch.ones(flat.size(0), dtype=torch.bool, device=flat.device) if keep is None else keep
        seen = torch.cumsum(keep.long(), 0)                     # real rows up to and including each row
        n_real = seen[-1] if len(seen) else torch.zeros((), dtype=torch.long, device=flat.device)
        draw = (torch.rand(self.num_codes, device=flat.device) * n_real).long()
        draw = torch.minimum(draw, (n_real - 1).clamp(min=0))  # the j-th real row, 0-based
        rows = torch.searchsorted(seen, draw + 1).clamp(max=max(flat.size(0) - 1, 0))
        chosen = flat[rows].float() if flat.size(0) else flat.new_zeros(self.num_codes, self.dim).float()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(chosen, src=0)                       # every rank moves its codes alike
        self._move_codes(unused & (n_real > 0), chosen, even_share)

    def statistics(self) -> dict:
        """Codebook usage since the last reset: codes used and perplexity exp(H(p))."""
        return usage_statistics(self.usage)

    def reset_usage(self) -> None:
        self.usage.zero_()
