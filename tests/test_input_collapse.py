"""The decoder-input diagnostic (aeqa_model/decode/input_collapse.py) against brute force."""
from __future__ import annotations

import json

import numpy as np
import torch

from aeqa_model.data.batching import collate
from aeqa_model.decode.input_collapse import adjacent_stats, decoder_input_collapse, main, summarize
from aeqa_model.models.aeqa_nat import AEQANAT
from aeqa_model.models.nat import VanillaNAT
from tests.conftest import make_pairs


def brute_force(vectors, pad_mask):
    pairs = identical = distinct = positions = 0
    cosine = 0.0
    for row, pad in zip(vectors, pad_mask):
        kept = [v for v, p in zip(row, pad) if not p]
        positions += len(kept)
        distinct += len({tuple(v.tolist()) for v in kept})
        for i in range(len(row) - 1):
            if not pad[i] and not pad[i + 1]:
                pairs += 1
                identical += bool(torch.equal(row[i], row[i + 1]))
                cosine += float(torch.nn.functional.cosine_similarity(row[i], row[i + 1], dim=0))
    return pairs, identical, cosine, distinct, positions


def test_adjacent_stats_match_brute_force():
    codes = torch.randn(3, 4)
    vectors = codes[torch.randint(0, 3, (5, 7))]        # few distinct vectors: many repeats
    pad = torch.zeros(5, 7, dtype=torch.bool)
    pad[1, 5:], pad[3, 2:] = True, True
    got = adjacent_stats(vectors, pad)
    pairs, identical, cosine, distinct, positions = brute_force(vectors, pad)
    assert int(got["pairs"]) == pairs and int(got["identical"]) == identical
    assert int(got["distinct"]) == distinct and int(got["positions"]) == positions
    assert abs(float(got["cosine"]) - cosine) < 1e-4
    assert 0 < identical < pairs


def test_quantized_inputs_repeat_where_continuous_ones_do_not(dictionary, tiny_cfg):
    pairs = make_pairs(6, seed=3)
    batch = collate(list(range(6)), [np.asarray(p[0]) for p in pairs], [np.asarray(p[1]) for p in pairs], dictionary)
    nat = VanillaNAT(dictionary, tiny_cfg, {}).eval()
    stats = summarize({k: float(v) for k, v in decoder_input_collapse(nat, batch).items()})
    # (softcopy gives the positions past the last source position one weight row, so an
    # untrained length predictor's long lengths repeat some inputs; trained models: 0)
    assert stats["adjacent_identical"] < 0.5 and "reference_adjacent_identical" not in stats
    # a one-code SQS: every decoder input is the same vector
    aeqa = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 1}).eval()
    stats = summarize({k: float(v) for k, v in decoder_input_collapse(aeqa, batch).items()})
    assert stats["adjacent_identical"] == 1.0 and stats["reference_adjacent_identical"] == 1.0
    assert abs(stats["adjacent_cosine"] - 1.0) < 1e-5


def test_cli_writes_json(tmp_path, corpus_dir, dictionary, tiny_cfg):
    from aeqa_model.models.build import model_payload

    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 8})
    torch.save(model_payload(model), tmp_path / "model.pt")
    out = tmp_path / "collapse.json"
    assert main(["--model", str(tmp_path / "model.pt"), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--out", str(out), "--max-sentences", "20", "--batch-size", "8"]) == 0
    result = json.loads(out.read_text())
    assert result["sentences"] == 20 and 0.0 <= result["adjacent_identical"] <= 1.0
    assert "reference_adjacent_identical" in result
