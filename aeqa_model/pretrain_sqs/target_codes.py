"""sqs_target_codes stage: H_y from the pre-aligned encoder (docs/method.md #26).

One reading of Eq. 5 (App. A.2: H_y is "the intermediate representation output by the
encoder for the target text", in the mBART paragraph) takes H_y from the pre-aligned
encoder and its projection to the NAT width, the space the pre-aligned codebook was
fitted in, instead of from the NAT's own encoder. That encoder reads its own
vocabulary (the embedded encoder's sentencepiece model, or mBART's), so its positions
are not the NAT's BPE target positions, which Eq. 10 and reading A's glancing need.
This stage maps them:

* each BPE line of the NAT's training (and validation) targets is turned back into the
  tokenized sentence (pieces joined at ``@@``, words at single spaces), and every BPE
  token gets its character span in it;
* the pre-aligned encoder reads that sentence through its own tokenizer, which reports
  each piece's character span; the states are projected to the NAT width;
* a BPE token's H_y is the mean of the projected states of the pieces its span overlaps
  (a token no piece overlaps, e.g. past the encoder's length limit, takes the piece
  nearest to it: counted in the report);
* z_q(H_y) is its nearest code in the pre-aligned codebook; only the code index is kept,
  one per BPE token, written like the binarized data (``<split>.bin/.idx/.sum``), so the
  trainer reads it with the batch (``Batch.target_codes``).

The pre-aligned encoder is frozen here (the NAT does not train it), so the codes are
fixed per sentence; the codebook rows they index still move in NAT training.
``report.json``, written last, marks the output complete and says how many codes the
targets use and how often neighbouring target positions share one.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aeqa_model.data.bpe import SEPARATOR
from aeqa_model.data.indexed import write_indexed
from aeqa_model.io import EXIT_BAD_INPUT, InputError, read_lines, write_json
from aeqa_model.models.sqs import usage_statistics
from aeqa_model.pretrain_sqs.stage import load_stage_output



def bpe_spans(line: str) -> tuple[str, list[tuple[int, int]]]:
    """The tokenized sentence a BPE ``line`` encodes (pieces marked ``@@`` joined to the
    next, words separated by one space) and each BPE token's character span in it."""
    tokens = line.split()
    parts, spans, pos = [], [], 0
    for i, token in enumerate(tokens):
        joined = token.endswith(SEPARATOR)
        piece = token[: -len(SEPARATOR)] if joined else token
        spans.append((pos, pos + len(piece)))
        parts.append(piece)
        pos += len(piece)
        if not joined and i < len(tokens) - 1:
            parts.append(" ")
            pos += 1
    return "".join(parts), spans


def overlap_weights(token_spans: list[tuple[int, int]], piece_spans: list[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """(n_tokens, n_pieces) weights whose rows average the pieces overlapping each token's
    span, and how many tokens no piece overlaps: those take the piece whose centre is
    nearest their own (a row of zeros where there are no pieces at all)."""
    tokens = np.asarray(token_spans, dtype=np.float64).reshape(-1, 2)
    pieces = np.asarray(piece_spans, dtype=np.float64).reshape(-1, 2)
    overlap = (pieces[None, :, 0] < tokens[:, None, 1]) & (pieces[None, :, 1] > tokens[:, None, 0])
    weights = overlap.astype(np.float32)
    lonely = ~overlap.any(1)
    if lonely.any() and len(pieces):
        distance = np.abs(pieces.mean(1)[None, :] - tokens[lonely].mean(1)[:, None])
        weights[np.flatnonzero(lonely), distance.argmin(1)] = 1.0
    return weights / np.maximum(weights.sum(1, keepdims=True), 1.0), int(lonely.sum())


class PretrainedTargetEncoder:
    """The frozen pre-aligned encoder (``aligned_encoder.pt``) with its tokenizer and the
    projection and codebook of ``sqs.pt``: ``codes(lines)`` gives each BPE token's code."""

    def __init__(self, aligned_path: Path, sqs_path: Path, device: torch.device, max_pieces: int = 1022):
        from aeqa_model.models.sqs import SemanticQuantizer

        payload = load_stage_output(aligned_path, "aligned encoder", ("kind", "state_dict"), "pretrain_sqs")
        sqs = load_stage_output(sqs_path, "pre-aligned SQS", ("codebook", "projection"), "pretrain_sqs")
        book = sqs["codebook"]
        self.device, self.max_pieces = device, max_pieces
        self.quantizer = SemanticQuantizer(book.shape[0], book.shape[1]).to(device).eval()
        self.quantizer.load_pretrained(sqs_path)
        weight = sqs["projection"]["weight"]
        self.projection = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(device)
        self.projection.load_state_dict(sqs["projection"])
        self.kind = payload["kind"]
        if self.kind == "embedded":
            self._init_embedded(payload)
        elif self.kind == "mbart":
            self._init_mbart(payload)
        else:
            raise InputError(f"{aligned_path}: unknown encoder kind {self.kind!r}; rerun the pretrain_sqs stage")

    def _init_embedded(self, payload: dict) -> None:
        import sentencepiece as spm

        from aeqa_model.pretrain_sqs.encoders import EmbeddedEncoder

        encoder = EmbeddedEncoder(payload["vocab_size"], payload["spec"])
        encoder.load_state_dict(payload["state_dict"])
        self.module = encoder.model.encoder.to(self.device).eval()
        self.spm = spm.SentencePieceProcessor(model_proto=payload["spm"])
        offset = encoder.offset
        self.piece_ids = lambda pieces: [piece_id + offset for piece_id, _, _, _ in pieces]
        self.pad, self.eos = 0, 2
        self.run = lambda ids: self.module(ids)

    def _init_mbart(self, payload: dict) -> None:
        import sentencepiece as spm

        from aeqa_model.pretrain_sqs.encoders import check_mbart_dir
        try:
            from transformers import MBartModel, MBartTokenizer
        except ImportError:
            raise InputError("the aligned encoder is mBART: the sqs_target_codes stage needs the `transformers` "
                             "package (pip install transformers)") from None
        path = check_mbart_dir(payload["mbart_path"])
        tokenizer = MBartTokenizer.from_pretrained(str(path), local_files_only=True)
        encoder = MBartModel.from_pretrained(str(path), local_files_only=True).get_encoder()
        encoder.load_state_dict(payload["state_dict"])
        self.module = encoder.to(self.device).eval()
        # mBART's tokenizer is this sentencepiece model with an id offset; the model gives
        # the pieces' character spans, the tokenizer their ids.
        self.spm = spm.SentencePieceProcessor(model_file=str(path / "sentencepiece.bpe.model"))
        self.piece_ids = lambda pieces: tokenizer.convert_tokens_to_ids([piece for _, piece, _, _ in pieces])
        self.pad, self.eos = 0, tokenizer.eos_token_id
        pad_id = tokenizer.pad_token_id

        def run(ids):
            mask = ids.eq(0)
            out = self.module(input_ids=ids.masked_fill(mask, pad_id), attention_mask=(~mask).long())
            return out.last_hidden_state, mask

        self.run = run

    def pieces(self, text: str) -> list[tuple[int, str, int, int]]:
        """(id, piece, begin, end) of each of the encoder tokenizer's pieces of ``text``
        (begin/end: character offsets), at most ``max_pieces``. Copied out while the
        proto is alive: the pieces of a freed ``immutable_proto`` read garbage."""
        proto = self.spm.encode(text, out_type="immutable_proto")
        return [(p.id, p.piece, p.begin, p.end) for p in proto.pieces][: self.max_pieces]

    def codes(self, lines: list[str], max_tokens: int = 4000, chunk: int = 20000,
              log: Callable[[str], None] = logging.info) -> tuple[list[np.ndarray], int]:
        """One code per BPE token of every line (in order), and how many tokens no piece
        overlapped; ``chunk`` lines at a time (the overlap weights of a WMT-sized corpus
        would not fit in memory at once), logging progress after each."""
        out: list[np.ndarray] = []
        lonely = 0
        for start in range(0, len(lines), chunk):
            codes, nearest = self._chunk_codes(lines[start:start + chunk], max_tokens)
            out.extend(codes)
            lonely += nearest
            log(f"  {min(start + chunk, len(lines))}/{len(lines)} sentences")
        return out, lonely

    @torch.no_grad()
    def _chunk_codes(self, lines: list[str], max_tokens: int) -> tuple[list[np.ndarray], int]:
        """``codes`` of one chunk: sentences encoded in batches of similar length."""
        prepared, lonely = [], 0
        for line in lines:
            text, spans = bpe_spans(line)
            pieces = self.pieces(text)
            weights, nearest = overlap_weights(spans, [(begin, end) for _, _, begin, end in pieces])
            prepared.append((self.piece_ids(pieces), weights, len(spans)))
            lonely += nearest
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(lines)
        order = np.argsort([len(ids) for ids, _, _ in prepared], kind="stable")
        start = 0
        while start < len(order):
            end, width = start, 0
            while end < len(order) and max(width, len(prepared[order[end]][0]) + 1) * (end - start + 1) <= max_tokens:
                width = max(width, len(prepared[order[end]][0]) + 1)
                end += 1
            end = max(end, start + 1)
            chosen = order[start:end]
            self._encode_batch([prepared[i] for i in chosen], chosen, out)
            start = end
        return out, lonely

    def _encode_batch(self, items, rows, out) -> None:
        width = max(len(ids) for ids, _, _ in items) + 1
        tokens = max(n for _, _, n in items)
        ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        weights = torch.zeros(len(items), max(tokens, 1), width)
        for b, (piece_ids, weight, n) in enumerate(items):
            ids[b, : len(piece_ids) + 1] = torch.tensor(list(piece_ids) + [self.eos])
            if n and len(piece_ids):
                weights[b, :n, : len(piece_ids)] = torch.from_numpy(weight)
        states, _ = self.run(ids.to(self.device))
        h_y = torch.bmm(weights.to(self.device), self.projection(states.float()))     # (B, n, D)
        indices = self.quantizer.nearest(h_y).cpu().numpy()
        for b, (_, _, n) in enumerate(items):
            out[rows[b]] = indices[b, :n].astype(np.int64)


def code_statistics(codes: list[np.ndarray], num_codes: int) -> dict:
    """How the target codes spread: codes used, perplexity, and the share of neighbouring
    positions that share a code (the reference-side figure of decode/input_collapse.py)."""
    flat = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    usage = usage_statistics(torch.from_numpy(np.bincount(flat, minlength=num_codes).astype(np.float64)))
    pairs = sum(max(len(c) - 1, 0) for c in codes)
    same = sum(int((c[1:] == c[:-1]).sum()) for c in codes)
    return {"tokens": int(flat.size), "codes_used": usage["used"], "codes": usage["codes"],
            "perplexity": usage["perplexity"], "same_code_neighbours": same / pairs if pairs else 0.0}


def run(*, sqs: str, aligned_encoder: str, train_tgt: str, valid_tgt: str, out_dir: str, report: str,
        max_tokens: int = 4000, device: str = "auto", threads: int = 0) -> int:
    """Write the codes of the training and validation targets (``train_tgt``, ``valid_tgt``:
    BPE text) into ``out_dir`` and ``report`` last, from the pretrain_sqs rule's ``sqs``
    and ``aligned_encoder``; ``max_tokens`` encoder pieces per batch. Returns the exit
    code (0, or 2 on bad input)."""
    from aeqa_model.device import pick_device

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        torch_device = pick_device(device)
        encoder = PretrainedTargetEncoder(Path(aligned_encoder), Path(sqs), torch_device)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"encoder": encoder.kind, "sqs": str(sqs), "aligned_encoder": str(aligned_encoder), "splits": {}}
        for split, text in (("train", train_tgt), ("valid", valid_tgt)):
            lines = read_lines(text)
            logging.info("%s: %d target sentences from %s", split, len(lines), text)
            codes, nearest = encoder.codes(lines, max_tokens)
            write_indexed(out / split, [c.tolist() for c in codes])
            stats = code_statistics(codes, encoder.quantizer.num_codes)
            summary["splits"][split] = {"text": str(text), "sentences": len(lines),
                                        "nearest_piece_tokens": nearest, **stats}
            logging.info("%s: %d tokens, %d/%d codes used, perplexity %.1f, %.1f%% of neighbours on one code, "
                         "%d tokens took the nearest piece", split, stats["tokens"], stats["codes_used"],
                         stats["codes"], stats["perplexity"], 100 * stats["same_code_neighbours"], nearest)
        write_json(report, summary)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
