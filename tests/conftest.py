"""Shared fixtures: a tiny synthetic parallel corpus, binarized like the pipeline does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.data.indexed import write_indexed
from aeqa_model.models.transformer import TransformerConfig

VOCAB = [f"w{i}" for i in range(30)]


def make_pairs(n: int, seed: int = 0):
    """A learnable toy task: the target is the source reversed with ids shifted by one."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        src = rng.integers(6, 6 + len(VOCAB) - 1, size=int(rng.integers(2, 8)))
        pairs.append((src.tolist(), (src[::-1] + 1).tolist()))
    return pairs


@pytest.fixture
def dictionary():
    return Dictionary(VOCAB)


@pytest.fixture
def tiny_cfg():
    return TransformerConfig(embed_dim=32, ffn_dim=64, heads=4, encoder_layers=1, decoder_layers=1, dropout=0.1)


@pytest.fixture
def corpus_dir(tmp_path, dictionary):
    """train/valid binarized corpora + dict.txt in tmp_path/bin."""
    out = tmp_path / "bin"
    out.mkdir()
    dictionary.save(out / "dict.txt")
    for split, n, seed in (("train", 200, 0), ("valid", 30, 1)):
        pairs = make_pairs(n, seed)
        write_indexed(out / f"{split}.src", [p[0] for p in pairs])
        write_indexed(out / f"{split}.tgt", [p[1] for p in pairs])
    return out


@pytest.fixture
def train_valid(corpus_dir, dictionary):
    return (ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", dictionary),
            ParallelCorpus(corpus_dir / "valid.src", corpus_dir / "valid.tgt", dictionary))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)
