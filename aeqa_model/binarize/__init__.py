"""The binarize stage's command line (``python -m aeqa_model.binarize.cli``, ``aeqa-binarize``); the logic is in
:mod:`aeqa_model.data.indexed` and :mod:`aeqa_model.data.dictionary`."""
