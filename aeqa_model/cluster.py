"""What a job asks the cluster for, from the config alone (no Snakemake needed).

Used by the workflow (``workflow/rules/common.smk``; ``aeqa_model.config`` checks
them at start-up) for every job's resources and by ``scripts/gpu_hours.py`` for
the GPU-hours a table costs, so that the two always agree.

* Resources of a stage: ``resources.default`` overlaid by ``resources.<stage>``,
  overlaid by the dataset's own ``datasets.<name>.resources.<stage>``.
* Gradient accumulation: the trainer's own rule, the one function
  ``aeqa_model.train.settings.update_freq`` (``Trainer.update_freq`` calls it too),
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

# Micro-batches per update (cluster.update_freq): the trainer's own function, not a copy.
from aeqa_model.train.settings import update_freq

TRAIN_STAGES = ("train_teacher", "train_nat")
# A training job may see at most this much more than effective_batch_tokens per
# update (the rounding of accumulation to whole micro-batches); more is a config error.
BATCH_TOLERANCE = 1.25


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


# SLURM-only resources a stage may set (the SLURM executor reads them, others ignore them).
SLURM_KEYS = ("slurm_partition", "constraint", "gpu_model", "slurm_extra")


def slurm_keys(config: dict, stage: str) -> set[str]:
    """The SLURM keys (and signal_before_s) any table of the stage sets: the stage's own
    and each dataset's. A key no table sets is left out, so the profile's default applies."""
    tables = [stage_resources(config, stage)] + [stage_resources(config, stage, ds) for ds in config["datasets"]]
    return {k for t in tables for k, v in t.items() if v and (k in SLURM_KEYS or k == "signal_before_s")}


def slurm_extra(config: dict, stage: str, dataset: str | None) -> str | None:
    """A job's extra sbatch flags: slurm_extra, and the time-limit signal.

    SIGTERM to the job's steps (no "B:") signal_before_s before the time limit. The
    step runs Snakemake (which waits for its running job on SIGTERM) and the
    trainer, exec'd by the rule's shell (TRAIN_SHELL): it checkpoints and exits
    75, and the profile's retries resubmit the job, which resumes. Not USR1:
    it kills the step's Snakemake process, and the step's processes with it,
    possibly mid-checkpoint. Not B:USR1: it kills the batch shell, ending the
    job; the trainer then only has KillWait to save. See docs/cluster.md.
    (That the signal comes before the time limit is checked by signal_problem.)"""
    table = stage_resources(config, stage, dataset)
    value = table.get("slurm_extra", "")
    if table.get("signal_before_s"):
        value = f"{value} --signal=TERM@{int(table['signal_before_s'])}"
    return value.strip() or None


def signal_problem(config: dict, stage: str, dataset: str | None, runtime: int) -> str | None:
    """A problem when a job's time-limit signal would not come before its runtime ends."""
    table = stage_resources(config, stage, dataset)
    before = table.get("signal_before_s")
    if not (before and int(before) >= 60 * runtime):
        return None
    own = ((config["datasets"].get(dataset, {}).get("resources") or {}).get(stage) or {})
    where = f"datasets.{dataset}.resources.{stage}" if "signal_before_s" in own else f"resources.{stage}"
    return (f"{where}.signal_before_s ({before} s) must be shorter than the job's runtime "
            f"({runtime} min{', from throughput' if table.get('runtime') == 'throughput' else ''})")


def launcher(python: str, gpus: int) -> list[str]:
    """The program a GPU stage's job runs: ``python`` on CPU or 1 GPU; torchrun with
    one process per GPU otherwise. A list of words (the rule quotes each)."""
    if gpus > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus)]
    return [python]


def _wc(wildcards, name: str):
    return getattr(wildcards, name, None)


def rule_threads(config: dict, stage: str, cpus: int):
    """A rule's threads, per job (a function of its wildcards): its cpus_per_task."""
    return lambda wc: stage_resources(config, stage, _wc(wc, "dataset")).get("cpus_per_task", cpus)


def rule_resources(config: dict, stage: str, mem_mb: int, runtime: int, cpus: int, gpu: bool = False) -> dict:
    """Every resource a rule of ``stage`` declares, each a function of a job's wildcards
    (the dataset's own datasets.<name>.resources.<stage> > resources.<stage> >
    resources.default > the given fallback): mem_mb, runtime, cpus_per_task, gpu (GPU
    stages), and the SLURM-only keys some table of the stage sets."""

    def table(wc):
        return stage_resources(config, stage, _wc(wc, "dataset"))

    def job_runtime(wc):
        # `runtime: throughput` on a training stage: from max_updates, tokens per update
        # and the architecture's tokens/s (training_budget, docs/cluster.md)
        minutes = runtime_minutes(config, stage, _wc(wc, "dataset"), _wc(wc, "model"), runtime)
        problem = signal_problem(config, stage, _wc(wc, "dataset"), minutes)
        if problem:
            raise ValueError(problem)
        return minutes

    def job_gpu(wc):
        # training jobs also check that their GPUs x max_tokens fit the dataset's
        # tokens per update (effective_batch_tokens)
        ds, model = _wc(wc, "dataset"), _wc(wc, "model")
        problem = check_batch(config, stage, ds, model) if stage in TRAIN_STAGES and ds and model else None
        if problem:
            raise ValueError(problem)
        return int(table(wc).get("gpu", 0) or 0)

    # tasks_per_gpu 0: one task per job, whatever its GPUs (torchrun starts the processes).
    # snakemake-executor-plugin-slurm 2.6 otherwise adds --ntasks-per-gpu=1, i.e. GPUs x
    # cpus_per_task CPUs per job (2.8 adds nothing).
    out = {"gpu": job_gpu, "tasks_per_gpu": 0} if gpu else {}
    out.update(mem_mb=lambda wc: table(wc).get("mem_mb", mem_mb), runtime=job_runtime,
               cpus_per_task=rule_threads(config, stage, cpus))
    # SLURM-only: a key no table of the stage sets is left out, so the profile's default
    # applies; a job whose tables do not set a key the stage declares gets None.
    keys = slurm_keys(config, stage)
    if "slurm_partition" in keys:
        out["slurm_partition"] = lambda wc: str(table(wc).get("slurm_partition", "")) or None
    if "constraint" in keys:  # sbatch -C (slurm_extra may not carry it)
        out["constraint"] = lambda wc: table(wc).get("constraint") or None
    if "gpu_model" in keys:  # sbatch --gpus=<model>:<gpu>
        out["gpu_model"] = lambda wc: (table(wc).get("gpu_model") or None) if int(table(wc).get("gpu", 0) or 0) > 0 else None
    if "slurm_extra" in keys or "signal_before_s" in keys:
        out["slurm_extra"] = lambda wc: slurm_extra(config, stage, _wc(wc, "dataset"))
    return out
