"""What a job asks the cluster for, from the config alone (no Snakemake needed).

Used by the workflow (``workflow/rules/common.smk``) for every job's resources and
by ``scripts/gpu_hours.py`` for the GPU-hours a table costs, so that the two
always agree.

* Resources of a stage: ``resources.default`` overlaid by ``resources.<stage>``,
  overlaid by the dataset's own ``datasets.<name>.resources.<stage>``.
* Gradient accumulation: the trainer's rule (``Trainer.update_freq``),
  ``ceil(effective_batch_tokens / (max_tokens x processes))``, one process per GPU.
* Training runtime (``runtime: throughput``, docs/cluster.md)::

      tokens_per_update = update_freq x processes x max_tokens
      hours             = max_updates x tokens_per_update / (gpus x tokens_per_s) / 3600
      runtime (minutes) = ceil(60 x safety_factor x hours), at most max_runtime

  ``tokens_per_s`` is the per-GPU training throughput of the model's architecture
  (``throughput.tokens_per_s``); for the DAG architectures it is given at the
  graph size factor ``throughput.graph_factor[arch]`` and scaled by L_ref / L.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

TRAIN_STAGES = ("train_teacher", "train_nat")
# A training job may see at most this much more than effective_batch_tokens per
# update (the rounding of accumulation to whole micro-batches); more is a config error.
BATCH_TOLERANCE = 1.25


def merge_paper_grid(cfg: dict, root: Path) -> dict:
    """The table/figure grid lives in its own file (config key paper_grid); it may add
    sweep models and decodings, which join the base ones."""
    grid_path = cfg.get("paper_grid")
    if not grid_path:
        return cfg
    path = Path(grid_path) if Path(grid_path).is_absolute() else Path(root) / grid_path
    if not path.exists():
        raise ValueError(f"config key paper_grid: {path} does not exist")
    grid = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for section in ("models", "decodings"):
        extra = grid.get(section) or {}
        clash = sorted(set(extra) & set(cfg.get(section, {})) - {k for k in extra if extra[k] == cfg[section].get(k)})
        if clash:
            raise ValueError(f"{path}: {section} {clash} are already defined in the config with other values")
        cfg.setdefault(section, {}).update(extra)
    cfg["outputs"] = grid.get("outputs", {})
    return cfg


def apply_model_defaults(cfg: dict) -> list[str]:
    """``model_defaults: {option: value}``: every model whose architecture takes the
    option and does not set it gets the value (so that settings the paper does not
    give, e.g. softcopy_tau, are written once and reach every model, grid sweeps
    included). Returns problems (an option no architecture takes)."""
    from aeqa_model.models import check_options

    problems = []
    for key, value in (cfg.get("model_defaults") or {}).items():
        takers = [name for name, spec in cfg.get("models", {}).items()
                  if not check_options(name, {"arch": spec.get("arch"), key: value})]
        if not takers:
            problems.append(f"model_defaults.{key}: no model's architecture takes this option")
        for name in takers:
            cfg["models"][name].setdefault(key, value)
    return problems


def load_config(path: str | Path, root: Path | None = None) -> dict:
    """A config file as the workflow sees it (its paper grid merged in, model_defaults applied)."""
    path = Path(path)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = merge_paper_grid(cfg, root or Path(__file__).resolve().parent.parent)
    apply_model_defaults(cfg)
    return cfg


def stage_resources(config: dict, stage: str, dataset: str | None = None) -> dict:
    """resources.default, overlaid by resources.<stage>, overlaid by datasets.<dataset>.resources.<stage>."""
    table = config.get("resources") or {}
    merged = dict(table.get("default") or {})
    merged.update(table.get(stage) or {})
    if dataset and dataset in config.get("datasets", {}):
        merged.update(((config["datasets"][dataset].get("resources") or {}).get(stage)) or {})
    return merged


def train_spec(config: dict, model: str, dataset: str | None = None) -> dict:
    """training section, overlaid by the dataset's `training:`, the model's `training:`
    and the dataset's `model_training.<model>` (a model's settings on that dataset only)."""
    spec = dict(config["training"])
    if dataset:
        spec.update(config["datasets"][dataset].get("training", {}))
    spec.update(config["models"][model].get("training", {}))
    if dataset:
        spec.update((config["datasets"][dataset].get("model_training") or {}).get(model, {}))
    return spec


def processes(gpus: int) -> int:
    """Training processes of a job: one per GPU (torchrun), one on CPU or 1 GPU."""
    return max(1, int(gpus or 0))


def update_freq(spec: dict, world: int) -> int:
    """Micro-batches per update, exactly as ``Trainer.update_freq`` derives it."""
    target = spec.get("effective_batch_tokens")
    if target:
        return max(1, math.ceil(int(target) / (int(spec["max_tokens"]) * world)))
    return int(spec.get("update_freq", 1))


def tokens_per_update(spec: dict, gpus: int) -> int:
    """The token budget of one update: micro-batches x processes x max_tokens."""
    world = processes(gpus)
    return update_freq(spec, world) * world * int(spec["max_tokens"])


def check_batch(config: dict, stage: str, dataset: str, model: str) -> str | None:
    """A problem when a job's smallest possible update exceeds effective_batch_tokens
    (too many GPUs x max_tokens for the dataset's batch), else None."""
    spec = train_spec(config, model, dataset)
    target = spec.get("effective_batch_tokens")
    if not target:
        return None
    gpus = int(stage_resources(config, stage, dataset).get("gpu", 0) or 0)
    per_update = tokens_per_update(spec, gpus)
    if per_update > BATCH_TOLERANCE * int(target):
        return (f"{stage} {dataset}/{model}: {processes(gpus)} GPU process(es) x max_tokens {spec['max_tokens']} "
                f"= {per_update} tokens per update, but effective_batch_tokens is {target}; lower "
                f"datasets.{dataset}.resources.{stage}.gpu (or the training max_tokens)")
    return None


def model_tokens_per_s(config: dict, model: str) -> float:
    """Per-GPU training tokens/s of a model from throughput.tokens_per_s (by architecture)."""
    throughput = config.get("throughput") or {}
    spec = config["models"][model]
    arch = spec["arch"]
    figures = throughput.get("tokens_per_s") or {}
    if arch not in figures:
        raise ValueError(f"throughput.tokens_per_s: no figure for architecture {arch!r} (model {model}); "
                         f"add one (per-GPU training tokens/s, docs/cluster.md)")
    value = float(figures[arch])
    ref = (throughput.get("graph_factor") or {}).get(arch)
    if ref and spec.get("graph_factor"):
        value *= float(ref) / float(spec["graph_factor"])
    return value


def training_budget(config: dict, stage: str, dataset: str, model: str) -> dict:
    """The runtime formula for one training job (module docstring), with its parts."""
    table = stage_resources(config, stage, dataset)
    spec = train_spec(config, model, dataset)
    gpus = int(table.get("gpu", 0) or 0)
    throughput = config.get("throughput") or {}
    safety = float(throughput.get("safety_factor", 1.0))
    per_update = tokens_per_update(spec, gpus)
    tps = model_tokens_per_s(config, model)
    hours = int(spec["max_updates"]) * per_update / (processes(gpus) * tps) / 3600
    minutes = max(1, math.ceil(60 * safety * hours))
    cap = table.get("max_runtime")
    return {
        "gpus": gpus,
        "update_freq": update_freq(spec, processes(gpus)),
        "tokens_per_update": per_update,
        "max_updates": int(spec["max_updates"]),
        "tokens_per_s": tps,
        "safety_factor": safety,
        "hours": hours,                                   # expected wall-clock on its GPUs
        "gpu_hours": hours * processes(gpus),             # expected, without the safety factor
        "reserved_gpu_hours": minutes / 60 * processes(gpus),
        "runtime_min": min(minutes, int(cap)) if cap else minutes,
        # SLURM jobs it takes: each stops signal_before_s before its limit and the next resumes
        "jobs": math.ceil(minutes / (int(cap) - int(table.get("signal_before_s", 0)) / 60)) if cap and minutes > int(cap) else 1,
    }


def runtime_minutes(config: dict, stage: str, dataset: str | None, model: str | None, fallback: int) -> int:
    """A job's SLURM runtime: the training formula when the stage says `runtime: throughput`."""
    table = stage_resources(config, stage, dataset)
    runtime = table.get("runtime", fallback)
    if runtime == "throughput":
        if stage not in TRAIN_STAGES or not (dataset and model):
            raise ValueError(f"resources.{stage}.runtime: 'throughput' is only for training stages {TRAIN_STAGES}")
        return training_budget(config, stage, dataset, model)["runtime_min"]
    return int(runtime)
