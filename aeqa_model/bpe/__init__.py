"""The bpe stage's command line (``python -m aeqa_model.bpe.cli``, ``aeqa-bpe``); the logic is in
:mod:`aeqa_model.data.bpe`."""
