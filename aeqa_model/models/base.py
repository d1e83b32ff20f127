"""What every model shares: named losses that one criterion sums, construction, and
two tensor helpers (masked means, packing kept entries left) that the models and the
decoders both use."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.models.options import ModelOptions, option
from aeqa_model.models.transformer import Encoder, TokenEmbedding, TransformerConfig


@dataclass
class LossTerm:
    """One named loss: ``value`` is already averaged over its own units; ``weight``
    is its factor in the total (e.g. delta=0.1 for the length loss, Eq. 13)."""

    value: torch.Tensor
    weight: float = 1.0


def masked_mean(x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T) or (B, T, D) over the positions of dim 1 where ``pad_mask``
    (B, T) is False; a row of padding only gives 0. Padding positions must hold finite
    values (a -inf times 0 is NaN): fill them first where they may not."""
    keep = ~pad_mask
    if x.dim() > keep.dim():
        keep = keep.unsqueeze(-1)
    keep = keep.to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


def pack_left(tokens: torch.Tensor, keep: torch.Tensor, pad: int) -> torch.Tensor:
    """Move the kept entries of every row to the front (in order), pad the rest (vectorized)."""
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)
    return tokens.gather(1, order).masked_fill(~keep.gather(1, order), pad)


def label_smoothed_ce(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                      ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean label-smoothed cross-entropy and mean NLL over non-ignored positions.

    The smoothed target puts ``1 - epsilon`` on the gold token and spreads
    ``epsilon`` uniformly over all ``V`` classes, gold included (gold gets
    ``1 - epsilon + epsilon / V``, every other class ``epsilon / V``)::

        loss = (1 - epsilon) * (-log p_y) + epsilon * mean_v(-log p_v)

    This is the rule of fairseq's NAT criterion (``nat_loss.py``), of its
    ``label_smoothed_cross_entropy`` up to v0.10.2, and of PyTorch's
    ``F.cross_entropy(label_smoothing=epsilon)``. fairseq's
    ``label_smoothed_nll_loss`` since v0.12 (PR #3182) spreads ``epsilon`` over
    the ``V - 1`` non-gold classes instead (gold gets exactly ``1 - epsilon``):
    the gold weight differs by ``epsilon / V`` and every other class's by
    ``epsilon / (V (V - 1))``, negligible at the paper's vocabulary sizes.
    Computed in float32 for stability under AMP.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    keep = target.ne(ignore_index)
    safe_target = target.masked_fill(~keep, 0)
    nll = -logp.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.mean(dim=-1)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    count = keep.sum().clamp(min=1)
    return (loss * keep).sum() / count, (nll * keep).sum() / count


@dataclass(frozen=True)
class Seq2SeqOptions(ModelOptions):
    """The options every model takes (models/options.py: how options are declared)."""

    label_smoothing: float = option(0.1, "epsilon of the label-smoothed cross-entropy (label_smoothed_ce)",
                                    schema={"minimum": 0, "maximum": 1})


class Seq2SeqModel(nn.Module):
    """Base class: a tied embedding, an encoder, and ``losses(batch, update)``."""

    arch = "base"
    default_decoding = "argmax"
    # The options this class reads from its config entry, with their defaults
    # (a subclass's Options extends its base's; models.check_options refuses
    # anything its Options does not declare).
    Options = Seq2SeqOptions
    # Cheap decoding used for validation BLEU during training.
    validation_decoding = {"strategy": "argmax"}

    def __init__(self, dictionary: Dictionary, cfg: TransformerConfig, options: dict):
        super().__init__()
        self.dictionary = dictionary
        self.cfg = cfg
        self.options = dict(options)
        self.opts = self.Options.from_dict(options)
        self.label_smoothing = self.opts.label_smoothing
        self.embed = TokenEmbedding(len(dictionary), cfg, dictionary.pad)
        self.encoder = Encoder(self.embed, cfg)

    @property
    def pad(self) -> int:
        return self.dictionary.pad

    def encode(self, src: torch.Tensor):
        return self.encoder(src)

    def losses(self, batch, update: int) -> dict[str, LossTerm]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch, update: int) -> dict[str, tuple]:
        """DDP entry point: the named losses as (value, weight) pairs of plain tensors."""
        return {name: (term.value, term.weight) for name, term in self.losses(batch, update).items()}


def total_loss(terms: dict[str, LossTerm]) -> torch.Tensor:
    """The single criterion: the weighted sum of a model's named losses."""
    return sum(term.weight * term.value for term in terms.values())
