# What the stage files share: the config (loaded and checked once by aeqa_model.config),
# path patterns, input functions and per-job resources (aeqa_model.cluster).
import json
import os
import sys
from pathlib import Path

import aeqa_model.config
from aeqa_model import cluster
from aeqa_model.provenance import config_sha256

PYTHON = sys.executable
ROOT = Path(workflow.basedir).parent
SCRIPTS = ROOT / "scripts"
# Software: one environment for Snakemake and every job (scripts/setup_env.sh's
# pinned venv, or envs/environment-gpu.yaml created once and activated); jobs run
# PYTHON, the interpreter that runs Snakemake, and SLURM jobs inherit it. No rule
# has a `conda:` env of its own (--sdm conda would build envs that PYTHON never
# enters; docs/cluster.md).

# Paper grid merged, schema, model_defaults, references and resources checked:
# every problem fails here, before any job (aeqa_model/config.py).
config = aeqa_model.config.load(config, ROOT)

RUN = config["run_name"]
RESULTS = f"{config.get('results_dir', 'results')}/{RUN}"
DATASETS = config["datasets"]
# Evaluation-only sets (e.g. the Ott et al. 2018 multi-reference set) are decoded
# with the models, BPE codes and dictionary of the dataset they evaluate.
EVAL_ONLY = aeqa_model.config.evaluation_only(config)
TRAINABLE = [d for d in DATASETS if d not in EVAL_ONLY]
MODELS = config["models"]
DECODINGS = config["decodings"]
TEACHER = config["distill"]["teacher"]


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
    return aeqa_model.config.default_decoding(MODELS[model])


def decoding_name(model, decoding):
    return default_decoding(model) if decoding == "default" else decoding


def needs_sqs(model):
    """AEQA models start from the pre-aligned codebook unless ``sqs_init: random``."""
    return aeqa_model.config.needs_sqs(MODELS[model])


def model_seed(model):
    return int(MODELS[model].get("seed", config["seed"]))


def size_entry(model):
    """The one ``model_sizes`` entry a model uses (none for the built-in sizes), so
    editing another size reruns nothing of this model."""
    size = MODELS[model]["size"]
    sizes = config.get("model_sizes", {})
    return {size: sizes[size]} if size in sizes else {}


# pretrain_sqs keys only the alignment stage reads: editing them leaves the
# (shared, expensive) denoising encoder alone.
ALIGN_ONLY_KEYS = ("align_updates", "alpha", "ema_decay", "batch_size")


def encoder_stage_spec():
    return {k: v for k, v in config["pretrain_sqs"].items() if k not in ALIGN_ONLY_KEYS}


# The keys of a dataset entry the download reads (scripts/download.py, the recipes of
# aeqa_model.data.recipes): editing its prepare, bpe or training settings refetches
# nothing, and leaves the pre-alignment (which reads the downloaded orig/ text) alone.
DOWNLOAD_KEYS = ("recipe", "langs", "sources", "recipe_options")


def download_spec(dataset):
    return {k: DATASETS[dataset][k] for k in DOWNLOAD_KEYS if k in DATASETS[dataset]}


def settings_sha(*settings):
    """sha256 of the settings one job reads: its provenance, and the only config hash
    among its params, so an edit elsewhere in the config reruns nothing of it."""
    return config_sha256(list(settings))


def train_spec(model, dataset=None):
    """training section, overlaid by the dataset's `training:`, the model's `training:`
    and the dataset's `model_training.<model>` (aeqa_model.cluster.train_spec)."""
    return cluster.train_spec(config, model, dataset)


def jq(obj):
    """JSON for a shell argument (Snakemake's :q quoting does the shell escaping)."""
    return json.dumps(obj, sort_keys=True)


def launcher(resources):
    """Single process on CPU or 1 GPU; torchrun with one process per GPU otherwise.
    A list of words: the shell quotes each (`{params.launcher:q}`)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus)]
    return [PYTHON]


# ------------------------------------------------------------ resources --
def stage_resources(stage, mem_mb=4000, runtime=60, cpus=None, gpu=False):
    """Every resource a rule of `stage` declares, per job (aeqa_model.cluster.rule_resources)."""
    return cluster.rule_resources(config, stage, mem_mb, runtime, cpus or config.get("threads", 1), gpu)


def stage_threads(stage, cpus=None):
    """A rule's threads: its cpus_per_task (per dataset, as the resources)."""
    return cluster.rule_threads(config, stage, cpus or config.get("threads", 1))


# ---------------------------------------------------------------- paths --
# Each path pattern once: path(pattern) is the one a rule's output: declares, with
# its wildcards; path(pattern, dataset=..., ...) fills them in for an input function.
D, KD = "{RESULTS}/data/{dataset}", "{RESULTS}/data/{dataset}/kd/{direction}"
CELL = "{dataset}/{direction}/{data}/{model}"
PATHS = {
    "manifest": f"{D}/orig/manifest.json",
    "tok_report": f"{D}/tok/report.json",
    "bpe_codes": f"{D}/bpe/codes",
    "bpe_done": f"{D}/bpe/done.json",
    "bin_report": f"{D}/bin/report.json",
    "kd_shard": f"{KD}/shards/{{shard}}.tok",
    "kd_train": f"{KD}/{{stage}}/train.{{side}}",  # stage: tok, bpe; side: src, tgt
    "kd_tok_report": f"{KD}/tok/report.json",
    "kd_bin_report": f"{KD}/bin/report.json",
    "sqs_encoder": "{RESULTS}/sqs/{dataset}/encoder.pt",
    "sqs_encoder_stats": "{RESULTS}/sqs/{dataset}/encoder_stats.json",
    # a model entry's sqs_align_updates: a pre-alignment of its own length (_A<updates>)
    "sqs": "{RESULTS}/sqs/{dataset}/K{k}_D{dim}/{file}",  # file: sqs.pt, stats.json
    "sqs_variant": "{RESULTS}/sqs/{dataset}/K{k}_D{dim}_A{align}/{file}",
    "model": f"{{RESULTS}}/models/{CELL}/model.pt",
    "decode": f"{{RESULTS}}/decode/{CELL}/{{decoding}}/{{file}}",  # file: hyp.tok, hyp.bpe, hyp.detok, speed.json
    "metrics": f"{{RESULTS}}/eval/{CELL}/{{decoding}}/metrics.json",
    "paper": "{RESULTS}/paper/{name}.{ext}",
}


def path(pattern, **values):
    """The pattern PATHS[pattern] with RESULTS and the given wildcards filled in."""
    filled = PATHS[pattern].replace("{RESULTS}", RESULTS)
    for key, value in values.items():
        filled = filled.replace(f"{{{key}}}", str(value))
    return filled


def data_dir(dataset):
    return f"{RESULTS}/data/{dataset}"


def paper_outputs(name):
    exts = ("md", "tex", "csv") if output_kind(name) == "table" else ("png", "pdf")
    return {ext: path("paper", name=name, ext=ext) for ext in exts}


PAPER_INDEX = f"{RESULTS}/paper/README.md"
LEARNING_CURVES = {ext: path("paper", name="learning_curves", ext=ext) for ext in ("png", "pdf", "csv")}


# ------------------------------------------------------- data of a dataset --
def model_dataset(dataset):
    """The dataset whose models, BPE codes and dictionary serve ``dataset``."""
    return DATASETS[dataset].get("evaluation_of", dataset)


def dict_path(dataset):
    return f"{data_dir(model_dataset(dataset))}/bin/dict.txt"


def splits_of(dataset):
    return ["test"] if dataset in EVAL_ONLY else ["train", "valid", "test"]


def extra_reference_files(dataset, stage="tok"):
    extra = DATASETS[dataset].get("extra_references")
    if not extra:
        return []
    return [f"{data_dir(dataset)}/{stage}/test.ref{i}.{extra['lang']}" for i in range(1, extra["count"] + 1)]


def text_files(dataset, stage):
    """Every text file of a stage (tok or bpe) of a dataset, extra references included."""
    files = [f"{data_dir(dataset)}/{stage}/{s}.{l}" for s in splits_of(dataset) for l in langs(dataset)]
    return files + extra_reference_files(dataset, stage)


def bin_prefix(dataset, split, lang):
    return f"{data_dir(dataset)}/bin/{split}.{lang}"


def model_sqs_path(dataset, model):
    spec, cfg = MODELS[model], aeqa_model.config
    k, dim, align = cfg.codebook_size(spec), cfg.model_width(config, spec), spec.get("sqs_align_updates")
    if align:
        return path("sqs_variant", dataset=dataset, k=k, dim=dim, align=int(align), file="sqs.pt")
    return path("sqs", dataset=dataset, k=k, dim=dim, file="sqs.pt")


def model_path(dataset, direction, data, model):
    return path("model", dataset=model_dataset(dataset), direction=direction, data=data, model=model)


def teacher_path(wc):
    return model_path(wc.dataset, wc.direction, "raw", TEACHER)


def metrics_path(dataset, direction, data, model, decoding):
    return path("metrics", dataset=dataset, direction=direction, data=data, model=model,
                decoding=decoding_name(model, decoding))


# ------------------------------------------------------------ grid / paper --
def output_kind(name):
    return config["outputs"][name].get("kind", "figure" if name.startswith("figure") else "table")


def output_metrics(name):
    return [metrics_path(*cell) for cell in aeqa_model.config.output_cells(config, name)]


def paper_file(name, table_ext="md"):
    """An output's main file: its table's ``table_ext`` file, or its figure's png."""
    return paper_outputs(name)[table_ext if output_kind(name) == "table" else "png"]


def trained_models():
    """model.pt of every training run the outputs need, the teacher of each pair included
    (evaluation-only datasets map to the dataset their models are trained on)."""
    runs = {(model_dataset(ds), di, data, mo) for name in config.get("outputs", {})
            for ds, di, data, mo, _ in aeqa_model.config.output_cells(config, name)}
    runs |= {(ds, di, "raw", TEACHER) for ds, di, _, _ in list(runs)}
    return sorted(model_path(*run) for run in runs)


def paper_targets():
    names = list(config.get("outputs", {}))
    return [paper_file(n) for n in names] + ([PAPER_INDEX, LEARNING_CURVES["png"]] if names else [])


MULTI_REFERENCE_CELLS = aeqa_model.config.multi_reference_cells(config)


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
    return inputs


def train_params(wc):
    s, t = src_tgt(wc.direction)
    kd = f"{data_dir(wc.dataset)}/kd/{wc.direction}/bin/train"
    return {
        "model_spec": jq(MODELS[wc.model]),
        "train_spec": jq(train_spec(wc.model, wc.dataset)),
        "sizes": jq(size_entry(wc.model)),
        "dict": f"{data_dir(wc.dataset)}/bin/dict.txt",
        "train_src": f"{kd}.src" if data_of(wc) == "kd" else bin_prefix(wc.dataset, "train", s),
        "train_tgt": f"{kd}.tgt" if data_of(wc) == "kd" else bin_prefix(wc.dataset, "train", t),
        "valid_src": bin_prefix(wc.dataset, "valid", s),
        "valid_tgt": bin_prefix(wc.dataset, "valid", t),
        "sqs": ["--sqs-init", model_sqs_path(wc.dataset, wc.model)] if needs_sqs(wc.model) else [],
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
    return f"{data_dir(wc.dataset)}/{stage}/{config['evaluate']['test_split']}.{lang}"


def eval_cell(wc):
    src, tgt = src_tgt(wc.direction)
    return jq({"run": RUN, "dataset": wc.dataset, "direction": wc.direction, "src": src, "tgt": tgt,
               "data": wc.data, "model": wc.model, "arch": arch(wc.model), "decoding": wc.decoding,
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
