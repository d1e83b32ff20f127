"""Sequence-level distillation's gather step (the distill_gather rule).

``gather`` concatenates the teacher's shards into the KD corpus; ``cli`` is its
command line (``python -m aeqa_model.distill.cli``, ``aeqa-distill``). The
teacher's shards themselves come from aeqa_model.decode.cli (distill_shard).
"""
