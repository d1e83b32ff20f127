"""The paper renderer with a metrics.json missing (issue 24, item 5).

The workflow passes the metrics.json of every cell an output's blocks produce. With
one of them missing (lost, or left out when the renderer is run by hand) the table
used to render with exit 0, the cell reading "not run in this config", which is what
a layout cell that no block produces says. Now it is an error naming the missing
file; so is a --metrics path that does not exist (was: a FileNotFoundError traceback).
"""
from __future__ import annotations

import json

import pytest

from aeqa_model.paper.cli import main as paper_main
from aeqa_model.paper.grid import expand_blocks, load_grid
from aeqa_model.io import write_json
from tests.reliability.faultlib import ROOT
from tests.test_paper_render import DEFAULT_DECODING, metrics_doc

pytestmark = pytest.mark.fault

GRID = load_grid(ROOT / "config/paper/grid-demo.yaml")
SPEC = GRID["outputs"]["table2"]


def write_metrics(root) -> list[str]:
    """metrics.json of every cell of the demo's table2 blocks, where the workflow writes them."""
    paths = []
    for ds, di, da, mo, de in expand_blocks(SPEC):
        dec = DEFAULT_DECODING.get(mo, "argmax") if de == "default" else de
        path = root / "eval" / ds / di / da / mo / dec / "metrics.json"
        write_json(path, metrics_doc((ds, di, da, mo, dec), 10.0, 3.0, mo))
        paths.append(str(path))
    return paths


def render(metrics: list[str], out) -> int:
    return paper_main(["--target", "table2", "--spec", json.dumps(SPEC), "--paper-dir", str(ROOT / "config/paper"),
                       "--metrics", *metrics, "--out-dir", str(out)])


def test_a_block_cell_without_its_metrics_is_named(tmp_path, ledger, capsys):
    paths = write_metrics(tmp_path / "results")
    assert render(paths, tmp_path / "complete") == 0  # all given: renders
    missing = paths[len(paths) // 2]
    capsys.readouterr()
    assert render([p for p in paths if p != missing], tmp_path / "paper") == 2
    # The renderer cannot resolve a block's `default` decoding without the file: the
    # message names the cell's directory and says `default`.
    cell_dir = missing.rsplit("/", 2)[0]
    ledger.message(capsys.readouterr().err, names=["table2", f"{cell_dir}/", "--metrics"])
    assert not (tmp_path / "paper" / "table2.md").exists()


def test_a_metrics_path_that_does_not_exist_is_named(tmp_path, ledger, capsys):
    paths = write_metrics(tmp_path / "results")
    gone = paths[0]
    (tmp_path / "results" / gone).unlink()
    assert render(paths, tmp_path / "paper") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ledger.message(err, names=[gone, "not found"])
