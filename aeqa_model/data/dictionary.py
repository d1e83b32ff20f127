"""Joint source/target dictionary with fixed special symbols (docs/formats.md)."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterable

from aeqa_model.io import InputError, atomic_open

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>", "<blank>")


class Dictionary:
    """Maps BPE tokens to ids. Ids 0..5 are the special symbols, in SPECIALS order."""

    def __init__(self, tokens: Iterable[str] = (), counts: Iterable[int] | None = None):
        self.symbols: list[str] = list(SPECIALS)
        self.counts: list[int] = [0] * len(SPECIALS)
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        counts = list(counts) if counts is not None else None
        for i, token in enumerate(tokens):
            self.add(token, counts[i] if counts else 0)

    pad, bos, eos, unk, mask, blank = range(6)

    #: The file it was loaded from (None: built in memory), for messages.
    path: Path | None = None

    @property
    def ids_digest(self) -> str:
        """sha256 of the symbols in id order: what the ids of data encoded with this
        dictionary mean (the counts do not change that). Binarized data records it."""
        return hashlib.sha256("\n".join(self.symbols).encode("utf-8")).hexdigest()

    def add(self, token: str, count: int = 0) -> int:
        if token in self.index:
            self.counts[self.index[token]] += count
            return self.index[token]
        self.index[token] = len(self.symbols)
        self.symbols.append(token)
        self.counts.append(count)
        return self.index[token]

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, line: str) -> list[int]:
        return [self.index.get(tok, self.unk) for tok in line.split()]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos and strip_specials:
                break
            if strip_specials and i < len(SPECIALS):
                continue
            out.append(self.symbols[i])
        return " ".join(out)

    @classmethod
    def build(cls, files: Iterable[str | Path], min_count: int = 1) -> "Dictionary":
        counter: Counter[str] = Counter()
        for path in files:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    counter.update(line.split())
        ranked = sorted((t for t, c in counter.items() if c >= min_count and t not in SPECIALS),
                        key=lambda t: (-counter[t], t))
        return cls(ranked, [counter[t] for t in ranked])

    def save(self, path: str | Path) -> None:
        with atomic_open(path) as handle:
            for sym, count in zip(self.symbols[len(SPECIALS):], self.counts[len(SPECIALS):]):
                handle.write(f"{sym} {count}\n")

    @classmethod
    def load(cls, path: str | Path) -> "Dictionary":
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: dictionary not found; run the binarize rule first")
        tokens, counts = [], []
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                parts = line.rstrip("\n").rsplit(" ", 1)
                if len(parts) != 2 or not parts[1].isdigit():
                    raise InputError(f"{path}:{line_no}: expected 'token count', got {line!r}")
                tokens.append(parts[0])
                counts.append(int(parts[1]))
        dictionary = cls(tokens, counts)
        dictionary.path = path
        return dictionary
