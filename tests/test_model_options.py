"""Model options are declared once (aeqa_model/models/options.py): the declared
defaults are the ones the models read before the declarations existed."""
from __future__ import annotations

import pytest

from aeqa_model.models import ARCHS, check_options, model_class, option_schemas

NAT = {"label_smoothing": 0.1, "max_length_offset": 64, "length_loss_weight": 0.1, "softcopy_tau": 1.0,
       "decoder_input": "softcopy", "dslp": False}
SQS = {"codebook_size": 2048, "ema_decay": 0.99, "sqa_weight": 0.25, "codebook_reset": 0.01,
       "target_dropout": False, "sqs_init": "pretrained", "sqs_align_updates": None, "h_y_encoder": "nat"}
DAT = {"graph_factor": 8.0, "glancing_schedule": "0.5:0.1@200k", "dag_paths": "anchored"}
# The literal defaults of the models' options.get(key, default) before issue 17.
PREVIOUS = {
    "at": {"label_smoothing": 0.1},
    "vanilla_nat": NAT,
    "cmlm": NAT,
    "ctc": {**NAT, "upsample": 2},
    "glat": {**NAT, "glancing_schedule": "0.5:0.3@300k"},
    "dat": {**NAT, **DAT},
    "aeqa_nat": {**NAT, **SQS, "glancing": "adaptive", "lambda_start": 0.6, "lambda_end": 0.4,
                 "anneal_updates": 300000, "glance_loss": "all", "reordering": False,
                 "sqa_terms": ("ax", "xy", "ay"), "sqa_reduction": "mean", "quantize_input": True,
                 # issue 25's readings, added later; their defaults keep the behaviour above
                 "glance_into": "codes", "lambda_inference": 0.4, "codebook_update": "gradient"},
    "aeqa_dat": {**NAT, **DAT, **SQS, "graph_factor": 3.0},
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_declared_defaults_are_the_previous_ones(arch):
    defaults = model_class(arch).Options.defaults()
    assert defaults == PREVIOUS[arch]
    assert [type(v) for v in defaults.values()] == [type(v) for v in PREVIOUS[arch].values()]


def test_every_option_has_a_help_line_and_one_schema():
    schemas = option_schemas()
    assert set(schemas) == {key for arch in ARCHS for key in model_class(arch).Options.names()}
    assert all(s["description"] for s in schemas.values())


def test_typo_check_follows_the_declarations():
    assert check_options("m", {"arch": "glat", "size": "base", "glancing_schedule": "0.5"}) == []
    problems = check_options("m", {"arch": "glat", "size": "base", "sqs_init": "random"})
    assert len(problems) == 1 and "unknown option for arch 'glat'" in problems[0]
    assert check_options("m", {"arch": "aeqa_dat", "size": "base", "sqs_init": "random"}) == []
