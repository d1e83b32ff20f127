"""Transformer blocks shared by every model (AT teacher and all NAT variants).

Post-norm layers as fairseq's transformer-base, sinusoidal positions, embeddings
tied between encoder, decoder and output projection (one joint vocabulary).
Attention uses ``scaled_dot_product_attention`` so the same code runs on CPU
and GPU, and supports a key/value cache for incremental AT decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    embed_dim: int = 512
    ffn_dim: int = 2048
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_positions: int = 1024

    @classmethod
    def from_dict(cls, values: dict) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Named sizes; the config's `model_sizes` may add more.
SIZES = {
    "base": dict(embed_dim=512, ffn_dim=2048, heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1),
    "big": dict(embed_dim=1024, ffn_dim=4096, heads=16, encoder_layers=6, decoder_layers=6, dropout=0.3),
    "tiny": dict(embed_dim=64, ffn_dim=128, heads=4, encoder_layers=1, decoder_layers=1, dropout=0.1),
}


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    return table


class TokenEmbedding(nn.Module):
    """Scaled token embedding + sinusoidal positions (+ dropout)."""

    def __init__(self, vocab_size: int, cfg: TransformerConfig, padding_idx: int = 0):
        super().__init__()
        self.embed_dim = cfg.embed_dim
        self.weight = nn.Parameter(torch.empty(vocab_size, cfg.embed_dim))
        nn.init.normal_(self.weight, mean=0.0, std=cfg.embed_dim ** -0.5)
        with torch.no_grad():
            self.weight[padding_idx].zero_()
        self.padding_idx = padding_idx
        self.register_buffer("positions", sinusoidal_table(cfg.max_positions, cfg.embed_dim), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.embed_dim)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scaled embedding vectors without positions (used e.g. for glancing)."""
        return F.embedding(tokens, self.weight, self.padding_idx) * self.scale

    def add_positions(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.dropout(x + self.positions[start:start + x.size(1)].to(x.dtype))

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.add_positions(self.lookup(tokens), start)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output projection tied to the embedding matrix."""
        return F.linear(hidden, self.weight)


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0, "embed_dim must be divisible by heads"
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key_value, key_padding_mask=None, causal: bool = False,
                cache: dict | None = None, static_kv: bool = False):
        """``key_padding_mask``: (B, S) True at padding. ``cache``: dict updated in place
        (self-attention appends the new keys; cross-attention computes them once)."""
        q = self._split(self.q_proj(query))
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._split(self.k_proj(key_value)), self._split(self.v_proj(key_value))
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]  # True = attend
        if causal and q.size(2) > 1:
            tq, tk = q.size(2), k.size(2)
            causal_mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
            mask = causal_mask if mask is None else (mask & causal_mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        b, h, t, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.dropout = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.dropout)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, padding_mask):
        x = self.norm1(x + self.dropout(self.self_attn(x, x, padding_mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.self_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.attention_dropout)
        self.cross_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(cfg.embed_dim) for _ in range(3))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, self_padding_mask, enc, enc_padding_mask, cache: dict | None = None):
        self_cache = cache.setdefault("self", {}) if cache is not None else None
        cross_cache = cache.setdefault("cross", {}) if cache is not None else None
        h = self.self_attn(x, x, self_padding_mask, causal=self.causal, cache=self_cache)
        x = self.norm1(x + self.dropout(h))
        h = self.cross_attn(x, enc, enc_padding_mask, cache=cross_cache, static_kv=True)
        x = self.norm2(x + self.dropout(h))
        return self.norm3(x + self.dropout(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, embed: TokenEmbedding, cfg: TransformerConfig):
        super().__init__()
        self.embed = embed
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))

    def forward_embedded(self, x, padding_mask):
        for layer in self.layers:
            x = layer(x, padding_mask)
        return x

    def forward(self, tokens):
        padding_mask = tokens.eq(self.embed.padding_idx)
        return self.forward_embedded(self.embed(tokens), padding_mask), padding_mask


class Decoder(nn.Module):
    """Stack of decoder layers over already-embedded inputs; returns every layer's states
    (DSLP reads the intermediate ones)."""

    def __init__(self, cfg: TransformerConfig, causal: bool):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, causal) for _ in range(cfg.decoder_layers))

    def forward(self, x, self_padding_mask, enc, enc_padding_mask, cache: list | None = None,
                layer_hook=None):
        states = []
        for i, layer in enumerate(self.layers):
            x = layer(x, self_padding_mask, enc, enc_padding_mask, None if cache is None else cache[i])
            states.append(x)
            if layer_hook is not None and i + 1 < len(self.layers):
                x = layer_hook(i, x)
        return states
