"""The decode entry point (decode and distill rules) on saved checkpoints, speed timing included."""
from __future__ import annotations

import json

import pytest
import torch

from aeqa_model.decode.cli import main
from aeqa_model.models.build import build_model, model_payload


def save(path, arch, dictionary, **options):
    model = build_model({"arch": arch, "size": "tiny", **options}, dictionary)
    torch.save(model_payload(model), path)
    return path


@pytest.mark.parametrize("decoding", [{"strategy": "oracle", "ratio": 0.3}, {"strategy": "argmax"},
                                      {"strategy": "npd", "candidates": 3}])
def test_decode_with_speed_timing(tmp_path, corpus_dir, dictionary, decoding):
    glat = save(tmp_path / "glat.pt", "glat", dictionary)
    at = save(tmp_path / "at.pt", "at", dictionary)
    out_tok, speed = tmp_path / "hyp.tok", tmp_path / "speed.json"
    code = main(["--model", str(glat), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", json.dumps(decoding), "--teacher", str(at), "--tgt-lang", "en",
                 "--out-tok", str(out_tok), "--speed-out", str(speed), "--speed-reference", str(at),
                 "--speed-subset", "5", "--speed-warmup", "1", "--device", "cpu"])
    assert code == 0
    assert len(out_tok.read_text().splitlines()) == 30
    timing = json.loads(speed.read_text())
    assert timing["latency_ms_per_sentence"] > 0 and timing["speedup"] > 0 and timing["n_sentences"] == 5


def test_missing_checkpoint_is_a_clear_error(tmp_path, corpus_dir, capsys):
    code = main(["--model", str(tmp_path / "nope.pt"), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", "{\"strategy\": \"argmax\"}", "--tgt-lang", "en", "--out-tok", str(tmp_path / "o")])
    assert code == 2 and "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_decoding_options_are_checked_by_name():
    from aeqa_model.decode import STRATEGIES, STRATEGY_OPTIONS, check_decoding

    assert set(STRATEGY_OPTIONS) == set(STRATEGIES)
    assert check_decoding("d", {"strategy": "mask_predict", "iterations": 4, "length_beam": 2}) == []
    assert check_decoding("d", {"strategy": "beam", "beam": 4, "len_pen": 1.0}) == [
        "decodings.d.len_pen: unknown option for strategy 'beam'; known: beam, lenpen, max_len_a, max_len_b"]
    assert check_decoding("d", {"strategy": "lookahed"})[0].startswith("decodings.d.strategy: unknown strategy")
    assert "(none)" in check_decoding("d", {"strategy": "lookahead", "beam": 2})[0]


def test_generate_refuses_an_unknown_option(dictionary, tiny_cfg):
    from aeqa_model.decode import generate
    from aeqa_model.models import model_class

    model = model_class("vanilla_nat")(dictionary, tiny_cfg, {}).eval()
    src = torch.tensor([[7, 8, 9, dictionary.eos]])
    with pytest.raises(ValueError, match="candiates"):
        generate(model, src, {"strategy": "npd", "candiates": 3, "rerank": "self"})
