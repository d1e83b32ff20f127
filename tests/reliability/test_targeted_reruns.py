"""Targeted reruns (issue 18, item 10): an edit reruns exactly the jobs that read it.

At 10eba29 the training rules took a hash of the whole config as a param, so editing
``evaluate.bootstrap_samples`` scheduled the AT teacher, every distillation shard and
everything downstream: on the paper config, GPU-days redone for nothing. Each rule's
params now hold only the settings that rule reads (``workflow/rules/common.smk``:
``settings_sha``, ``size_entry``, ``encoder_stage_spec``/``ALIGN_ONLY_KEYS``,
``download_spec``).

A finished smoke run is faked cheaply: every output of the smoke DAG is created empty
and ``snakemake --touch --forceall`` records each job's metadata (params, code, inputs)
as a real run would, without running a job. Each case then edits one setting, dry-runs
with Snakemake's default rerun triggers (what a user gets) and compares the jobs
scheduled with the jobs that must rerun, job by job (rule and wildcards): a job
scheduled needlessly and a job missing both fail. The dry run must leave every output
as it was (the ledger).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from tests.reliability.faultlib import ROOT, run_snakemake

pytestmark = pytest.mark.fault

SMOKE = ROOT / "config/smoke.yaml"

#: The data stages up to the binarized corpus, and the pre-alignment (which reads orig/).
DATA = {"prepare", "bpe", "binarize"}
SQS = {"pretrain_sqs_encoder", "pretrain_sqs"}
#: Jobs that depend on every cell's metrics.
PAPER = {"paper_table2", "paper_index", "all"}


class Job(NamedTuple):
    rule: str
    wildcards: tuple  # ((name, value), ...)

    def get(self, name, default=None):
        return dict(self.wildcards).get(name, default)

    def __str__(self):
        shown = [v for k, v in self.wildcards if k not in ("dataset", "direction")]
        return f"{self.rule}({','.join(shown)})" if shown else self.rule


def parse_jobs(text: str) -> set[Job]:
    """The jobs of a dry run's output: rule name and wildcards of each job block."""
    jobs = set()
    for match in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", text, re.MULTILINE):
        found = re.search(r"^    wildcards: (.*)$", match.group(2), re.MULTILINE)
        pairs = tuple(tuple(p.split("=", 1)) for p in found.group(1).split(", ")) if found else ()
        jobs.add(Job(match.group(1), pairs))
    return jobs


class FinishedRun:
    """A smoke results directory whose every job Snakemake considers done."""

    def __init__(self, base: Path):
        self.base, self.workdir, self.results = base, base / "work", base / "results"
        self.workdir.mkdir()
        self.config = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
        self.edits = 0

    def snakemake(self, configfile: Path, *args: str) -> str:
        proc = run_snakemake(self.workdir, configfile, self.results, *args, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    def dry_run(self, configfile: Path = SMOKE) -> set[Job]:
        return parse_jobs(self.snakemake(configfile, "--dry-run"))

    def rerun_after(self, key: str, value) -> set[Job]:
        """The jobs a dry run schedules after setting the dotted config ``key`` to ``value``."""
        config = copy.deepcopy(self.config)
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node[part]
        # (a misspelt key fails the dry run: the schema rejects unknown keys)
        assert node.get(last) != value, f"{key} is already {value!r}"
        node[last] = value
        self.edits += 1
        edited = self.base / f"edited-{self.edits}.yaml"
        edited.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return self.dry_run(edited)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = FinishedRun(tmp_path_factory.mktemp("reruns"))
    # Every output file of the DAG (the summary lists them), created empty ...
    summary = run.snakemake(SMOKE, "--summary").splitlines()
    header = next(i for i, line in enumerate(summary) if line.startswith("output_file\t"))
    outputs = [Path(line.split("\t")[0]) for line in summary[header + 1:] if "\t" in line]
    assert len(outputs) > 40, summary
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    # ... then marked finished with the metadata of this config, in the DAG's order.
    run.snakemake(SMOKE, "--touch", "--forceall", "--cores", "1")
    run.all_jobs = parse_jobs(run.snakemake(SMOKE, "--dry-run", "--forceall"))
    assert len(run.all_jobs) == 33 and {"train_teacher", "distill_shard", "pretrain_sqs"} <= {
        j.rule for j in run.all_jobs}, sorted(map(str, run.all_jobs))
    unchanged = run.snakemake(SMOKE, "--dry-run")
    assert "Nothing to be done" in unchanged and "missing provenance" not in unchanged, unchanged[-3000:]
    return run


def select(jobs, rules=(), models=None, data=None):
    """The jobs of ``rules`` (restricted to cells of ``models``/``data`` where given)."""
    return {j for j in jobs if j.rule in rules
            and (models is None or j.get("model") is None or j.get("model") in models)
            and (data is None or j.get("data") is None or j.get("data") in data)}


def check(finished, ledger, key, value, expected):
    ledger.protect(finished.results)
    scheduled = finished.rerun_after(key, value)
    ledger.verify()  # a dry run writes nothing
    needless = sorted(map(str, scheduled - expected))
    missing = sorted(map(str, expected - scheduled))
    assert not needless and not missing, (
        f"after editing {key}:\n  rerun needlessly: {needless}\n  not rerun: {missing}")


TRAINING_ON = {"train_teacher", "train_nat", "distill_shard", "distill_gather", "bpe_kd", "binarize_kd",
               "decode", "evaluate", "learning_curves"} | PAPER


def test_evaluation_setting_reruns_only_the_evaluations(finished, ledger):
    """Issue 18's case: bootstrap_samples scheduled the teacher, the distillation and
    every training. Now the 6 evaluations and the tables, no decode, no training."""
    expected = select(finished.all_jobs, {"evaluate"} | PAPER)
    assert len(select(expected, {"evaluate"})) == 6
    check(finished, ledger, "evaluate.bootstrap_samples", 21, expected)


def test_nat_decoding_setting_reruns_the_nat_decodes_only(finished, ledger):
    """A decoding option of `argmax`: the 4 NAT decodes (raw, kd) and their scores; the
    AT's beam4 cells are scored again too (their significance test reads Vanilla NAT's
    hypotheses, significance_baseline), but not decoded. No training."""
    expected = select(finished.all_jobs, {"decode"}, models={"vanilla_nat", "aeqa_nat"})
    assert len(expected) == 4
    expected |= select(finished.all_jobs, {"evaluate"} | PAPER)
    check(finished, ledger, "decodings.argmax.length_beam", 2, expected)


def test_beam_decoding_setting_leaves_the_distillation_alone(finished, ledger):
    """beam4's length penalty: the AT's 2 decodes and scores; the distillation has its own
    beam and lenpen (distill:), so no shard, no NAT, no training."""
    expected = select(finished.all_jobs, {"decode", "evaluate"} | PAPER, models={"at"})
    assert len(expected) == 4 + len(PAPER)
    check(finished, ledger, "decodings.beam4.lenpen", 1.2, expected)


def test_training_setting_reruns_training_and_downstream_not_the_data(finished, ledger):
    """training.lr: the teacher, the distillation made with it, every model and every
    cell; not the download, prepare, BPE, binarization or the pre-alignment."""
    expected = select(finished.all_jobs, TRAINING_ON)
    assert len(select(expected, {"train_nat", "train_teacher"})) == 6
    check(finished, ledger, "training.lr", 1.0e-3, expected)


def test_prepare_setting_reruns_the_data_and_downstream(finished, ledger):
    """prepare.max_ratio: prepare, BPE, binarization and everything trained on them; not
    the download (download_spec holds only recipe, langs, sources and recipe_options) nor
    the pre-alignment, which reads the downloaded orig/ text."""
    expected = select(finished.all_jobs, DATA | TRAINING_ON)
    check(finished, ledger, "datasets.smoke_ende.prepare.max_ratio", 2.5, expected)


def test_alignment_setting_reruns_the_alignment_and_aeqa_only(finished, ledger):
    """pretrain_sqs.alpha (alignment only, ALIGN_ONLY_KEYS): the alignment and the AEQA-NAT
    models (raw, kd) with their cells; not the encoder, the teacher, the distillation,
    Vanilla NAT or the AT."""
    expected = select(finished.all_jobs, {"pretrain_sqs", "learning_curves"} | PAPER)
    expected |= select(finished.all_jobs, {"train_nat", "decode", "evaluate"}, models={"aeqa_nat"})
    assert len(expected) == 2 + len(PAPER) + 6
    check(finished, ledger, "pretrain_sqs.alpha", 0.6, expected)


def test_encoder_setting_reruns_the_whole_pre_alignment_and_aeqa_only(finished, ledger):
    """pretrain_sqs.embedded.denoise_updates: the denoising encoder too, still no other model."""
    expected = select(finished.all_jobs, SQS | {"learning_curves"} | PAPER)
    expected |= select(finished.all_jobs, {"train_nat", "decode", "evaluate"}, models={"aeqa_nat"})
    embedded = dict(finished.config["pretrain_sqs"]["embedded"], denoise_updates=12)
    check(finished, ledger, "pretrain_sqs.embedded", embedded, expected)


def test_distillation_setting_reruns_the_kd_side_only(finished, ledger):
    """distill.lenpen: the shards, the KD corpus and the 3 models trained on it with their
    cells; not the teacher (it is trained on raw data) nor any raw-data model."""
    expected = select(finished.all_jobs, {"distill_shard", "distill_gather", "bpe_kd", "binarize_kd",
                                          "learning_curves"} | PAPER)
    expected |= select(finished.all_jobs, {"train_nat", "decode", "evaluate"}, data={"kd"})
    assert len(select(expected, {"train_nat"})) == 3
    check(finished, ledger, "distill.lenpen", 1.1, expected)


def test_unused_model_size_reruns_nothing(finished, ledger):
    """A new model_sizes entry no model uses (size_entry: each model hashes its own size)."""
    size = dict(finished.config["model_sizes"]["smoke"], embed_dim=64)
    check(finished, ledger, "model_sizes.unused", size, set())
