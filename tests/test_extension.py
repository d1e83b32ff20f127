"""Extending the pipeline (issue 28): an architecture is one new file plus one registry
line, a recipe one new file. The test does both in a copy of the repository, as a user
would, and runs them through the workflow: download (the toy recipe), prepare, bpe,
binarize, the toy model's training, decoding and evaluation. Nothing else is edited: the
config schema takes the toy model's option from its declaration, the start-up checks
take the toy recipe's options from its own.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TOY_ARCH = '''"""toy_nat: the vanilla NAT whose decoder reads the mean encoder state at every
position, scaled by its own option (an architecture added by tests/test_extension.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from aeqa_model.models.nat import NATOptions, VanillaNAT, masked_mean
from aeqa_model.models.options import option


@dataclass(frozen=True)
class ToyOptions(NATOptions):
    toy_input_scale: float = option(1.0, "scale of the mean encoder state every decoder position reads",
                                    schema={"exclusiveMinimum": 0})


class ToyNAT(VanillaNAT):
    arch = "toy_nat"
    Options = ToyOptions

    def decoder_inputs(self, enc, enc_mask, tgt_lengths, tgt_len=None):
        if tgt_len is None:
            tgt_len = int(tgt_lengths.max().clamp(min=1))
        tgt_mask = torch.arange(tgt_len, device=enc.device)[None, :] >= tgt_lengths[:, None]
        mean = self.opts.toy_input_scale * masked_mean(enc, enc_mask)
        return mean[:, None, :].expand(-1, tgt_len, -1), tgt_mask
'''

TOY_RECIPE = '''"""Recipe ``tsv_pairs``: one local file of ``source<TAB>target`` lines; the first
``valid_size`` pairs are valid, the next ``test_size`` test, the rest train (a recipe
added by tests/test_extension.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aeqa_model.declared import declared
from aeqa_model.io import InputError, read_lines, write_lines

from .common import POSINT, Recipe, read_options


@dataclass(frozen=True, kw_only=True)
class TsvPairsOptions:
    valid_size: int = declared(50, "pairs of the valid split", schema=POSINT)
    test_size: int = declared(50, "pairs of the test split", schema=POSINT)


def tsv_pairs(dataset, spec, paths, out_dir, log=print):
    options = read_options(TsvPairsOptions, "tsv_pairs", dataset, spec)
    src, tgt = spec["langs"]
    pairs = [line.split("\\t") for line in read_lines(paths[spec["sources"][0]])]
    if any(len(pair) != 2 for pair in pairs):
        raise InputError(f"dataset {dataset!r}: every line must be source<TAB>target")
    cut = {"valid": (0, options.valid_size),
           "test": (options.valid_size, options.valid_size + options.test_size),
           "train": (options.valid_size + options.test_size, len(pairs))}
    for split, (start, end) in cut.items():
        write_lines(Path(out_dir) / f"{split}.{src}", [p[0] for p in pairs[start:end]])
        write_lines(Path(out_dir) / f"{split}.{tgt}", [p[1] for p in pairs[start:end]])
    log(f"[recipe] {dataset}: {len(pairs)} pairs")
    return {"recipe": "tsv_pairs", "splits": {split: end - start for split, (start, end) in cut.items()}}


RECIPE = Recipe(tsv_pairs, TsvPairsOptions)
'''

WORDS = [("red", "rot"), ("green", "grün"), ("blue", "blau"), ("house", "Haus"), ("tree", "Baum"),
         ("small", "klein"), ("big", "groß"), ("dog", "Hund"), ("cat", "Katze"), ("water", "Wasser")]


def copy_repository(dest: Path) -> None:
    """The tracked files of this checkout (what a clone has), without results or the venv."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def add_registry_line(init: Path) -> None:
    """The one line that registers toy_nat in models.ARCHS."""
    text = init.read_text(encoding="utf-8")
    anchor = '    "aeqa_dat": "aeqa_model.models.aeqa_dat:AEQADAT",\n'
    assert anchor in text
    init.write_text(text.replace(anchor, anchor + '    "toy_nat": "aeqa_model.models.toy_nat:ToyNAT",\n'),
                    encoding="utf-8")


def toy_config(corpus: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text(encoding="utf-8"))
    cfg["run_name"] = "toy"
    cfg["sources"] = {"pairs": {"type": "local", "path": str(corpus)}}
    dataset = next(iter(cfg["datasets"].values()))
    cfg["datasets"] = {"toy_ende": {
        "recipe": "tsv_pairs", "langs": ["en", "de"], "sources": ["pairs"],
        "recipe_options": {"valid_size": 30, "test_size": 30},
        "prepare": dataset["prepare"], "bpe": {"merges": 100}, "directions": ["en-de"]}}
    cfg["models"] = {"at": cfg["models"]["at"], "toy_nat": {"arch": "toy_nat", "size": "smoke",
                                                            "toy_input_scale": 0.5}}
    cfg["evaluate"]["significance_baseline"] = None
    cfg.pop("paper_grid")
    return cfg


def run_snakemake(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake in the copy (targets before --configfile/--config, which take several values)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_a_toy_architecture_and_a_toy_recipe_run_through_the_workflow(tmp_path):
    repo = tmp_path / "repo"
    copy_repository(repo)
    (repo / "aeqa_model/models/toy_nat.py").write_text(TOY_ARCH, encoding="utf-8")
    add_registry_line(repo / "aeqa_model/models/__init__.py")
    (repo / "aeqa_model/data/recipes/tsv_pairs.py").write_text(TOY_RECIPE, encoding="utf-8")

    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("".join(f"the {a} {b} number {i}\tdie {c} {d} Nummer {i}\n"
                              for i in range(400) for (a, c), (b, d) in [(WORDS[i % 10], WORDS[(i * 3 + 1) % 10])]),
                      encoding="utf-8")
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config(corpus)), encoding="utf-8")
    results = tmp_path / "results"
    target = f"{results}/toy/eval/toy_ende/en-de/raw/toy_nat/argmax/metrics.json"

    # Start-up checks know the new option and the new recipe's options without any other edit.
    bad = toy_config(corpus)
    bad["models"]["toy_nat"]["toy_input_scal"] = 0.5
    bad["datasets"]["toy_ende"]["recipe_options"]["test_sise"] = 3
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad), encoding="utf-8")
    refused = run_snakemake(repo, target, "-n", "--configfile", str(bad_file), "--config", f"results_dir={results}")
    assert refused.returncode != 0
    assert "models.toy_nat.toy_input_scal: unknown option for arch 'toy_nat'" in refused.stderr + refused.stdout
    assert "datasets.toy_ende.recipe_options.test_sise: unknown option of recipe tsv_pairs" in (
        refused.stderr + refused.stdout)

    proc = run_snakemake(repo, target, "--configfile", str(config), "--config", f"results_dir={results}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    manifest = json.loads((results / "toy/data/toy_ende/orig/manifest.json").read_text(encoding="utf-8"))
    assert manifest["recipe"] == "tsv_pairs" and manifest["splits"] == {"valid": 30, "test": 30, "train": 340}
    metrics = json.loads(Path(target).read_text(encoding="utf-8"))
    assert metrics["cell"]["model"] == "toy_nat" and metrics["n_sentences"] == 30
    assert 0.0 <= metrics["metrics"]["bleu_tok"]["score"] <= 100.0
    import torch

    checkpoint = torch.load(results / "toy/models/toy_ende/en-de/raw/toy_nat/model.pt", map_location="cpu",
                            weights_only=False)
    assert checkpoint["arch"] == "toy_nat" and checkpoint["options"]["toy_input_scale"] == 0.5
