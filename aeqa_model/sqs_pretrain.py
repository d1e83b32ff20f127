"""pretrain_sqs (App. A.2): build the pre-aligned Semantic Quantization Space.

Two encoders are supported:
* ``mbart``: a local mBART-large-cc25 directory loaded with ``transformers``
  (MBartModel + its sentencepiece tokenizer); states are 1024-d and a learned
  projection maps them to the NAT width D.
* ``embedded`` (the demo default): a small multilingual transformer trained here
  with mBART's denoising objective (span masking with Poisson(3.5) spans over
  35% of the words + permutation of sentence pairs) on both sides of the corpus.

Alignment then optimizes ``L_AL = L_a + alpha * L_x`` (Eq. 16-18) while the
codebook follows the EMA update of Eq. 6; the output holds the K x D codebook,
the projection and usage statistics.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from aeqa_model.io import InputError, read_lines, write_json
from aeqa_model.models.sqs import SemanticQuantizer

MBART_REQUIRED = ("config.json", "sentencepiece.bpe.model")


# ----------------------------------------------------------------- noising --
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
    path = Path(path)
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
    from aeqa_model.io import atomic_open
    with atomic_open(f"{prefix}.model", "wb") as handle:
        handle.write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def denoise_pretrain(encoder: EmbeddedEncoder, sentences: list[list[int]], updates: int, lr: float,
                     batch_size: int, seed: int, log) -> list[float]:
    """mBART denoising on both languages: reconstruct each sentence from its noised version;
    every other example concatenates two sentences and swaps them (sentence permutation)."""
    from aeqa_model.models.base import label_smoothed_ce

    rng = np.random.default_rng(seed)
    at = encoder.model
    opt = torch.optim.AdamW(at.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    off, mask_id = encoder.offset, at.dictionary.mask
    at.train()
    for step in tqdm(range(updates), desc="pretrain_sqs denoise", file=sys.stderr, mininterval=2.0):
        picks = rng.integers(0, len(sentences), size=(batch_size, 2))
        noised, clean = [], []
        for j, (a, b) in enumerate(picks):
            orig = [t + off for t in sentences[a]][:60]
            if j % 2 == 1:
                other = [t + off for t in sentences[b]][:60]
                orig, permuted = orig + other, other + orig
            else:
                permuted = orig
            noised.append(mbart_noise(permuted, rng, mask_id))
            clean.append(orig)
        src = pad_batch(noised)
        tgt = pad_batch(clean)
        prev = torch.cat([torch.full_like(tgt[:, :1], at.dictionary.bos), tgt[:, :-1]], dim=1)
        prev = prev.masked_fill(prev.eq(at.dictionary.eos) & tgt.eq(0), 0)
        enc, enc_mask = at.encode(src)
        logits = at.decoder_logits(prev, enc, enc_mask)
        loss, _ = label_smoothed_ce(logits, tgt, 0.1, 0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(at.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(updates // 10, 1))
        opt.step()
        losses.append(float(loss))
        if (step + 1) % max(updates // 5, 1) == 0:
            log(f"denoise update {step + 1}/{updates}: loss {np.mean(losses[-20:]):.3f}")
    return losses


def align(encode_fn, params, dim_in: int, pairs: list[tuple[list[int], list[int]]], codes: int, dim: int,
          updates: int, alpha: float, decay: float, lr: float, batch_size: int, seed: int, log):
    """Eq. 16-18 with the EMA codebook of Eq. 6. Returns (quantizer, projection, history)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    projection = nn.Linear(dim_in, dim)
    quantizer = SemanticQuantizer(codes, dim, decay=decay)
    # Start the codebook on projected target states so no code begins far from the data.
    with torch.no_grad():
        seed_ids = rng.integers(0, len(pairs), size=min(len(pairs), 256))
        states = []
        for start in range(0, len(seed_ids), 64):
            y = pad_batch([pairs[i][1] for i in seed_ids[start:start + 64]])
            h, m = encode_fn(y)
            states.append(projection(h)[~m])
        states = torch.cat(states)
        pick = torch.randint(len(states), (codes,), generator=torch.Generator().manual_seed(seed))
        quantizer.codebook.data.copy_(states[pick])
        quantizer.ema_sum.copy_(states[pick])
    opt = torch.optim.AdamW(list(params) + list(projection.parameters()), lr=lr, weight_decay=0.01)
    history = []
    quantizer.train()
    for step in tqdm(range(updates), desc="pretrain_sqs align", file=sys.stderr, mininterval=2.0):
        ids = rng.integers(0, len(pairs), size=batch_size)
        x = pad_batch([pairs[i][0] for i in ids])
        y = pad_batch([pairs[i][1] for i in ids])
        hx, mx = encode_fn(x)
        hy, my = encode_fn(y)
        hx, hy = projection(hx), projection(hy)
        qx, qy = quantizer(hx, mx), quantizer(hy, my)
        keep_x, keep_y = (~mx).unsqueeze(-1).float(), (~my).unsqueeze(-1).float()
        zbar_x = (qx.straight * keep_x).sum(1) / keep_x.sum(1)          # z_q-bar(H_x), grads reach H_x
        zbar_y = (qy.codes * keep_y).sum(1) / keep_y.sum(1)
        l_a = (zbar_x - zbar_y.detach()).pow(2).mean()                   # Eq. 17
        l_x = ((hx - qx.codes.detach()).pow(2).mean(-1) * keep_x.squeeze(-1)).sum() / keep_x.sum()  # Eq. 18
        loss = l_a + alpha * l_x                                         # Eq. 16
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():                                            # Eq. 6 on both languages
            quantizer.ema_update(torch.cat([hx[~mx], hy[~my]]).detach(),
                                 torch.cat([qx.indices[~mx], qy.indices[~my]]))
        history.append({"update": step + 1, "L_a": float(l_a), "L_x": float(l_x), "L_AL": float(loss)})
        if (step + 1) % max(updates // 5, 1) == 0:
            log(f"align update {step + 1}/{updates}: L_AL {float(loss):.4f} (L_a {float(l_a):.4f}, "
                f"L_x {float(l_x):.4f}), codes used {quantizer.statistics()['used']}")
    return quantizer, projection, history


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", required=True, help="JSON: the pretrain_sqs config section")
    p.add_argument("--src-text", required=True, help="training source sentences (detokenized)")
    p.add_argument("--tgt-text", required=True, help="training target sentences (detokenized)")
    p.add_argument("--codebook-size", type=int, required=True)
    p.add_argument("--dim", type=int, required=True, help="NAT model width D")
    p.add_argument("--encoder-out", required=True, help="denoised encoder checkpoint (K-independent)")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--stage", choices=["encoder", "align"], required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.info
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = json.loads(args.spec)
    try:
        src, tgt = read_lines(args.src_text), read_lines(args.tgt_text)
        if len(src) != len(tgt):
            raise InputError(f"{args.src_text} has {len(src)} lines but {args.tgt_text} has {len(tgt)}")
        if spec.get("encoder", "embedded") == "mbart":
            check_mbart_dir(spec.get("mbart_path") or "")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from aeqa_model.io import atomic_open

    if spec.get("encoder", "embedded") == "mbart":
        return run_mbart(spec, src, tgt, args, log)
    emb = spec["embedded"]
    if args.stage == "encoder":
        spm_model = train_sentencepiece(src + tgt, Path(args.encoder_out).with_suffix(".spm"),
                                        int(emb.get("sentencepiece_vocab", 8000)), args.seed)
        sentences = [spm_model.encode(s) for s in src + tgt if s.strip()]
        encoder = EmbeddedEncoder(spm_model.get_piece_size(), emb)
        losses = denoise_pretrain(encoder, sentences, int(emb["denoise_updates"]), float(spec["lr"]),
                                  int(emb.get("batch_size", 32)), args.seed, log)
        with atomic_open(args.encoder_out, "wb") as handle:
            torch.save({"state_dict": encoder.state_dict(), "vocab_size": spm_model.get_piece_size(),
                        "spec": emb, "spm": str(Path(args.encoder_out).with_suffix(".spm.model")),
                        "denoise_loss": losses}, handle)
        write_json(args.stats, {"denoise_loss_first": losses[0], "denoise_loss_last": float(np.mean(losses[-20:])),
                                "updates": len(losses)})
        return 0
    import sentencepiece as spm

    payload = torch.load(args.encoder_out, map_location="cpu", weights_only=False)
    spm_model = spm.SentencePieceProcessor(model_file=payload["spm"])
    encoder = EmbeddedEncoder(payload["vocab_size"], payload["spec"])
    encoder.load_state_dict(payload["state_dict"])
    off = encoder.offset
    pairs = [([t + off for t in spm_model.encode(a)][:100], [t + off for t in spm_model.encode(b)][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    encoder.train()
    quantizer, projection, history = align(
        encoder.encode, encoder.model.encoder.parameters(), encoder.dim, pairs, args.codebook_size, args.dim,
        int(spec["align_updates"]), float(spec.get("alpha", 0.5)), float(spec.get("ema_decay", 0.99)),
        float(spec["lr"]), int(spec.get("batch_size", 32)), args.seed, log)
    return finish(quantizer, projection, history, args, "embedded")


def run_mbart(spec, src, tgt, args, log) -> int:
    """Align with a real mBART encoder (transformers) loaded from a local directory."""
    try:
        from transformers import MBartModel, MBartTokenizer
    except ImportError:
        print("error: pretrain_sqs.encoder=mbart needs the `transformers` package "
              "(pip install transformers)", file=sys.stderr)
        return 2
    path = check_mbart_dir(spec["mbart_path"])
    tokenizer = MBartTokenizer.from_pretrained(str(path), local_files_only=True)
    mbart = MBartModel.from_pretrained(str(path), local_files_only=True).get_encoder()

    def encode_fn(ids):
        mask = ids.eq(0)
        out = mbart(input_ids=ids.masked_fill(mask, tokenizer.pad_token_id), attention_mask=(~mask).long())
        return out.last_hidden_state, mask

    shift = 0
    pairs = [(tokenizer(a, add_special_tokens=False)["input_ids"][:100], tokenizer(b, add_special_tokens=False)["input_ids"][:100])
             for a, b in zip(src, tgt) if a.strip() and b.strip()]
    pairs = [([t + shift for t in a], [t + shift for t in b]) for a, b in pairs if a and b]
    mbart.train()
    quantizer, projection, history = align(
        encode_fn, mbart.parameters(), mbart.config.d_model, pairs, args.codebook_size, args.dim,
        int(spec["align_updates"]), float(spec.get("alpha", 0.5)), float(spec.get("ema_decay", 0.99)),
        float(spec["lr"]), int(spec.get("batch_size", 32)), args.seed, log)
    return finish(quantizer, projection, history, args, f"mbart:{path}")


def finish(quantizer, projection, history, args, encoder_name) -> int:
    from aeqa_model.io import atomic_open

    stats = quantizer.statistics()
    with atomic_open(args.out, "wb") as handle:
        torch.save({"codebook": quantizer.codebook.detach().clone(), "projection": projection.state_dict(),
                    "encoder": encoder_name, "statistics": stats}, handle)
    write_json(args.stats, {"encoder": encoder_name, "codebook_size": args.codebook_size, "dim": args.dim,
                            "usage": stats, "first": history[0] if history else None,
                            "last": history[-1] if history else None, "history": history[:: max(len(history) // 50, 1)]})
    logging.info("codebook: %d/%d codes used, perplexity %.1f", stats["used"], stats["codes"], stats["perplexity"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
