"""Bad configs through Snakemake (config/smoke.yaml with one mistake each): an unknown key,
a wrong type, a negative size, a missing checkpoint path, an mBART directory without its
tokenizer; and (issue 24) a decoding option of the wrong type or range, `device: cuda`
without a GPU, an unknown significance baseline, `average_last` above `keep_last`, a key
given twice in the YAML file. Each fails at start-up, before any job runs, with an error
naming the key (and the path) and saying what to do.

Every case is a separate `snakemake --dry-run` (a dry run executes no job, so an error
there is a start-up error); they run two at a time in a module fixture."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.reliability.faultlib import ROOT, run_snakemake

pytestmark = pytest.mark.fault

SMOKE_TEXT = (ROOT / "config/smoke.yaml").read_text(encoding="utf-8")
SMOKE = yaml.safe_load(SMOKE_TEXT)


def set_key(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value
    return cfg


def mbart(cfg: dict, path) -> dict:
    return set_key(set_key(cfg, "pretrain_sqs.encoder", "mbart"), "pretrain_sqs.mbart_path", str(path))


def mbart_without_tokenizer(d: Path) -> Path:
    path = d / "mbart-large-cc25"
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "mbart", "d_model": 1024}')
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    return path


def empty_dir(d: Path) -> Path:
    (d / "wmt22-comet-da").mkdir()
    return d / "wmt22-comet-da"


def local_source(cfg: dict, path: Path) -> dict:
    cfg = set_key(cfg, "sources.cwmt", {"type": "local", "path": str(path)})
    return set_key(cfg, "datasets.smoke_ende.sources", ["django", "cwmt"])


#: case id -> (make the config in directory d, what the error must name, what else it must say).
CASES = {
    # unknown keys
    "unknown-top-level-key": (lambda d: set_key(SMOKE, "bogus_key", 3), ["bogus_key"], "unknown key"),
    "typo-training.max_update": (lambda d: set_key(SMOKE, "training.max_update", 20),
                                 ["training.max_update"], "unknown key"),
    "typo-sources.sha265": (lambda d: set_key(SMOKE, "sources.django.sha265", "0" * 64),
                            ["sources.django.sha265"], "unknown key"),
    "typo-prepare.max_tokes": (lambda d: set_key(SMOKE, "datasets.smoke_ende.prepare.max_tokes", 50),
                               ["datasets.smoke_ende.prepare.max_tokes"], "unknown key"),
    "unknown-evaluate.comet": (lambda d: set_key(SMOKE, "evaluate.comet", "x"), ["evaluate.comet"], "unknown key"),
    # wrong types, negative sizes
    "training.lr=fast": (lambda d: set_key(SMOKE, "training.lr", "fast"), ["training.lr", "fast"], "not of type"),
    "seed=one": (lambda d: set_key(SMOKE, "seed", "one"), ["seed"], "not of type"),
    "langs=string": (lambda d: set_key(SMOKE, "datasets.smoke_ende.langs", "en-de"),
                     ["datasets.smoke_ende.langs"], "not of type"),
    "sources.sha256=not-hex": (lambda d: set_key(SMOKE, "sources.django.sha256", "see the website"),
                               ["sources.django.sha256"], "does not match"),
    "embed_dim=-32": (lambda d: set_key(SMOKE, "model_sizes.smoke.embed_dim", -32),
                      ["model_sizes.smoke.embed_dim", "-32"], "minimum"),
    "max_tokens=-800": (lambda d: set_key(SMOKE, "training.max_tokens", -800),
                        ["training.max_tokens", "-800"], "minimum"),
    "bpe.merges=0": (lambda d: set_key(SMOKE, "datasets.smoke_ende.bpe.merges", 0),
                     ["datasets.smoke_ende.bpe.merges"], "minimum"),
    "distill.shards=-2": (lambda d: set_key(SMOKE, "distill.shards", -2), ["distill.shards"], "minimum"),
    # paths that do not hold what they should
    "comet_model-missing": (lambda d: set_key(SMOKE, "evaluate.comet_model", "/nonexistent/wmt22-comet-da"),
                            ["evaluate.comet_model", "/nonexistent/wmt22-comet-da"], "does not exist"),
    "bleurt_checkpoint-missing": (lambda d: set_key(SMOKE, "evaluate.bleurt_checkpoint", "./ckpt/BLEURT-20"),
                                  ["evaluate.bleurt_checkpoint", "./ckpt/BLEURT-20"], "does not exist"),
    "comet_model-dir-without-checkpoint": (lambda d: set_key(SMOKE, "evaluate.comet_model", str(empty_dir(d))),
                                           ["evaluate.comet_model", "wmt22-comet-da"], "model.ckpt"),
    "mbart_path-missing": (lambda d: mbart(SMOKE, d / "mbart-large-cc25"),
                           ["pretrain_sqs.mbart_path", "mbart-large-cc25"], "not a directory"),
    "mbart_path-without-tokenizer": (lambda d: mbart(SMOKE, mbart_without_tokenizer(d)),
                                     ["pretrain_sqs.mbart_path", "mbart-large-cc25"], "sentencepiece.bpe.model"),
    "local-source-missing": (lambda d: local_source(SMOKE, d / "cwmt.tgz"),
                             ["sources.cwmt.path", "cwmt.tgz"], "not found"),
}


def twice(text: str, line: str, other: str) -> str:
    """The config's text with ``other`` written right after the first ``line`` (same mapping)."""
    assert line in text
    indent = line[:len(line) - len(line.lstrip())]
    return text.replace(line, f"{line}{indent}{other}\n", 1)


#: Cases (issue 24) that fail only where torch sees no CUDA GPU.
NEEDS_NO_GPU = {"device=cuda-without-a-gpu"}

CASES.update({
    # decoding options: type and range (every option's rule: test_bad_settings.py)
    "decodings.beam4.beam=four": (lambda d: set_key(SMOKE, "decodings.beam4.beam", "four"),
                                  ["decodings.beam4.beam", "four"], "not an integer"),
    "decodings.beam4.beam=0": (lambda d: set_key(SMOKE, "decodings.beam4.beam", 0),
                               ["decodings.beam4.beam"], "out of range"),
    "decodings.argmax.length_beam=0": (lambda d: set_key(SMOKE, "decodings.argmax.length_beam", 0),
                                       ["decodings.argmax.length_beam"], "out of range"),
    # settings that name something that is not there
    "device=cuda-without-a-gpu": (lambda d: set_key(SMOKE, "device", "cuda"), ["device"], "no CUDA GPU"),
    "significance_baseline-typo": (lambda d: set_key(SMOKE, "evaluate.significance_baseline", "vanila_nat"),
                                   ["evaluate.significance_baseline", "vanila_nat"], "unknown model"),
    # settings that contradict each other
    "average_last>keep_last": (lambda d: set_key(set_key(SMOKE, "training.keep_last", 1), "training.average_last", 5),
                               ["average_last", "keep_last"], "larger than"),
    # a key written twice: PyYAML and Snakemake keep the last value without a word
    "training.lr-twice": (lambda d: twice(SMOKE_TEXT, "  lr: 3.0e-3\n", "lr: 3.0e-1"),
                          ["training.lr", "bad.yaml"], "given twice"),
})


def bad_config_outcomes(tmp_path_factory, snakemake=run_snakemake, workers: int = 2) -> dict:
    """case id -> (directory, return code, output, whether results/ was created): each
    case's `snakemake --dry-run`, ``workers`` at a time.

    Every directory and config is made first, in the calling thread; the threads only
    run Snakemake. pytest's TempPathFactory is not thread-safe: the first mktemp() of a
    session creates the base temporary directory, and two threads doing that at once
    each create one (pytest-N, pytest-N+1), then fail mktemp's check with "... is not
    a normalized and relative path" (issue 19)."""
    prepared = {}
    for case, (make, _, _) in CASES.items():
        d = tmp_path_factory.mktemp(case.replace("=", "_").replace(".", "_"))
        config = d / "bad.yaml"
        made = make(d)  # a config, or (a key given twice) the text of one
        config.write_text(made if isinstance(made, str) else yaml.safe_dump(made, sort_keys=False), encoding="utf-8")
        prepared[case] = (d, config)

    def run(item):
        case, (d, config) = item
        proc = snakemake(d, config, d / "results", "--dry-run", timeout=180)
        return case, (d, proc.returncode, proc.stdout + proc.stderr, (d / "results").exists())

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(run, prepared.items()))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """case id -> (directory, return code, output, whether results/ was created)."""
    return bad_config_outcomes(tmp_path_factory)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_fails_at_start_up_naming_the_key(outcomes, ledger, case):
    if case in NEEDS_NO_GPU:
        import torch

        if torch.cuda.is_available():
            pytest.skip("torch sees a CUDA GPU here: device: cuda is valid")
    d, code, output, results_created = outcomes[case]
    _, names, says = CASES[case]
    assert code != 0, output[-3000:]
    assert not results_created, "a job ran although the config is invalid"
    assert "Building DAG" not in output and "jobid" not in output, output[-3000:]
    error = output[output.index("invalid config"):] if "invalid config" in output else output
    ledger.message(error[:3000], names=names)
    assert says in error, error[:3000]
    # Every problem on one short line: no dump of the schema or the config.
    assert "Failed validating" not in output and len(output) < 4000, output[-3000:]
