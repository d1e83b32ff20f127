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


def test_the_at_is_1x_over_itself_by_construction(tmp_path, corpus_dir, dictionary):
    """Issue 27: two timings of one model on a loaded machine once gave the AT 1.54x
    over itself in Table 1; its own cell is now 1.0 exactly, and timed once."""
    at = save(tmp_path / "at.pt", "at", dictionary)
    speed = tmp_path / "speed.json"
    beam = {"strategy": "beam", "beam": 4}
    code = main(["--model", str(at), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", json.dumps(beam), "--tgt-lang", "en", "--out-tok", str(tmp_path / "hyp.tok"),
                 "--speed-out", str(speed), "--speed-reference", str(at), "--speed-reference-decoding",
                 json.dumps(beam), "--speed-subset", "3", "--speed-warmup", "0", "--device", "cpu"])
    assert code == 0
    timing = json.loads(speed.read_text())
    assert timing["speedup"] == 1.0 and timing["at_latency_ms_per_sentence"] == timing["latency_ms_per_sentence"]
    # As the decode rule runs it: the config's beam4 spells out lenpen 1.0, and the rule
    # leaves --speed-reference-decoding at its default; the demo's AT cell read 0.99x.
    code = main(["--model", str(at), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", json.dumps({**beam, "lenpen": 1.0}), "--tgt-lang", "en",
                 "--out-tok", str(tmp_path / "hyp.tok"), "--speed-out", str(speed), "--speed-reference", str(at),
                 "--speed-subset", "3", "--speed-warmup", "0", "--device", "cpu"])
    assert code == 0 and json.loads(speed.read_text())["speedup"] == 1.0


def test_same_decoding_fills_the_strategy_defaults():
    from aeqa_model.decode import same_decoding

    assert same_decoding({"strategy": "beam", "beam": 4, "lenpen": 1.0}, {"strategy": "beam", "beam": 4})
    assert not same_decoding({"strategy": "beam", "beam": 4, "lenpen": 0.6}, {"strategy": "beam", "beam": 4})
    assert not same_decoding({"strategy": "beam", "beam": 5}, {"strategy": "beam", "beam": 4})
    assert not same_decoding({"strategy": "greedy"}, {"strategy": "beam", "beam": 1})


def test_side_by_side_timing_alternates_item_by_item_and_takes_the_median_round():
    """decode/timing.py with a fake clock: the calls alternate A(x1) B(x1) A(x2) B(x2)
    (reversed every other round), and each function's time is its median round."""
    from aeqa_model.decode.timing import interleaved_items

    calls, now = [], [0.0]
    cost = {"a": [1.0, 5.0, 1.5], "b": [2.0, 2.0, 9.0]}   # per round: a slow 2nd round, a slow 3rd for b

    def make(name):
        def fn(item):
            calls.append((name, item))
            round_ = (sum(1 for c in calls if c[0] == name) - 1) // 2   # two items per round
            now[0] += cost[name][round_] / 2                            # a round costs cost[name][round_]
        return fn

    result = interleaved_items({"a": make("a"), "b": make("b")}, [1, 2], torch.device("cpu"), rounds=3, warmup=0,
                               clock=lambda: now[0])
    assert calls[:4] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert calls[4:8] == [("b", 1), ("a", 1), ("b", 2), ("a", 2)]      # the second round starts with b
    assert result == {"a": 1.5, "b": 2.0}                              # medians of (1, 5, 1.5) and (2, 2, 9)


def test_missing_checkpoint_is_a_clear_error(tmp_path, corpus_dir, capsys):
    code = main(["--model", str(tmp_path / "nope.pt"), "--dict", str(corpus_dir / "dict.txt"),
                 "--src-prefix", str(corpus_dir / "valid.src"), "--tgt-prefix", str(corpus_dir / "valid.tgt"),
                 "--decoding", "{\"strategy\": \"argmax\"}", "--tgt-lang", "en", "--out-tok", str(tmp_path / "o")])
    assert code == 2 and "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_decoding_options_are_checked_by_name():
    from aeqa_model.decode import check_decoding

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
