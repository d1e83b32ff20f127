"""Parallel corpus, token-count batching by length buckets, and collation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import IndexedCorpus
from aeqa_model.io import InputError


@dataclass
class Batch:
    """A padded batch. NAT models read ``target`` (no BOS/EOS); AT models read
    ``prev_output`` (BOS + y) and ``target_eos`` (y + EOS)."""

    ids: torch.Tensor          # (B,) sentence indices in the corpus
    src: torch.Tensor          # (B, S) source + EOS, right-padded
    src_lengths: torch.Tensor  # (B,)
    target: torch.Tensor       # (B, T) y, right-padded
    target_lengths: torch.Tensor
    prev_output: torch.Tensor  # (B, T+1) BOS + y
    target_eos: torch.Tensor   # (B, T+1) y + EOS
    # (B, T) the pre-aligned encoder's SQS code of each target token (sqs_target_codes
    # stage; AEQA models with h_y_encoder: pretrained), 0 at padding; None without
    target_codes: torch.Tensor | None = None

    @property
    def ntokens(self) -> int:
        return int(self.target_lengths.sum())

    def to(self, device) -> "Batch":
        return Batch(**{k: None if v is None else v.to(device, non_blocking=True) for k, v in self.__dict__.items()})


def bucketed_width(width: int, multiple: int) -> int:
    """``width`` rounded up to a multiple of ``multiple`` (1: unchanged): the widths a
    compiled training step sees then come from a small set, so torch.compile does not
    specialise a new graph for every batch (train/settings.py, ``pad_to_multiple``)."""
    return -(-width // multiple) * multiple


def _pad(seqs: list[np.ndarray], pad: int, prefix: int | None = None, suffix: int | None = None,
         width: int | None = None) -> torch.Tensor:
    """Right-padded rows; ``width``, when given, is the tensor's width (at least the longest row's)."""
    extra = (prefix is not None) + (suffix is not None)
    longest = max((len(s) for s in seqs), default=0) + extra
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"padding width {width} is below the longest row ({longest})")
    out = torch.full((len(seqs), max(width, 1)), pad, dtype=torch.long)
    for row, seq in enumerate(seqs):
        body = list(seq)
        if prefix is not None:
            body = [prefix] + body
        if suffix is not None:
            body = body + [suffix]
        out[row, : len(body)] = torch.as_tensor(body, dtype=torch.long)
    return out


def collate(ids: list[int], src: list[np.ndarray], tgt: list[np.ndarray], d: Dictionary,
            codes: list[np.ndarray] | None = None, pad_to_multiple: int = 1) -> Batch:
    """The padded batch of these sentences. ``pad_to_multiple`` > 1 pads the source
    width (EOS included) and the target width T up to multiples of it; ``prev_output``
    and ``target_eos`` keep their width T + 1 and ``target_codes`` the width T, as the
    models expect. The lengths stay the true ones: every model masks padding, so
    only the amount of padding changes (tests/test_train_compile.py checks the losses)."""
    src_width = bucketed_width(max((len(s) for s in src), default=0) + 1, pad_to_multiple)
    tgt_width = bucketed_width(max((len(t) for t in tgt), default=0), pad_to_multiple)
    return Batch(
        ids=torch.as_tensor(ids, dtype=torch.long),
        src=_pad(src, d.pad, suffix=d.eos, width=src_width),
        src_lengths=torch.as_tensor([len(s) + 1 for s in src], dtype=torch.long),
        target=_pad(tgt, d.pad, width=tgt_width),
        target_lengths=torch.as_tensor([len(t) for t in tgt], dtype=torch.long),
        prev_output=_pad(tgt, d.pad, prefix=d.bos, width=tgt_width + 1),
        target_eos=_pad(tgt, d.pad, suffix=d.eos, width=tgt_width + 1),
        target_codes=None if codes is None else _pad(codes, 0, width=tgt_width),
    )


class ParallelCorpus:
    """Source/target pair of IndexedCorpus files that must have the same number of lines,
    and optionally a third stream, ``codes_prefix``: one SQS code per target token (the
    sqs_target_codes stage), read into ``Batch.target_codes``."""

    def __init__(self, src_prefix: str | Path, tgt_prefix: str | Path, dictionary: Dictionary,
                 max_positions: int = 1024, codes_prefix: str | Path | None = None):
        # Every token id must be an id of this dictionary, and the data binarized with it
        # (checked once, here).
        self.src = IndexedCorpus(src_prefix, dictionary=dictionary)
        self.tgt = IndexedCorpus(tgt_prefix, dictionary=dictionary)
        if len(self.src) != len(self.tgt):
            raise InputError(f"{src_prefix} has {len(self.src)} sentences but {tgt_prefix} has "
                             f"{len(self.tgt)}; rebuild both with the binarize rule")
        self.dictionary = dictionary
        self.max_positions = max_positions
        self.codes = None
        if codes_prefix is not None:
            self.codes = IndexedCorpus(codes_prefix)
            if len(self.codes) != len(self.tgt) or not np.array_equal(self.codes.sizes, self.tgt.sizes):
                differ = ("its sentence count" if len(self.codes) != len(self.tgt) else
                          f"sentence {int(np.argmax(self.codes.sizes != self.tgt.sizes)) + 1}'s length")
                raise InputError(f"{codes_prefix}: the target codes do not match {tgt_prefix} ({differ} differs): "
                                 f"they were made for other data; delete the codes' report.json and rerun the "
                                 f"sqs_target_codes rule")

    def __len__(self) -> int:
        return len(self.src)

    @property
    def max_tokens_per_side(self) -> int:
        """Tokens of a sentence a batch keeps (the model's positions less BOS/EOS); longer
        sentences are cut to it (decode.cli counts and logs them)."""
        return self.max_positions - 2

    def batch(self, ids, pad_to_multiple: int = 1) -> Batch:
        """The collated batch of sentences ``ids``; ``pad_to_multiple``: see :func:`collate`."""
        ids = [int(i) for i in ids]
        cap = self.max_tokens_per_side
        codes = None if self.codes is None else [self.codes[i][:cap] for i in ids]
        return collate(ids, [self.src[i][:cap] for i in ids], [self.tgt[i][:cap] for i in ids], self.dictionary, codes,
                       pad_to_multiple)

    def token_batches(self, max_tokens: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                      max_sentences: int | None = None) -> list[np.ndarray]:
        """Group sentences of similar length so that (rows x longest side) <= max_tokens.

        Sorting by length (ties broken by a seeded permutation) keeps padding low;
        the batch order is shuffled per epoch with ``seed + epoch`` so a resumed
        run sees exactly the same batches as an uninterrupted one.
        """
        n = len(self)
        if n == 0:
            return []
        longest = np.maximum(self.src.sizes, self.tgt.sizes) + 2
        rng = np.random.default_rng(seed + 1000003 * epoch)
        tie = rng.permutation(n) if shuffle else np.arange(n)
        order = np.lexsort((tie, longest))
        batches, start = [], 0
        while start < n:
            end, width = start, 0
            while end < n:
                width_new = max(width, int(longest[order[end]]))
                rows = end - start + 1
                if rows > 1 and (rows * width_new > max_tokens or (max_sentences and rows > max_sentences)):
                    break
                width, end = width_new, end + 1
            batches.append(order[start:end])
            start = end
        if shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches
