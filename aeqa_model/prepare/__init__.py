"""The prepare stage's command line (``python -m aeqa_model.prepare.cli``, ``aeqa-prepare``); the logic is in
:mod:`aeqa_model.data.prepare`."""
