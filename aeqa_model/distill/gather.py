"""Gather step of sequence-level distillation (Kim & Rush 2016).

The teacher's beam outputs for the training source come in contiguous shards;
they are concatenated in order into the KD target, next to a copy of the
tokenized training source. A shard set whose total does not match the source
is an error. Empty teacher outputs fall back to the human reference (counted).
"""
from __future__ import annotations

from aeqa_model.io import InputError, read_lines, write_json, write_lines


def gather(shards: list[str], src_path: str, ref_path: str, out_src: str, out_tgt: str, report: str) -> dict:
    source, reference = read_lines(src_path), read_lines(ref_path)
    hyps: list[str] = []
    for shard in shards:
        hyps.extend(read_lines(shard))
    if len(hyps) != len(source) or len(reference) != len(source):
        raise InputError(f"distill gather: {len(hyps)} teacher lines from {len(shards)} shards, "
                         f"{len(source)} source lines ({src_path}), {len(reference)} references ({ref_path}); "
                         "delete the shard files and rerun distill")
    empty = [i for i, h in enumerate(hyps) if not h.strip()]
    for i in empty:
        hyps[i] = reference[i]
    identical = sum(1 for h, r in zip(hyps, reference) if h == r)
    write_lines(out_src, source)
    write_lines(out_tgt, hyps)
    stats = {"lines": len(hyps), "shards": len(shards), "empty_replaced_by_reference": len(empty),
             "identical_to_reference": identical}
    write_json(report, stats)
    return stats
