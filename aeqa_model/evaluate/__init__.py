"""The evaluate stage's command line (``python -m aeqa_model.evaluate.cli``, ``aeqa-evaluate``); the logic is in
:mod:`aeqa_model.metrics.evaluate`."""
