"""The encoders pretrain_sqs aligns (App. A.2), and the embedded one's denoising.

* ``embedded`` (the demo default): a small multilingual transformer over its own
  sentencepiece vocabulary, trained here with mBART's denoising objective (span
  masking with Poisson(3.5) spans over 35% of the words + permutation of sentence
  pairs) on both sides of the corpus (``denoise_pretrain``); ``noised_batch`` gives
  the same task to the alignment (``pretrain_sqs.align_denoise_weight``).
* ``mbart``: a local mBART-large-cc25 directory (``check_mbart_dir``), loaded with
  ``transformers`` by the align stage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from aeqa_model.io import InputError, atomic_open
from aeqa_model.pretrain_sqs.stage import StageLog, StageRun, load_stage_output


MBART_REQUIRED = ("config.json", "sentencepiece.bpe.model")


def mbart_noise(ids: list[int], rng: np.random.Generator, mask_id: int, mask_ratio: float = 0.35,
                poisson_lambda: float = 3.5) -> list[int]:
    """Replace spans (lengths ~ Poisson(3.5)) covering ~35% of tokens by one <mask> each."""
    n = len(ids)
    budget = int(round(n * mask_ratio))
    out, i = [], 0
    starts = set()
    while budget > 0 and len(starts) < n:
        start = int(rng.integers(0, n))
        starts.add(start)
        budget -= max(1, int(rng.poisson(poisson_lambda)))
    spans = {}
    for start in starts:
        spans[start] = max(1, int(rng.poisson(poisson_lambda)))
    while i < n:
        if i in spans:
            out.append(mask_id)
            i += spans[i]
        else:
            out.append(ids[i])
            i += 1
    return out


def check_mbart_dir(path: str | Path) -> Path:
    """The local mBART directory of ``pretrain_sqs.mbart_path`` (``~`` expanded, as the
    start-up check aeqa_model.config.mbart_problems does), or an InputError naming what is missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"pretrain_sqs.mbart_path={path}: directory not found; download "
                         "mbart-large-cc25 there or set pretrain_sqs.encoder: embedded")
    missing = [name for name in MBART_REQUIRED if not (path / name).exists()]
    weights = list(path.glob("*.bin")) + list(path.glob("*.safetensors"))
    if not weights:
        missing.append("pytorch_model.bin or model.safetensors")
    if missing:
        raise InputError(f"pretrain_sqs.mbart_path={path}: incomplete mBART directory, missing "
                         f"{', '.join(missing)}")
    return path


class EmbeddedEncoder(nn.Module):
    """The demo's multilingual denoising model: an AT transformer over a sentencepiece vocab."""

    def __init__(self, vocab_size: int, spec: dict):
        super().__init__()
        from aeqa_model.data.dictionary import Dictionary
        from aeqa_model.models.at import ATTransformer
        from aeqa_model.models.transformer import TransformerConfig

        cfg = TransformerConfig(embed_dim=spec["embed_dim"], ffn_dim=spec["ffn_dim"], heads=spec["heads"],
                                encoder_layers=spec["layers"], decoder_layers=1, dropout=0.1)
        dictionary = Dictionary([f"spm{i}" for i in range(vocab_size)])
        self.offset = 6  # sentencepiece id i -> dictionary id i + 6 (after the specials)
        self.model = ATTransformer(dictionary, cfg, {"label_smoothing": 0.0})
        self.dim = cfg.embed_dim

    def encode(self, src):
        return self.model.encode(src)


def pad_batch(seqs: list[list[int]], pad: int = 0, eos: int = 2) -> torch.Tensor:
    width = max(len(s) for s in seqs) + 1
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s) + 1] = torch.tensor(s + [eos])
    return out


def train_sentencepiece(texts: list[str], prefix: Path, vocab_size: int, seed: int) -> "spm.SentencePieceProcessor":
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
                                   hard_vocab_limit=False, character_coverage=0.9995, model_type="unigram",
                                   num_threads=1, minloglevel=2)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(f"{prefix}.model", "wb") as handle:
        handle.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


class DenoiseNet(nn.Module):
    """The denoising loss of the embedded encoder's AT model (one module for DDP)."""

    def __init__(self, at: nn.Module):
        super().__init__()
        self.at = at

    def forward(self, src, prev, tgt):
        from aeqa_model.models.base import label_smoothed_ce

        enc, enc_mask = self.at.encode(src)
        logits = self.at.decoder_logits(prev, enc, enc_mask)
        loss, _ = label_smoothed_ce(logits, tgt, 0.1, 0)
        return loss


def noised_batch(sentences: list[list[int]], rng: np.random.Generator, dictionary) -> tuple[torch.Tensor, ...]:
    """(noised source, decoder input, clean target) of mBART denoising for sentences of
    dictionary ids: each cut to 60 tokens and noised by ``mbart_noise``."""
    clean = [s[:60] for s in sentences]
    return denoising_tensors([mbart_noise(s, rng, dictionary.mask) for s in clean], clean, dictionary)


def denoising_tensors(noised: list[list[int]], clean: list[list[int]], dictionary) -> tuple[torch.Tensor, ...]:
    """(source, decoder input, target) of a denoising batch: the noised sentences padded,
    BOS + the clean ones (padding where the target pads), and the clean ones + EOS."""
    src, tgt = pad_batch(noised), pad_batch(clean)
    prev = torch.cat([torch.full_like(tgt[:, :1], dictionary.bos), tgt[:, :-1]], dim=1)
    prev = prev.masked_fill(prev.eq(dictionary.eos) & tgt.eq(0), 0)
    return src, prev, tgt


def denoise_pretrain(encoder: EmbeddedEncoder, sentences: list[list[int]], updates: int, lr: float,
                     batch_size: int, seed: int, log, run: StageRun | None = None) -> list[float] | None:
    """mBART denoising on both languages: reconstruct each sentence from its noised version;
    every other example concatenates two sentences and swaps them (sentence permutation).
    Returns the loss of every update, or None when a signal stopped it (after a checkpoint)."""
    run = run or StageRun()
    rt = run.rt
    rng = np.random.default_rng(seed)
    at = encoder.model.to(rt.device)
    opt = torch.optim.AdamW(at.parameters(), lr=lr, weight_decay=0.01)
    net = rt.wrap(DenoiseNet(at))
    off, mask_id = encoder.offset, at.dictionary.mask
    stage = StageLog(run.csv_path, ("loss",), rt, "pretrain_sqs denoise", updates)
    start = run.resume_into({"model": at, "optimizer": opt}, {"np_rng": rng}, stage)
    at.train()
    every = max(updates // 5, 1)
    for step in range(start, updates):
        picks = rng.integers(0, len(sentences), size=(batch_size, 2))
        noised, clean = [], []
        for j, (a, b) in enumerate(picks):   # the whole global batch on every rank: same rng
            orig = [t + off for t in sentences[a]][:60]
            if j % 2 == 1:
                other = [t + off for t in sentences[b]][:60]
                orig, permuted = orig + other, other + orig
            else:
                permuted = orig
            noised.append(mbart_noise(permuted, rng, mask_id))
            clean.append(orig)
        src, prev, tgt = denoising_tensors(rt.shard(noised), rt.shard(clean), at.dictionary)
        with rt.autocast():
            loss = net(src.to(rt.device), prev.to(rt.device), tgt.to(rt.device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(at.parameters(), 1.0)
        step_lr = lr * min(1.0, (step + 1) / max(updates // 10, 1))
        for group in opt.param_groups:
            group["lr"] = step_lr
        opt.step()
        stage.add(step + 1, step_lr, loss)
        if (step + 1) % every == 0:
            stage.flush()
            log(f"denoise update {step + 1}/{updates}: loss "
                f"{np.mean([r['loss'] for r in stage.rows[-20:]]):.3f}")
        if run.after_update(step + 1, updates, stage, lambda: {
                "stage": "encoder", "model": at.state_dict(), "optimizer": opt.state_dict(),
                "np_rng": rng.bit_generator.state}):
            return None
    stage.close()
    return [row["loss"] for row in stage.rows]


def load_encoder(path: Path) -> dict:
    """The encoder stage's output, or an InputError that names it and says what to do."""
    return load_stage_output(path, "denoised encoder", ("state_dict", "vocab_size", "spec", "spm"),
                             "pretrain_sqs_encoder")
