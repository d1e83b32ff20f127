"""How distinct a NAT decoder's input positions are (docs/fidelity.md, "Why").

A one-pass NAT decoder reads one input vector per target position; where two
neighbouring positions read the same vector, only the position embeddings tell
them apart, and the model tends to emit the same token twice (the repetition
that ``metrics.repetition`` counts). AEQA-NAT feeds the decoder z_q(H_m) (Eq. 15):
the softcopied encoder states snapped to their nearest codes, so neighbours whose
H_m fall in one Voronoi cell read *identical* vectors. This module measures that,
at the predicted lengths and with the decoder inputs the model really uses at
inference (``decoder_vectors``; H_m itself for the other NATs):

* ``adjacent_identical``: share of neighbouring position pairs whose decoder
  inputs are equal (one code for AEQA; practically 0 for continuous H_m);
* ``adjacent_cosine``: mean cosine similarity of neighbouring decoder inputs;
* ``distinct_per_position``: distinct input vectors per sentence / its length;
* for models with an SQS, ``reference_adjacent_identical``: the same share for the
  codes of the *reference*'s encoding z_q(H_y) (Eq. 5), i.e. how often the target
  itself has one code twice in a row.

    python -m aeqa_model.decode.input_collapse --model M --dict D --src-prefix P \
        --tgt-prefix T --out collapse.json [--max-sentences 1000]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.decode import clamp_lengths
from aeqa_model.io import EXIT_BAD_INPUT, InputError, write_json
from aeqa_model.models.build import load_model


def adjacent_stats(vectors: torch.Tensor, pad_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over a batch: neighbour pairs, identical pairs, their cosine, distinct
    vectors and positions. ``vectors`` (B, T, D), ``pad_mask`` (B, T) True at padding."""
    pair = ~pad_mask[:, 1:] & ~pad_mask[:, :-1]
    left, right = vectors[:, :-1].float(), vectors[:, 1:].float()
    identical = (left == right).all(-1) & pair
    cosine = torch.nn.functional.cosine_similarity(left, right, dim=-1).masked_fill(~pair, 0.0)
    # distinct vectors per sentence: a position counts when it differs from every earlier one
    same = (vectors.unsqueeze(2) == vectors.unsqueeze(1)).all(-1)            # (B, T, T)
    valid = ~pad_mask
    earlier = torch.ones_like(same[0], dtype=torch.bool).tril(-1)             # j < i
    repeated = (same & earlier & valid.unsqueeze(1)).any(-1) & valid
    return {"pairs": pair.sum(), "identical": identical.sum(), "cosine": cosine.sum(),
            "distinct": (valid & ~repeated).sum(), "positions": valid.sum()}


@torch.no_grad()
def decoder_input_collapse(model, batch) -> dict[str, torch.Tensor]:
    enc, enc_mask = model.encode(batch.src)
    lengths = clamp_lengths(model, model.predict_lengths(enc, enc_mask, beam=1)).reshape(-1)
    h_m, tgt_mask = model.copy_inputs(enc, enc_mask, lengths)
    inputs = model.decoder_vectors(h_m, tgt_mask) if hasattr(model, "decoder_vectors") else h_m
    stats = adjacent_stats(inputs, tgt_mask)
    if hasattr(model, "sqs"):
        from aeqa_model.models.sqa import encode_target

        y_mask = batch.target.eq(model.pad)
        codes = model.sqs(encode_target(model, batch.target, y_mask, False), y_mask).codes
        ref = adjacent_stats(codes, y_mask)
        stats.update({f"reference_{k}": v for k, v in ref.items()})
    return stats


def summarize(total: dict[str, float]) -> dict:
    out = {"adjacent_identical": total["identical"] / max(total["pairs"], 1),
           "adjacent_cosine": total["cosine"] / max(total["pairs"], 1),
           "distinct_per_position": total["distinct"] / max(total["positions"], 1),
           "positions": int(total["positions"]), "pairs": int(total["pairs"])}
    if "reference_pairs" in total:
        out.update({"reference_adjacent_identical": total["reference_identical"] / max(total["reference_pairs"], 1),
                    "reference_distinct_per_position": total["reference_distinct"]
                    / max(total["reference_positions"], 1)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dict", required=True)
    p.add_argument("--src-prefix", required=True)
    p.add_argument("--tgt-prefix", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-sentences", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    try:
        dictionary = Dictionary.load(args.dict)
        model = load_model(args.model, "cpu").eval()
        if not hasattr(model, "copy_inputs"):
            raise InputError(f"{args.model}: a {type(model).__name__} has no one-pass decoder input (H_m)")
        corpus = ParallelCorpus(args.src_prefix, args.tgt_prefix, dictionary, max_positions=model.cfg.max_positions)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    n = min(args.max_sentences, len(corpus))
    total: dict[str, float] = {}
    for start in range(0, n, args.batch_size):
        stats = decoder_input_collapse(model, corpus.batch(list(range(start, min(start + args.batch_size, n)))))
        for key, value in stats.items():
            total[key] = total.get(key, 0.0) + float(value)
    result = {"model": args.model, "arch": type(model).__name__, "sentences": n, **summarize(total)}
    write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
