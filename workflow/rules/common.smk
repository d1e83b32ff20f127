# Shared helpers: config validation, grid expansion, input functions, resources.
import json
import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from aeqa_model import cluster
from aeqa_model.provenance import config_sha256

PYTHON = sys.executable
ROOT = Path(workflow.basedir).parent
SCRIPTS = ROOT / "scripts"
# Software: one environment for Snakemake and every job (scripts/setup_env.sh's
# pinned venv, or envs/environment-gpu.yaml created once and activated); jobs run
# PYTHON, the interpreter that runs Snakemake, and SLURM jobs inherit it. No rule
# has a `conda:` env of its own (--sdm conda would build envs that PYTHON never
# enters; docs/cluster.md). None keeps a leftover `conda: CONDA_ENV` a no-op.
CONDA_ENV = None


def _merge_paper_grid(cfg):
    """The table/figure grid lives in its own file (config key paper_grid); it may add
    sweep models and decodings, which join the base ones (aeqa_model.cluster, shared
    with scripts/gpu_hours.py)."""
    return cluster.merge_paper_grid(cfg, ROOT)


SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def _check_schema(cfg):
    """Validate against the JSON schema; every violation as one line naming its key.

    Snakemake's own ``validate`` reports only the first problem, buried under a
    dump of the schema and the whole config; this lists them all, briefly."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    errors = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                name = f"{where}.{key}" if where else key
                errors.append(f"{name}: unknown key (allowed here: {', '.join(allowed)})")
        else:
            errors.append(f"{where or '(top level)'}: {err.message}")
    if errors:
        raise ValueError(f"invalid config ({len(errors)} problem(s); fix them in the config file or --config, "
                         f"the schema is {SCHEMA}):\n  " + "\n  ".join(errors))


_check_schema(config)
validate(config, str(SCHEMA))
config = _merge_paper_grid(config)
_MODEL_DEFAULT_PROBLEMS = cluster.apply_model_defaults(config)
_check_schema(config)
validate(config, str(SCHEMA))

RUN = config["run_name"]
RESULTS = f"{config.get('results_dir', 'results')}/{RUN}"
DATASETS = config["datasets"]
# Evaluation-only sets (e.g. the Ott et al. 2018 multi-reference set) are decoded
# with the models, BPE codes and dictionary of the dataset they evaluate.
EVAL_ONLY = [d for d, spec in DATASETS.items() if spec.get("evaluation_of")]
TRAINABLE = [d for d in DATASETS if d not in EVAL_ONLY]
MODELS = config["models"]
DECODINGS = config["decodings"]
TEACHER = config["distill"]["teacher"]
DEFAULT_DECODING = {"at": "beam4", "cmlm": "mask_predict10", "dat": "lookahead", "aeqa_dat": "lookahead"}


def _check_references():
    """Fail at start-up (before any job) when the config names things that do not exist."""
    errors = []
    for name, ds in DATASETS.items():
        for src in ds.get("sources", []):
            if src not in config.get("sources", {}):
                errors.append(f"datasets.{name}.sources: unknown source {src!r}")
        for direction in ds["directions"]:
            parts = direction.split("-")
            if len(parts) != 2 or set(parts) - set(ds["langs"]):
                errors.append(f"datasets.{name}.directions: {direction!r} is not a pair of {ds['langs']}")
    from aeqa_model.decode import check_decoding
    from aeqa_model.models import check_options

    for name, decoding in DECODINGS.items():
        errors.extend(check_decoding(name, decoding))

    for name, model in MODELS.items():
        errors.extend(check_options(name, model))
        if model["size"] not in config.get("model_sizes", {}) and model["size"] not in ("base", "big", "tiny"):
            errors.append(f"models.{name}.size: unknown size {model['size']!r}")
        if model.get("decoding") and model["decoding"] not in DECODINGS:
            errors.append(f"models.{name}.decoding: unknown decoding {model['decoding']!r}")
    for name in EVAL_ONLY:
        parent = DATASETS[name]["evaluation_of"]
        if parent not in TRAINABLE:
            errors.append(f"datasets.{name}.evaluation_of: {parent!r} is not a trainable dataset")
    for name, ds in DATASETS.items():
        mr = ds.get("multi_reference")
        if mr and (mr not in EVAL_ONLY or DATASETS[mr]["evaluation_of"] != name):
            errors.append(f"datasets.{name}.multi_reference: {mr!r} must be an evaluation_of: {name} dataset")
        elif mr and set(DATASETS[mr]["directions"]) - set(ds["directions"]):
            errors.append(f"datasets.{mr}.directions: {DATASETS[mr]['directions']} must be among "
                          f"datasets.{name}.directions {ds['directions']}")
    errors.extend(_MODEL_DEFAULT_PROBLEMS)
    for name, ds in DATASETS.items():
        for model in ds.get("model_training") or {}:
            if model not in MODELS:
                errors.append(f"datasets.{name}.model_training: unknown model {model!r}")
    if TEACHER not in MODELS:
        errors.append(f"distill.teacher: unknown model {TEACHER!r}")
    for out, spec in config.get("outputs", {}).items():
        for i, block in enumerate(spec.get("blocks", [])):
            for ds in block["datasets"]:
                if ds not in DATASETS:
                    errors.append(f"outputs.{out}.blocks[{i}].datasets: unknown dataset {ds!r}")
            for m in block["models"]:
                if m not in MODELS:
                    errors.append(f"outputs.{out}.blocks[{i}].models: unknown model {m!r}")
            for dec in block.get("decodings", ["default"]):
                if dec != "default" and dec not in DECODINGS:
                    errors.append(f"outputs.{out}.blocks[{i}].decodings: unknown decoding {dec!r}")
    sqs = config["pretrain_sqs"]
    if sqs["encoder"] == "mbart" and not sqs.get("mbart_path"):
        errors.append("pretrain_sqs.mbart_path: required when pretrain_sqs.encoder is mbart; set it to a local "
                      "mbart-large-cc25 directory, or use encoder: embedded")
    elif sqs["encoder"] == "mbart" and not Path(sqs["mbart_path"]).expanduser().is_dir():
        errors.append(f"pretrain_sqs.mbart_path: {sqs['mbart_path']} is not a directory; download "
                      "mbart-large-cc25 there, or use encoder: embedded")
    elif sqs["encoder"] == "mbart":
        # The same files aeqa_model.sqs_pretrain.check_mbart_dir needs (its tokenizer
        # included), checked here so that a bad directory fails before any job.
        mbart = Path(sqs["mbart_path"]).expanduser()
        missing = [name for name in ("config.json", "sentencepiece.bpe.model") if not (mbart / name).is_file()]
        if not list(mbart.glob("*.bin")) + list(mbart.glob("*.safetensors")):
            missing.append("pytorch_model.bin or model.safetensors")
        if missing:
            errors.append(f"pretrain_sqs.mbart_path: {mbart} is an incomplete mBART directory, missing "
                          f"{', '.join(missing)}; copy the whole facebook/mbart-large-cc25 snapshot there")
    from aeqa_model.metrics.neural import check_checkpoint_setting

    for key in ("comet_model", "bleurt_checkpoint"):
        problem = check_checkpoint_setting(key, config["evaluate"].get(key))
        if problem:
            errors.append(problem)
    # A local source whose path is set but wrong is a typo: say so now. One still at
    # `path: null` (not obtained yet, e.g. CWMT in the paper config) fails in its
    # download job with its instructions, so that the paper DAG still dry-runs.
    used = {src for ds in DATASETS.values() for src in ds.get("sources", [])}
    for name in sorted(used & set(config.get("sources", {}))):
        src = config["sources"][name]
        if src.get("type") == "local" and src.get("path") and not Path(src["path"]).expanduser().is_file():
            errors.append(f"sources.{name}.path: local file {src['path']} not found; "
                          + (src.get("instructions") or "fix the path, or set it to null until you have the file"))
    if errors:
        raise ValueError("invalid config (fix these before anything runs):\n  " + "\n  ".join(errors))


_check_references()


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


def model_spec(model):
    return MODELS[model]


def arch(model):
    return MODELS[model]["arch"]


def default_decoding(model):
    return MODELS[model].get("decoding") or DEFAULT_DECODING.get(arch(model), "argmax")


def decoding_name(model, decoding):
    return default_decoding(model) if decoding == "default" else decoding


def needs_sqs(model):
    """AEQA models start from the pre-aligned codebook unless ``sqs_init: random``."""
    return arch(model) in ("aeqa_nat", "aeqa_dat") and MODELS[model].get("sqs_init", "pretrained") == "pretrained"


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


def codebook_size(model):
    return int(MODELS[model].get("codebook_size", 2048))


def model_width(model):
    size = MODELS[model]["size"]
    sizes = {"base": 512, "big": 1024, "tiny": 64}
    return int(MODELS[model].get("embed_dim", config.get("model_sizes", {}).get(size, {}).get("embed_dim", sizes.get(size, 512))))


def train_spec(model, dataset=None):
    """training section, overlaid by the dataset's `training:`, the model's `training:`
    and the dataset's `model_training.<model>` (aeqa_model.cluster.train_spec)."""
    return cluster.train_spec(config, model, dataset)


def jq(obj):
    """JSON for a shell argument (Snakemake's :q quoting does the shell escaping)."""
    return json.dumps(obj, sort_keys=True)


def resources_for(rule_name, dataset=None):
    """Per-stage resources from config: resources.default overlaid by resources.<stage>,
    overlaid by the dataset's own datasets.<dataset>.resources.<stage> when given."""
    return cluster.stage_resources(config, rule_name, dataset)


def res(rule_name, key, fallback):
    """A stage's resource, the same for every job (no per-dataset value)."""
    return resources_for(rule_name).get(key, fallback)


def _wc(wildcards, name):
    return getattr(wildcards, name, None)


def job_res(stage, key, fallback):
    """A stage's resource for one job: per-dataset value > resources.<stage> >
    resources.default > fallback (a function of the job's wildcards)."""

    def value(wildcards):
        return resources_for(stage, _wc(wildcards, "dataset")).get(key, fallback)

    return value


def job_runtime(stage, fallback):
    """SLURM runtime (minutes) of one job; `runtime: throughput` on a training stage
    follows from max_updates, tokens per update and the architecture's tokens/s
    (aeqa_model.cluster.training_budget, docs/cluster.md)."""

    def value(wildcards):
        ds, model = _wc(wildcards, "dataset"), _wc(wildcards, "model")
        runtime = cluster.runtime_minutes(config, stage, ds, model, fallback)
        before = resources_for(stage, ds).get("signal_before_s")
        if before and int(before) >= 60 * runtime:
            where = f"datasets.{ds}.resources.{stage}" if "signal_before_s" in (
                (DATASETS.get(ds, {}).get("resources") or {}).get(stage) or {}) else f"resources.{stage}"
            raise ValueError(f"{where}.signal_before_s ({before} s) must be shorter than the job's runtime "
                             f"({runtime} min{', from throughput' if resources_for(stage, ds).get('runtime') == 'throughput' else ''})")
        return runtime

    return value


def job_gpu(stage):
    """GPUs of one job; training jobs also check that their GPUs x max_tokens fit the
    dataset's tokens per update (effective_batch_tokens)."""

    def value(wildcards):
        ds, model = _wc(wildcards, "dataset"), _wc(wildcards, "model")
        if stage in cluster.TRAIN_STAGES and ds and model:
            problem = cluster.check_batch(config, stage, ds, model)
            if problem:
                raise ValueError(problem)
        return int(resources_for(stage, ds).get("gpu", 0) or 0)

    return value


def stage_resources(stage, mem_mb=4000, runtime=60, cpus=None, gpu=False):
    """Every resource a rule of `stage` declares, per job (per-dataset values win):
    mem_mb, runtime, cpus_per_task, gpu (GPU stages), and the SLURM-only keys."""
    out = {"mem_mb": job_res(stage, "mem_mb", mem_mb), "runtime": job_runtime(stage, runtime),
           "cpus_per_task": job_res(stage, "cpus_per_task", cpus or config.get("threads", 1))}
    if gpu:
        # tasks_per_gpu 0: one task per job, whatever its GPUs (torchrun starts the
        # processes). snakemake-executor-plugin-slurm 2.6 otherwise adds
        # --ntasks-per-gpu=1, i.e. GPUs x cpus_per_task CPUs per job (2.8 adds nothing).
        out = {"gpu": job_gpu(stage), "tasks_per_gpu": 0, **out}
    out.update(slurm_resources(stage))
    return out


def stage_threads(stage, cpus=None):
    """A rule's threads: its cpus_per_task (per dataset, as the resources)."""
    return job_res(stage, "cpus_per_task", cpus or config.get("threads", 1))


def _slurm_extra(stage, wildcards):
    table = resources_for(stage, _wc(wildcards, "dataset"))
    value = table.get("slurm_extra", "")
    if table.get("signal_before_s"):
        # SIGTERM to the job's steps (no "B:") this long before the time limit. The
        # step runs Snakemake (which waits for its running job on SIGTERM) and the
        # trainer, exec'd by the rule's shell (TRAIN_SHELL): it checkpoints and exits
        # 75, and the profile's retries resubmit the job, which resumes. Not USR1:
        # it kills the step's Snakemake process, and the step's processes with it,
        # possibly mid-checkpoint. Not B:USR1: it kills the batch shell, ending the
        # job; the trainer then only has KillWait to save. See docs/cluster.md.
        # (That the signal comes before the time limit is checked by job_runtime.)
        value = f"{value} --signal=TERM@{int(table['signal_before_s'])}"
    return value.strip() or None


SLURM_KEYS = ("slurm_partition", "constraint", "gpu_model", "slurm_extra")


def slurm_resources(rule_name):
    """Resources only the SLURM executor reads, per job (resources.default overlaid by
    resources.<stage> and the dataset's own datasets.<name>.resources.<stage>):
    partition, GPU model, node constraint, extra sbatch flags with the time-limit
    signal. A key no table sets is left out, so the profile's defaults apply; a
    job whose tables do not set a key the stage declares gets none (None drops it)."""
    tables = [resources_for(rule_name)] + [resources_for(rule_name, ds) for ds in DATASETS]
    keys = {k for t in tables for k, v in t.items() if v and (k in SLURM_KEYS or k == "signal_before_s")}
    out = {}
    if "slurm_partition" in keys:
        out["slurm_partition"] = lambda wc: str(resources_for(rule_name, _wc(wc, "dataset")).get("slurm_partition", "")) or None
    if "constraint" in keys:  # sbatch -C (slurm_extra may not carry it)
        out["constraint"] = lambda wc: resources_for(rule_name, _wc(wc, "dataset")).get("constraint") or None
    if "gpu_model" in keys:  # sbatch --gpus=<model>:<gpu>
        out["gpu_model"] = lambda wc: (resources_for(rule_name, _wc(wc, "dataset")).get("gpu_model") or None
                                       if int(resources_for(rule_name, _wc(wc, "dataset")).get("gpu", 0) or 0) > 0
                                       else None)
    if "slurm_extra" in keys or "signal_before_s" in keys:
        out["slurm_extra"] = lambda wc: _slurm_extra(rule_name, wc)
    return out


def _check_resources():
    """Resource settings that would only fail at submission (or silently do the wrong
    thing) are errors at start-up."""
    errors = []
    stages = set(config.get("resources") or {}) - {"default"}
    for name, ds in DATASETS.items():
        stages |= set(ds.get("resources") or {})
    for stage in sorted(stages):
        base = resources_for(stage)
        for ds in [None, *DATASETS]:
            table = resources_for(stage, ds)
            where = f"datasets.{ds}.resources.{stage}" if ds else f"resources.{stage}"
            runtime, before = table.get("runtime"), table.get("signal_before_s")
            if runtime == "throughput" and stage not in cluster.TRAIN_STAGES:
                errors.append(f"{where}.runtime: 'throughput' is only for the training stages "
                              f"{', '.join(cluster.TRAIN_STAGES)}")
            elif runtime == "throughput" and not (config.get("throughput") or {}).get("tokens_per_s"):
                errors.append(f"{where}.runtime: 'throughput' needs the config's throughput.tokens_per_s")
            elif isinstance(runtime, int) and before and int(before) >= 60 * runtime:
                errors.append(f"{where}.signal_before_s ({before} s) must be shorter than its runtime ({runtime} min)")
            if ds and table.get("slurm_partition") and not base.get("slurm_partition"):
                # a job of another dataset would otherwise drop the profile's default partition
                errors.append(f"{where}.slurm_partition: set resources.{stage}.slurm_partition (or "
                              f"resources.default's) too, for the other datasets' {stage} jobs")
    if errors:
        raise ValueError("invalid config (fix these before anything runs):\n  " + "\n  ".join(errors))


_check_resources()


# ------------------------------------------------------------- data paths --
def data_dir(dataset):
    return f"{RESULTS}/data/{dataset}"


def model_dataset(dataset):
    """The dataset whose models, BPE codes and dictionary serve ``dataset``."""
    return DATASETS[dataset].get("evaluation_of", dataset)


def dict_path(dataset):
    return f"{data_dir(model_dataset(dataset))}/bin/dict.txt"


def splits_of(dataset):
    return ["test"] if dataset in EVAL_ONLY else ["train", "valid", "test"]


def text_files(dataset, stage):
    """Every text file of a stage (tok or bpe) of a dataset, extra references included."""
    files = [f"{data_dir(dataset)}/{stage}/{s}.{l}" for s in splits_of(dataset) for l in langs(dataset)]
    extra = DATASETS[dataset].get("extra_references")
    if extra:
        files += [f"{data_dir(dataset)}/{stage}/test.ref{i}.{extra['lang']}" for i in range(1, extra["count"] + 1)]
    return files


def extra_reference_files(dataset, stage="tok"):
    extra = DATASETS[dataset].get("extra_references")
    if not extra:
        return []
    return [f"{data_dir(dataset)}/{stage}/test.ref{i}.{extra['lang']}" for i in range(1, extra["count"] + 1)]


def bin_prefix(dataset, split, lang):
    return f"{data_dir(dataset)}/bin/{split}.{lang}"


def data_of(wc):
    """train_teacher has no {data} wildcard: the teacher always learns from raw data."""
    return getattr(wc, "data", "raw")


def train_prefixes(wc):
    """Binarized training pair for (dataset, direction, data)."""
    src, tgt = src_tgt(wc.direction)
    if data_of(wc) == "kd":
        base = f"{data_dir(wc.dataset)}/kd/{wc.direction}/bin/train"
        return f"{base}.src", f"{base}.tgt"
    return bin_prefix(wc.dataset, "train", src), bin_prefix(wc.dataset, "train", tgt)


def train_inputs(wc):
    inputs = {"binarized": f"{data_dir(wc.dataset)}/bin/report.json"}
    if data_of(wc) == "kd":
        inputs["kd"] = f"{data_dir(wc.dataset)}/kd/{wc.direction}/bin/report.json"
    if needs_sqs(wc.model):
        inputs["sqs"] = model_sqs_path(wc.dataset, wc.model)
    return inputs


def sqs_path(dataset, k, dim, align_updates=None):
    """The pre-aligned codebook; a model entry's ``sqs_align_updates`` asks for a
    pre-alignment of its own length (the ablation of a longer pre-alignment)."""
    variant = f"_A{int(align_updates)}" if align_updates else ""
    return f"{RESULTS}/sqs/{dataset}/K{k}_D{dim}{variant}/sqs.pt"


def model_sqs_path(dataset, model):
    return sqs_path(dataset, codebook_size(model), model_width(model), MODELS[model].get("sqs_align_updates"))


def model_path(dataset, direction, data, model):
    return f"{RESULTS}/models/{model_dataset(dataset)}/{direction}/{data}/{model}/model.pt"


def teacher_path(wc):
    return model_path(wc.dataset, wc.direction, "raw", TEACHER)


def decode_dir(dataset, direction, data, model, decoding):
    return f"{RESULTS}/decode/{dataset}/{direction}/{data}/{model}/{decoding}"


def metrics_path(dataset, direction, data, model, decoding):
    return f"{RESULTS}/eval/{dataset}/{direction}/{data}/{model}/{decoding_name(model, decoding)}/metrics.json"


# ------------------------------------------------------------ grid / paper --
def output_cells(name):
    """Every (dataset, direction, data, model, decoding) cell an output needs."""
    cells = []
    for block in config.get("outputs", {}).get(name, {}).get("blocks", []):
        for ds in block["datasets"]:
            for direction in block.get("directions") or DATASETS[ds]["directions"]:
                for data in block.get("data", ["raw"]):
                    for model in block["models"]:
                        for dec in block.get("decodings", ["default"]):
                            cells.append((ds, direction, data, model, decoding_name(model, dec)))
    return sorted(set(cells))


def output_metrics(name):
    return [metrics_path(*cell) for cell in output_cells(name)]


def output_kind(name):
    return config["outputs"][name].get("kind", "figure" if name.startswith("figure") else "table")


def paper_file(name):
    suffix = "md" if output_kind(name) == "table" else "png"
    return f"{RESULTS}/paper/{name}.{suffix}"


def trained_models():
    """model.pt of every training run the outputs need, the teacher of each pair included
    (evaluation-only datasets map to the dataset their models are trained on)."""
    runs = {(model_dataset(ds), di, data, mo) for name in config.get("outputs", {})
            for ds, di, data, mo, _ in output_cells(name)}
    runs |= {(ds, di, "raw", TEACHER) for ds, di, _, _ in list(runs)}
    return sorted(model_path(*run) for run in runs)


def paper_targets():
    names = list(config.get("outputs", {}))
    targets = [paper_file(n) for n in names]
    if names:
        targets += [f"{RESULTS}/paper/README.md", f"{RESULTS}/paper/learning_curves.png"]
    return targets


def launcher(resources):
    """Single process on CPU or 1 GPU; torchrun with one process per GPU otherwise.
    A list of words: the rule's shell quotes each (`{params.launcher:q}`)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus)]
    return [PYTHON]


def train_params(wc):
    src, tgt = train_prefixes(wc)
    s, t = src_tgt(wc.direction)
    return {
        "model_spec": jq(model_spec(wc.model)),
        "train_spec": jq(train_spec(wc.model, wc.dataset)),
        "sizes": jq(size_entry(wc.model)),
        "dict": f"{data_dir(wc.dataset)}/bin/dict.txt",
        "train_src": src,
        "train_tgt": tgt,
        "valid_src": bin_prefix(wc.dataset, "valid", s),
        "valid_tgt": bin_prefix(wc.dataset, "valid", t),
        "sqs": ["--sqs-init", model_sqs_path(wc.dataset, wc.model)] if needs_sqs(wc.model) else [],
    }


# The train rules share this command. Exit code 75 = interrupted after a
# checkpoint (SLURM time-limit signal): the rerun resumes from checkpoint_last.pt.
# `exec`: the trainer (or torchrun) replaces the shell, so a SIGTERM sent to the
# job's processes reaches it without killing a shell in between. Every rule's shell
# line `exec`s its one program and quotes every path with `:q` (issue 18).
TRAIN_SHELL = (
    "exec {params.launcher:q} -m aeqa_model.train.cli --model-spec {params.p[model_spec]:q}"
    " --train-spec {params.p[train_spec]:q} --sizes {params.p[sizes]:q} --dict {params.p[dict]:q}"
    " --train-src {params.p[train_src]:q} --train-tgt {params.p[train_tgt]:q}"
    " --valid-src {params.p[valid_src]:q} --valid-tgt {params.p[valid_tgt]:q} {params.p[sqs]:q}"
    " --out-dir {params.out_dir:q} --output {output.model:q} --seed {params.seed} --device {params.device:q}"
    " --threads {threads} --config-sha256 {params.config_sha:q} > {log:q} 2>&1"
)


# ----------------------------------------------- stage input functions --
def shard_count():
    return int(config["distill"]["shards"])


def decode_inputs(wc):
    inputs = {"model": model_path(wc.dataset, wc.direction, wc.data, wc.model),
              "binarized": f"{data_dir(wc.dataset)}/bin/report.json",
              "at_reference": teacher_path(wc)}
    if DECODINGS[wc.decoding].get("strategy") == "npd" and DECODINGS[wc.decoding].get("rerank", "teacher") == "teacher":
        inputs["teacher"] = teacher_path(wc)
    return inputs


def baseline_cell(wc):
    """Significance baseline: evaluate.significance_baseline on the same data (none for itself)."""
    base = config["evaluate"].get("significance_baseline")
    if not base or base == wc.model or base not in MODELS:
        return None
    return decode_dir(wc.dataset, wc.direction, wc.data, base, default_decoding(base))


def _reads_metric(obj, metric):
    """Whether an output spec reads `metric` anywhere (defaults, columns, rows, series)."""
    if isinstance(obj, dict):
        return obj.get("metric") == metric or any(_reads_metric(v, metric) for v in obj.values())
    if isinstance(obj, list):
        return any(_reads_metric(v, metric) for v in obj)
    return False


_MULTI_REFERENCE_CELLS = None


def multi_reference_cells():
    """The cells whose metrics.json carries a multi_reference score: those of the
    outputs that read it (Table 4), in a direction the multi-reference set has
    (its references are German: EN-DE only, never DE-EN)."""
    global _MULTI_REFERENCE_CELLS
    if _MULTI_REFERENCE_CELLS is None:
        cells = set()
        for name, spec in config.get("outputs", {}).items():
            if _reads_metric(spec, "multi_reference"):
                for cell in output_cells(name):
                    multi = DATASETS[cell[0]].get("multi_reference")
                    if multi and cell[1] in DATASETS[multi]["directions"]:
                        cells.add(cell)
        _MULTI_REFERENCE_CELLS = cells
    return _MULTI_REFERENCE_CELLS


def evaluate_inputs(wc):
    d = decode_dir(wc.dataset, wc.direction, wc.data, wc.model, wc.decoding)
    inputs = {"tok": f"{d}/hyp.tok", "detok": f"{d}/hyp.detok", "speed": f"{d}/speed.json",
              "prepared": f"{data_dir(wc.dataset)}/tok/report.json"}
    if (wc.dataset, wc.direction, wc.data, wc.model, wc.decoding) in multi_reference_cells():
        # Table 4: the same model and decoding on the multi-reference set
        multi = DATASETS[wc.dataset]["multi_reference"]
        inputs["multi_reference"] = (f"{RESULTS}/eval/{multi}/{wc.direction}/{wc.data}/{wc.model}/"
                                     f"{wc.decoding}/metrics.json")
    base = baseline_cell(wc)
    if base:
        inputs["baseline"] = f"{base}/hyp.tok"
    return inputs


def paper_outputs(name):
    base = f"{RESULTS}/paper/{name}"
    if output_kind(name) == "table":
        return {"md": f"{base}.md", "tex": f"{base}.tex", "csv": f"{base}.csv"}
    return {"png": f"{base}.png", "pdf": f"{base}.pdf"}


def binarize_inputs(wc):
    inputs = {"done": f"{data_dir(wc.dataset)}/bpe/done.json"}
    if wc.dataset in EVAL_ONLY:
        inputs["parent"] = f"{data_dir(model_dataset(wc.dataset))}/bin/report.json"
    return inputs
