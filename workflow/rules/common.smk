# What the stage files share: the config (loaded and checked once by aeqa_model.config),
# path patterns, input functions and per-job resources (aeqa_model.cluster).
import json
import os
import sys
from pathlib import Path

import aeqa_model.config
import aeqa_model.config_facts
from aeqa_model import cluster
from aeqa_model.layout import RunLayout
import aeqa_model.metrics.settings
from aeqa_model.provenance import config_sha256

PYTHON = sys.executable
ROOT = Path(workflow.basedir).parent
# Software: one environment for Snakemake and every job (scripts/setup_env.sh's
# pinned venv, or envs/environment-gpu.yaml created once and activated); jobs run
# PYTHON, the interpreter that runs Snakemake, and SLURM jobs inherit it. No rule
# has a `conda:` env of its own (--sdm conda would build envs that PYTHON never
# enters; docs/cluster.md).

# Paper grid merged, schema, model_defaults, references and resources checked:
# every problem fails here, before any job (aeqa_model/config.py).
# workflow.configfiles: the files Snakemake read (--configfile, or the default), checked
# for keys given twice, which Snakemake's loader resolves silently to the last value.
config = aeqa_model.config.load(config, ROOT, config_files=workflow.configfiles)

RUN = config["run_name"]
LAYOUT = RunLayout(config)  # where every file of the run lives (aeqa_model/layout.py)
RESULTS = LAYOUT.results
DATASETS = config["datasets"]
# Evaluation-only sets (e.g. the Ott et al. 2018 multi-reference set) are decoded
# with the models, BPE codes and dictionary of the dataset they evaluate.
EVAL_ONLY = LAYOUT.eval_only
TRAINABLE = [d for d in DATASETS if d not in EVAL_ONLY]
MODELS = config["models"]
DECODINGS = config["decodings"]
TEACHER = LAYOUT.teacher


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    direction=r"[a-z]{2,3}-[a-z]{2,3}",
    data=r"raw|kd",
    model=r"[A-Za-z0-9_.]+",
    decoding=r"[A-Za-z0-9_.]+",
    shard=r"\d+",
    k=r"\d+",
    dim=r"\d+",


# ------------------------------------------------------------------ helpers --
def langs(dataset):
    return DATASETS[dataset]["langs"]


def src_tgt(direction):
    return direction.split("-")


def arch(model):
    return MODELS[model]["arch"]


def default_decoding(model):
    return aeqa_model.config_facts.default_decoding(MODELS[model])


def evaluate_setting(key):
    """evaluate.<key> as the config writes it, else its declared default (metrics/settings.py)."""
    return aeqa_model.metrics.settings.spec_value(config["evaluate"], key)


def settings_sha(*settings):
    """sha256 of the settings one job reads: its provenance, and the only config hash
    among its params, so an edit elsewhere in the config reruns nothing of it."""
    return config_sha256(list(settings))


def train_spec(model, dataset=None):
    """training section, overlaid by the dataset's `training:`, the model's `training:`
    and the dataset's `model_training.<model>` (aeqa_model.cluster.train_spec)."""
    return cluster.train_spec(config, model, dataset)


def needs_sqs(model):
    return aeqa_model.config_facts.needs_sqs(MODELS[model])


def model_seed(model):
    return aeqa_model.config_facts.model_seed(config, MODELS[model])


def jq(obj):
    """JSON for a shell argument (Snakemake's :q quoting does the shell escaping)."""
    return json.dumps(obj, sort_keys=True)


def launcher(resources):
    """Single process on CPU or 1 GPU; torchrun with one process per GPU otherwise."""
    return cluster.launcher(PYTHON, int(getattr(resources, "gpu", 0) or 0))


# ------------------------------------------------------------ resources --
def stage_resources(stage, mem_mb=4000, runtime=60, cpus=None, gpu=False):
    """Every resource a rule of `stage` declares, per job (aeqa_model.cluster.rule_resources)."""
    return cluster.rule_resources(config, stage, mem_mb, runtime, cpus or config.get("threads", 1), gpu)


def stage_threads(stage, cpus=None):
    """A rule's threads: its cpus_per_task (per dataset, as the resources)."""
    return cluster.rule_threads(config, stage, cpus or config.get("threads", 1))


# ---------------------------------------------------------------- paths --
# Every path pattern once (aeqa_model.layout.PATTERNS): path(pattern) is the one a
# rule's output: declares, with its wildcards; path(pattern, dataset=..., ...) fills
# them in for an input function. LAYOUT knows the files of a dataset, model or output.
path, data_dir, model_dataset, dict_path = LAYOUT.path, LAYOUT.data_dir, LAYOUT.model_dataset, LAYOUT.dict_path
splits_of, text_file, text_files, bin_prefix = LAYOUT.splits_of, LAYOUT.text_file, LAYOUT.text_files, LAYOUT.bin_prefix
extra_reference_files, model_sqs_path, model_path = LAYOUT.extra_reference_files, LAYOUT.model_sqs_path, LAYOUT.model_path
decoding_name, metrics_path = LAYOUT.decoding_name, LAYOUT.metrics_path
paper_outputs, paper_file, output_metrics = LAYOUT.paper_outputs, LAYOUT.paper_file, LAYOUT.output_metrics
trained_models, paper_targets = LAYOUT.trained_models, LAYOUT.paper_targets
PAPER_INDEX, LEARNING_CURVES = LAYOUT.paper_index, LAYOUT.learning_curves


def teacher_path(wc):
    return LAYOUT.teacher_path(wc.dataset, wc.direction)


MULTI_REFERENCE_CELLS = aeqa_model.config_facts.multi_reference_cells(config)


# ----------------------------------------------- stage input functions --
def binarize_inputs(wc):
    inputs = {"done": path("bpe_done", dataset=wc.dataset)}
    if wc.dataset in EVAL_ONLY:
        inputs["parent"] = path("bin_report", dataset=model_dataset(wc.dataset))
    return inputs


def data_of(wc):
    """train_teacher has no {data} wildcard: the teacher always learns from raw data."""
    return getattr(wc, "data", "raw")


def train_inputs(wc):
    inputs = {"binarized": path("bin_report", dataset=wc.dataset)}
    if data_of(wc) == "kd":
        inputs["kd"] = path("kd_bin_report", dataset=wc.dataset, direction=wc.direction)
    if needs_sqs(wc.model):
        inputs["sqs"] = model_sqs_path(wc.dataset, wc.model)
    codes = LAYOUT.model_codes(wc.dataset, wc.direction, data_of(wc), wc.model, "report.json")
    if codes:
        inputs["codes"] = codes
    return inputs


def target_text(wc):
    """The BPE text of the targets a cell trains on: the dataset's, or the distilled ones."""
    if wc.data == "kd":
        return path("kd_train", dataset=wc.dataset, direction=wc.direction, stage="bpe", side="tgt")
    return text_file(wc.dataset, "bpe", "train", src_tgt(wc.direction)[1])


def sqs_inputs(wc):
    """The train cli's flags for the SQS a model starts from and, with h_y_encoder:
    pretrained, the target codes it reads (nothing for the other models)."""
    if not needs_sqs(wc.model):
        return []
    flags = ["--sqs-init", model_sqs_path(wc.dataset, wc.model)]
    for split in ("train", "valid"):
        codes = LAYOUT.model_codes(wc.dataset, wc.direction, data_of(wc), wc.model, split)
        if codes:
            flags += [f"--{split}-codes", codes]
    return flags


def train_params(wc):
    s, t = src_tgt(wc.direction)
    kd = {side: path("kd_bin", dataset=wc.dataset, direction=wc.direction, side=side) for side in ("src", "tgt")}
    return {
        "model_spec": jq(MODELS[wc.model]),
        "train_spec": jq(train_spec(wc.model, wc.dataset)),
        "sizes": jq(aeqa_model.config_facts.size_entry(config, MODELS[wc.model])),
        "dict": dict_path(wc.dataset),
        "train_src": kd["src"] if data_of(wc) == "kd" else bin_prefix(wc.dataset, "train", s),
        "train_tgt": kd["tgt"] if data_of(wc) == "kd" else bin_prefix(wc.dataset, "train", t),
        "valid_src": bin_prefix(wc.dataset, "valid", s),
        "valid_tgt": bin_prefix(wc.dataset, "valid", t),
        "sqs": sqs_inputs(wc),
    }


def train_config_sha(wc):
    return settings_sha(train_params(wc), model_seed(wc.model), RUN)


# The train rules share this command. Exit code 75 = interrupted after a
# checkpoint (SLURM time-limit signal): the rerun resumes from checkpoint_last.pt.
# `exec`: the trainer (or torchrun) replaces the shell, so a SIGTERM sent to the
# job's processes reaches it without killing a shell in between. Every shell line
# `exec`s its one program and quotes every path with `:q` (issue 18).
TRAIN_SHELL = (
    "exec {params.launcher:q} -m aeqa_model.train.cli --model-spec {params.p[model_spec]:q}"
    " --train-spec {params.p[train_spec]:q} --sizes {params.p[sizes]:q} --dict {params.p[dict]:q}"
    " --train-src {params.p[train_src]:q} --train-tgt {params.p[train_tgt]:q}"
    " --valid-src {params.p[valid_src]:q} --valid-tgt {params.p[valid_tgt]:q} {params.p[sqs]:q}"
    " --out-dir {params.out_dir:q} --output {output.model:q} --seed {params.seed} --device {params.device:q}"
    " --threads {threads} --config-sha256 {params.config_sha:q} > {log:q} 2>&1"
)


def shard_count():
    return int(config["distill"]["shards"])


def decode_inputs(wc):
    inputs = {"model": model_path(wc.dataset, wc.direction, wc.data, wc.model),
              "binarized": path("bin_report", dataset=wc.dataset), "at_reference": teacher_path(wc)}
    if DECODINGS[wc.decoding].get("strategy") == "npd" and DECODINGS[wc.decoding].get("rerank", "teacher") == "teacher":
        inputs["teacher"] = teacher_path(wc)
    return inputs


def baseline_hyp(wc):
    """Significance baseline: evaluate.significance_baseline's hyp.tok on the same data (none for itself)."""
    base = config["evaluate"].get("significance_baseline")
    if not base or base == wc.model or base not in MODELS:
        return None
    return path("decode", dataset=wc.dataset, direction=wc.direction, data=wc.data, model=base,
                decoding=default_decoding(base), file="hyp.tok")


def evaluate_inputs(wc):
    cell = dict(dataset=wc.dataset, direction=wc.direction, data=wc.data, model=wc.model, decoding=wc.decoding)
    inputs = {key: path("decode", **cell, file=file) for key, file in
              (("tok", "hyp.tok"), ("detok", "hyp.detok"), ("speed", "speed.json"))}
    inputs["prepared"] = path("tok_report", dataset=wc.dataset)
    if (wc.dataset, wc.direction, wc.data, wc.model, wc.decoding) in MULTI_REFERENCE_CELLS:
        # Table 4: the same model and decoding on the multi-reference set
        multi = DATASETS[wc.dataset]["multi_reference"]
        inputs["multi_reference"] = path("metrics", **{**cell, "dataset": multi})
    base = baseline_hyp(wc)
    if base:
        inputs["baseline"] = base
    return inputs


def distill_shards(wc):
    return [path("kd_shard", dataset=wc.dataset, direction=wc.direction, shard=i) for i in range(shard_count())]


# ------------------------------------------------------ evaluate's params --
def eval_text(wc, stage, side):
    """The test split's text of one side (src, tgt) at a stage (tok, orig)."""
    lang = src_tgt(wc.direction)[0 if side == "src" else 1]
    return text_file(wc.dataset, stage, config["evaluate"]["test_split"], lang)


def eval_cell(wc):
    src, tgt = src_tgt(wc.direction)
    return jq({"run": RUN, "dataset": wc.dataset, "direction": wc.direction, "src": src, "tgt": tgt,
               "data": wc.data, "model": wc.model, "arch": arch(wc.model), "decoding": wc.decoding,
               "default_decoding": decoding_name(wc.model, "default"),
               "model_config": MODELS[wc.model], "decoding_config": DECODINGS[wc.decoding]})


def eval_provenance(wc):
    sha = settings_sha(config["evaluate"], MODELS[wc.model], DECODINGS[wc.decoding], model_seed(wc.model), RUN,
                       wc.dataset, wc.direction, wc.data)
    return jq({"config_sha256": sha, "seed": model_seed(wc.model)})


def eval_baseline_args(wc, input):
    if "baseline" not in input.keys():
        return []
    return ["--baseline-hyp-tok", input.baseline, "--baseline-name", config["evaluate"]["significance_baseline"]]


def eval_extra_args(wc, input):
    extra = extra_reference_files(wc.dataset)
    return ((["--extra-refs-tok", *extra] if extra else [])
            + (["--multi-reference-from", input.multi_reference] if "multi_reference" in input.keys() else []))
