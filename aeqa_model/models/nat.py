"""Vanilla NAT (Gu et al. 2018): length prediction + softcopy decoder inputs.

Subclasses (AEQA-NAT, GLAT, ...) reuse the length predictor, softcopy and the
non-causal decoder; DSLP (layer-wise prediction) is an option of this class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aeqa_model.models.base import LossTerm, Seq2SeqModel, Seq2SeqOptions, label_smoothed_ce, masked_mean
from aeqa_model.models.hostsync import avoid_sync
from aeqa_model.models.options import option
from aeqa_model.models.transformer import Decoder


def softcopy_weights(src_mask: torch.Tensor, tgt_lengths: torch.Tensor, tgt_len: int,
                     tau: float) -> torch.Tensor:
    """Eq. 21 with positions rescaled to the target length (Wei et al. 2019):
    ``w_ij = softmax_i(-|j - i*Ty/Tx| / tau)`` over the real source positions i.

    src_mask: (B, S) True at padding (the source EOS counts as a position);
    returns (B, T, S) weights whose rows sum to 1 over non-padding sources.
    """
    src_len = (~src_mask).sum(1).clamp(min=1).float()                       # Tx
    i = torch.arange(src_mask.size(1), device=src_mask.device).float()      # source positions
    j = torch.arange(tgt_len, device=src_mask.device).float()               # target positions
    ratio = tgt_lengths.clamp(min=1).float() / src_len                      # Ty / Tx
    dist = (j[None, :, None] - i[None, None, :] * ratio[:, None, None]).abs()
    scores = (-dist / tau).masked_fill(src_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


class LengthPredictor(nn.Module):
    """Classifies the offset ``|Y| - |X|`` from mean-pooled encoder states."""

    def __init__(self, dim: int, max_offset: int = 64):
        super().__init__()
        self.max_offset = max_offset
        self.proj = nn.Linear(dim, 2 * max_offset + 1)

    def forward(self, enc, enc_mask):
        return self.proj(masked_mean(enc, enc_mask))

    def offsets_to_class(self, offsets: torch.Tensor) -> torch.Tensor:
        return offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset

    def class_to_offsets(self, classes: torch.Tensor) -> torch.Tensor:
        return classes - self.max_offset


@dataclass(frozen=True)
class NATOptions(Seq2SeqOptions):
    """Options of every NAT (models/options.py: how options are declared)."""

    max_length_offset: int = option(64, "length prediction classifies the offset |Y| - |X| in "
                                    "[-max_length_offset, max_length_offset] (App. C.2)", schema={"minimum": 1})
    length_loss_weight: float = option(0.1, "delta, the weight of the length loss L_LEN (Eq. 13)",
                                       schema={"minimum": 0})
    softcopy_tau: float = option(1.0, "tau, the softcopy temperature (Eq. 21)", schema={"exclusiveMinimum": 0})
    decoder_input: str = option("softcopy", "decoder inputs H_m: softcopy of the encoder states (Eq. 21) or "
                                "uniform copy", choices=("softcopy", "uniform"))
    dslp: bool = option(False, "DSLP layer-wise prediction: every decoder layer predicts, the next layer "
                        "reads W [h; emb(argmax)] (Huang et al. 2022a); the loss averages the layers'")


class VanillaNAT(Seq2SeqModel):
    arch = "vanilla_nat"
    default_decoding = "argmax"
    Options = NATOptions

    def __init__(self, dictionary, cfg, options):
        super().__init__(dictionary, cfg, options)
        opts = self.opts
        self.decoder = Decoder(cfg, causal=False)
        self.length = LengthPredictor(cfg.embed_dim, opts.max_length_offset)
        self.length_weight = opts.length_loss_weight                          # delta, Eq. 13
        self.softcopy_tau = opts.softcopy_tau
        self.copy = opts.decoder_input                                        # softcopy | uniform
        self.dslp = opts.dslp
        if self.dslp:
            # DSLP: next layer input = W [h; emb(argmax)] (Huang et al. 2022a)
            self.dslp_proj = nn.ModuleList(nn.Linear(2 * cfg.embed_dim, cfg.embed_dim)
                                           for _ in range(cfg.decoder_layers - 1))

    # ---------------------------------------------------------------- parts --
    @staticmethod
    def source_lengths(src_mask):
        return (~src_mask).sum(1) - 1  # without EOS

    def length_loss(self, enc, enc_mask, tgt_lengths):
        logits = self.length(enc, enc_mask)
        offsets = tgt_lengths - self.source_lengths(enc_mask)
        return F.cross_entropy(logits.float(), self.length.offsets_to_class(offsets))

    def predict_lengths(self, enc, enc_mask, beam: int = 1) -> torch.Tensor:
        """(B, beam) distinct candidate lengths, best first.

        Every offset class gives the length ``|X| + offset``; the classes whose
        length would be < 1 are merged into length 1 with the best score among
        them (so the top candidate is exactly the clamped argmax), and the
        ``beam`` best *distinct* lengths are returned. Without the merge a short
        source could get ``[1, 1, 1, 1, 6]``. Only when a row has fewer than
        ``beam`` distinct lengths (an empty source with ``beam > max_offset``)
        are the missing candidates filled with its best length.
        """
        logits = self.length(enc, enc_mask).float()                                  # (B, C)
        offsets = self.length.class_to_offsets(torch.arange(logits.size(1), device=logits.device))
        lengths = self.source_lengths(enc_mask)[:, None] + offsets[None, :]          # (B, C)
        low = lengths <= 1
        merged = logits.masked_fill(~low, float("-inf")).amax(1, keepdim=True)     # best score of length <= 1
        scores = torch.where(lengths == 1, merged, logits.masked_fill(low, float("-inf")))
        top = scores.topk(beam, dim=-1)
        chosen = lengths.gather(1, top.indices)
        chosen = torch.where(torch.isfinite(top.values), chosen, chosen[:, :1])
        return chosen.clamp(min=1)

    def copy_inputs(self, enc, enc_mask, tgt_lengths: torch.Tensor,
                    tgt_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs H_m of length max(tgt_lengths) and their padding mask.

        Training passes ``tgt_len``, the width of the padded target batch (which is
        max(tgt_lengths): the loss compares the two position by position), so the
        length need not be read back from the device (a host sync on a GPU)."""
        if tgt_len is None:
            tgt_len = int(tgt_lengths.max().clamp(min=1))
        tgt_mask = torch.arange(tgt_len, device=enc.device)[None, :] >= tgt_lengths[:, None]
        if self.copy == "uniform":
            src_len = self.source_lengths(enc_mask).clamp(min=1).float()
            j = torch.arange(tgt_len, device=enc.device).float()
            idx = torch.round(j[None] * src_len[:, None] / tgt_lengths.clamp(min=1)[:, None].float()).long()
            idx = torch.minimum(idx, src_len.long()[:, None] - 1).clamp(min=0)
            h = enc.gather(1, idx.unsqueeze(-1).expand(-1, -1, enc.size(-1)))
        else:
            w = softcopy_weights(enc_mask, tgt_lengths, tgt_len, self.softcopy_tau)
            h = torch.bmm(w.to(enc.dtype), enc)
        return h, tgt_mask

    def run_decoder(self, inputs, tgt_mask, enc, enc_mask, final_logits: bool = True):
        """Returns per-layer logits (DSLP) — the last entry is the model's prediction —
        and the last layer's states; ``final_logits=False`` skips the last output layer."""
        x = self.embed.add_positions(inputs)
        layer_logits = []

        def hook(i, h):
            logits = self.embed.logits(h)
            layer_logits.append(logits)
            pred = self.embed.lookup(logits.argmax(-1))
            return self.dslp_proj[i](torch.cat([h, pred], dim=-1))

        states = self.decoder(x, tgt_mask, enc, enc_mask, layer_hook=hook if self.dslp else None)
        if final_logits:
            layer_logits.append(self.embed.logits(states[-1]))
        return layer_logits, states[-1]

    def predict_tokens(self, inputs, tgt_mask, enc, enc_mask) -> torch.Tensor:
        """Argmax tokens of one decoder pass, pad at padding positions (the glancing
        first pass, Eq. 11). The output layer, the largest part of the pass, runs
        only at the non-padding positions on CPU; on a GPU (``avoid_sync``) at every
        position, padding masked afterwards, because selecting the rows would make
        the host wait for the device."""
        _, last = self.run_decoder(inputs, tgt_mask, enc, enc_mask, final_logits=False)
        if avoid_sync(last):
            return self.embed.logits(last).argmax(-1).masked_fill(tgt_mask, self.pad)
        keep = ~tgt_mask
        tokens = torch.full(tgt_mask.shape, self.pad, dtype=torch.long, device=tgt_mask.device)
        return tokens.masked_scatter(keep, self.embed.logits(last[keep]).argmax(-1))

    def decoder_inputs(self, enc, enc_mask, tgt_lengths, tgt_len: int | None = None):
        return self.copy_inputs(enc, enc_mask, tgt_lengths, tgt_len)

    @staticmethod
    def target_width(target: torch.Tensor) -> int:
        """The decoder length in training: the padded target's width (at least 1)."""
        return max(int(target.size(1)), 1)

    # --------------------------------------------------------------- losses --
    def translation_loss(self, layer_logits, target) -> LossTerm:
        # Eq. 2; with DSLP the loss is averaged over all layers' predictions.
        losses = [label_smoothed_ce(lg, target, self.label_smoothing, self.pad)[0] for lg in layer_logits]
        return LossTerm(torch.stack(losses).mean())

    def losses(self, batch, update: int):
        enc, enc_mask = self.encode(batch.src)
        inputs, tgt_mask = self.decoder_inputs(enc, enc_mask, batch.target_lengths, self.target_width(batch.target))
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        return {"nat": self.translation_loss(layer_logits, batch.target),
                "length": LossTerm(self.length_loss(enc, enc_mask, batch.target_lengths), self.length_weight)}

    # ------------------------------------------------------------ inference --
    @torch.no_grad()
    def forward_inference(self, enc, enc_mask, lengths: torch.Tensor, **decode_options):
        """One parallel pass for given lengths: returns (tokens (B,T), mean log-prob (B,))."""
        inputs, tgt_mask = self.decoder_inputs(enc, enc_mask, lengths)
        layer_logits, _ = self.run_decoder(inputs, tgt_mask, enc, enc_mask)
        return self.pick(layer_logits[-1], tgt_mask)

    def pick(self, logits, tgt_mask):
        logp = torch.log_softmax(logits.float(), -1)
        # Never emit specials (pad/bos/eos/unk/mask/blank) from a NAT output position.
        logp[..., :6] = float("-inf")
        best, tokens = logp.max(-1)
        tokens = tokens.masked_fill(tgt_mask, self.pad)
        return tokens, masked_mean(best.masked_fill(tgt_mask, 0), tgt_mask)
