"""Settings checked before anything runs (issue 24, item 3), below the dry runs of
test_bad_config.py: every decoding option's type and range, the same checks where a
program is run by hand (decode.cli, train.cli), and the YAML files the config pulls in.

* Decoding options were accepted at start-up whatever their value: ``beam: four``
  ended in a TypeError, ``beam: 0`` or ``length_beam: 0`` in a RuntimeError deep in the
  search, after the model was loaded.
* ``average_last`` above ``keep_last`` averaged fewer checkpoints than asked
  (``keep_last: 1``: the final weights alone) without a word.
* A key given twice in a YAML file kept the last value silently (PyYAML, Snakemake).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aeqa_model import config as aeqa_config
from aeqa_model.decode import OPTION_RULES, STRATEGIES, check_decoding
from aeqa_model.decode.cli import main as decode_main
from tests.reliability.faultlib import ROOT
from tests.reliability.test_kill_resume import SPEC, data, train  # noqa: F401 (data: fixture)

pytestmark = pytest.mark.fault


def bad_values(rule: dict) -> dict[str, object]:
    """A value of the wrong type and, where the option has a range, one outside it."""
    if "enum" in rule:
        return {"not-a-choice": "sometimes"}
    values = {"wrong-type": "four", "a-bool": True}
    if "minimum" in rule:
        values["below-minimum"] = rule["minimum"] - 1
    if "maximum" in rule:
        values["above-maximum"] = rule["maximum"] + 1
    if rule["type"] == "integer":
        values["a-float"] = 2.5
    else:
        values["nan"] = float("nan")
    return values


def strategies_taking(option: str) -> list[str]:
    return [name for name, strategy in STRATEGIES.items() if option in strategy.options]


@pytest.mark.parametrize("option", sorted(OPTION_RULES))
def test_every_decoding_option_is_checked(ledger, option):
    """Each bad value of the option, under every strategy that reads it: one problem
    naming the option, what it must be and (where the type is right) its range."""
    for strategy in strategies_taking(option):
        for kind, value in bad_values(OPTION_RULES[option]).items():
            problems = check_decoding("mine", {"strategy": strategy, option: value})
            assert len(problems) == 1, (strategy, kind, problems)
            ledger.message(problems[0], names=[f"decodings.mine.{option}", repr(value)])


@pytest.mark.parametrize("decoding", [{"strategy": "beam", "beam": 0}, {"strategy": "beam", "beam": "four"},
                                      {"strategy": "argmax", "length_beam": 0}],
                         ids=["beam=0", "beam=four", "length_beam=0"])
def test_decode_cli_refuses_a_bad_option_before_loading_anything(tmp_path, ledger, capsys, decoding):
    """Run by hand (or by an older workflow): exit 2 and one line, no traceback; the
    model path does not even exist, so nothing was loaded before the check."""
    out = tmp_path / "hyp.tok"
    code = decode_main(["--model", str(tmp_path / "model.pt"), "--dict", str(tmp_path / "dict.txt"),
                        "--src-prefix", str(tmp_path / "test.src"), "--tgt-prefix", str(tmp_path / "test.tgt"),
                        "--decoding", json.dumps(decoding), "--tgt-lang", "de", "--out-tok", str(out),
                        "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    option = next(key for key in decoding if key != "strategy")
    ledger.message(err.strip(), names=[f".{option}:", "--decoding"])
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_train_cli_refuses_average_last_above_keep_last(data, tmp_path, ledger):
    run = train(data, tmp_path / "run", spec=dict(SPEC, keep_last=1, average_last=5))
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "Traceback" not in run.stderr
    ledger.message(errors[-1], names=["average_last 5", "keep_last 1"])
    assert not (tmp_path / "run" / "model.pt").exists()


def test_fewer_checkpoints_than_average_last_is_said(data, tmp_path):
    """keep_last is enough but the run saves too rarely (8 updates, save_every 4: one
    periodic checkpoint besides the final weights, average_last 3): said in the log."""
    run = train(data, tmp_path / "run", spec=dict(SPEC, max_updates=8, keep_last=3, average_last=3))
    assert run.returncode == 0, run.stderr
    assert "average_last 3, but only 1 periodic checkpoint(s)" in run.stderr, run.stderr


def test_a_key_given_twice_in_the_paper_grid_is_named(tmp_path, ledger):
    """The grid file a config's paper_grid names is YAML too; its keys are checked as
    the config file's are (test_bad_config: `training.lr` twice)."""
    grid = tmp_path / "grid.yaml"
    text = (ROOT / "config/paper/grid-smoke.yaml").read_text(encoding="utf-8")
    line = "    row_header: Methods\n"
    assert line in text
    grid.write_text(text.replace(line, line + "    row_header: Method\n", 1), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        aeqa_config.merge_paper_grid({"paper_grid": str(grid), "models": {}, "decodings": {}})
    ledger.message(str(err.value), names=["outputs.table2.row_header", str(grid), "given twice"])


def test_duplicate_keys_are_named_with_their_path_and_lines(tmp_path, ledger):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1\n  max_updates: 3\n  lr: 2\nmodels:\n  - {a: 1, a: 2}\nseed: 1\nseed: 2\n",
                    encoding="utf-8")
    problems = aeqa_config.duplicate_keys(path)
    assert [p.split(":")[0] for p in problems] == ["training.lr", "models[0].a", "seed"]
    assert "lines 2 and 4" in problems[0]
    ledger.message(problems[0], names=["training.lr", path])
    # A key a merge (<<) brings in may be overridden: not a duplicate.
    path.write_text("base: &b {lr: 1, seed: 2}\ntraining:\n  <<: *b\n  lr: 3\n", encoding="utf-8")
    assert aeqa_config.duplicate_keys(path) == []
    assert aeqa_config.load_yaml(path)["training"] == {"lr": 3, "seed": 2}


@pytest.mark.parametrize("program", ["train", "decode"])
def test_a_gpu_job_on_a_machine_without_a_gpu_is_one_line(data, tmp_path, ledger, capsys, program):
    """`device: cuda` passes start-up where stages ask for GPUs (a cluster); a job that
    still lands on a node without one used to die on "Torch not compiled with CUDA
    enabled" under a traceback, naming no setting."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here")
    if program == "train":
        run = train(data, tmp_path / "run", extra=("--device", "cuda"))
        code, err = run.returncode, run.stderr
    else:
        code = decode_main(["--model", str(tmp_path / "model.pt"), "--dict", str(data / "dict.txt"),
                            "--src-prefix", str(data / "valid.src"), "--tgt-prefix", str(data / "valid.tgt"),
                            "--decoding", '{"strategy": "argmax"}', "--tgt-lang", "de",
                            "--out-tok", str(tmp_path / "hyp.tok"), "--device", "cuda"])
        err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    ledger.message(errors[-1], names=["--device cuda", "device"])
