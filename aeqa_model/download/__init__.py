"""The download stage's command line (``python -m aeqa_model.download.cli``, ``aeqa-download``); the logic is in
:mod:`aeqa_model.data.download` and :mod:`aeqa_model.data.recipes`."""
