"""The workflow's config as the rules see it: loaded, merged and checked (no
Snakemake needed; tests/test_config.py).

``workflow/rules/common.smk`` calls :func:`load` once, at start-up::

    config = load(config, ROOT)

which merges the paper grid into the config (``paper_grid``), checks it against
the JSON schema (``workflow/schemas/config.schema.yaml``, with the model options',
the training settings' and the evaluate settings' schemas added from their
declarations; every violation on one line), gives every model the ``model_defaults``
its architecture takes, and checks what the config names (datasets and their recipe
options, sources, models, decodings, sizes, local paths) and its resources. Every
problem is raised as one ``ValueError`` whose message starts with ``invalid config``,
before any job runs.

What the loaded config says (model facts, the cells of each output, what one job
reads) is :mod:`aeqa_model.config_facts`'s.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from aeqa_model import cluster
from aeqa_model.config_facts import evaluation_only, size_table

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


# ------------------------------------------------------------------ loading --
def duplicate_keys(path: str | Path) -> list[str]:
    """Every key given twice in one mapping of a YAML (or JSON) file, one line each with
    its key path and lines. PyYAML (and Snakemake's --configfile loader, and json) keep
    the last value without a word: `lr` written twice under `training:` trained with
    whichever came last."""
    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return []  # unreadable or not YAML: the loader that reads it reports that
    problems: list[str] = []

    def walk(node, where: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: keys it brings may be overridden
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                name = f"{where}.{key}" if where else str(key)
                line = key_node.start_mark.line + 1
                if key in seen:
                    problems.append(f"{name}: given twice in {path} (lines {seen[key]} and {line}); delete one "
                                    f"(the last value would silently win)")
                else:
                    seen[key] = line
                walk(value_node, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{where}[{i}]")

    walk(root, "")
    return problems


def load_yaml(path: str | Path):
    """A YAML file's content; a key given twice in one mapping is an error (duplicate_keys)."""
    _invalid(duplicate_keys(path))
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def merge_paper_grid(cfg: dict, root: Path = ROOT) -> dict:
    """The table/figure grid lives in its own file (config key paper_grid), read with its
    layout resolved (paper/grid_file.py: the paper's layout, the run's dataset roles and
    overrides); it may add sweep models and decodings, which join the base ones. Merges
    in place and returns ``cfg``. A paper_grid or section of the wrong type is left to
    the schema check."""
    from aeqa_model.io import InputError
    from aeqa_model.paper.grid_file import read_grid

    grid_path = cfg.get("paper_grid")
    if not grid_path or not isinstance(grid_path, str):
        return cfg
    path = Path(grid_path) if Path(grid_path).is_absolute() else Path(root) / grid_path
    if not path.exists():
        raise ValueError(f"config key paper_grid: {path} does not exist")
    try:
        grid = read_grid(path, load_yaml, root)   # load_yaml: a key given twice is an error, in the layout too
    except InputError as err:  # the config's problems are ValueErrors (load's contract)
        raise ValueError(str(err)) from None
    for section in ("models", "decodings"):
        if not isinstance(cfg.get(section, {}), dict):
            continue
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
    """A config file as the workflow sees it (its paper grid merged in, model_defaults
    applied), without the checks of :func:`load` (scripts/gpu_hours.py)."""
    cfg = load_yaml(path)
    cfg = merge_paper_grid(cfg, root or ROOT)
    apply_model_defaults(cfg)
    return cfg


def load(cfg: dict, root: Path = ROOT, config_files=()) -> dict:
    """The workflow's start-up: refuse duplicate keys in the ``config_files`` Snakemake
    read (``workflow.configfiles``: --configfile and the Snakefile's default; Snakemake's
    own loader keeps the last of two values), merge the paper grid, check the schema
    (once), apply model_defaults, check references, settings and resources. Returns
    ``cfg`` (changed in place); raises ValueError("invalid config ...") naming every problem."""
    _invalid([problem for path in config_files for problem in duplicate_keys(path)])
    cfg = merge_paper_grid(cfg, root)
    check_schema(cfg)
    problems = apply_model_defaults(cfg)
    check_references(cfg, problems)
    check_resources(cfg)
    return cfg


def _invalid(errors: list[str]):
    if errors:
        raise ValueError("invalid config (fix these before anything runs):\n  " + "\n  ".join(errors))


# ------------------------------------------------------------------- schema --
def check_schema(cfg: dict, schema: Path = SCHEMA) -> None:
    """Validate against the JSON schema; every violation as one line naming its key.

    Snakemake's own ``validate`` reports only the first problem, buried under a
    dump of the schema and the whole config; this lists them all, briefly. (The
    schema sets no defaults, so Snakemake's ``validate`` would add nothing.)"""
    import jsonschema

    rules = with_declared_settings(with_model_options(yaml.safe_load(Path(schema).read_text(encoding="utf-8"))))
    errors = []
    for err in sorted(jsonschema.Draft202012Validator(rules).iter_errors(cfg), key=lambda e: list(e.absolute_path)):
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
                         f"the schema is {schema}):\n  " + "\n  ".join(errors))


def with_model_options(rules: dict) -> dict:
    """The schema with the architectures' options added from their declarations
    (aeqa_model/models/options.py): every option to ``$defs.model``'s properties
    (which option an arch takes is the typo check's, ``models.check_options``),
    and its schema to each option that ``model_defaults`` lists; and the architecture
    names of ``models.ARCHS`` wherever the schema takes one. Changes ``rules``."""
    from aeqa_model.models import ARCHS, model_class, option_schemas

    options = option_schemas()
    model = rules["$defs"]["model"]["properties"]
    clash = sorted(set(model) & set(options))
    if clash:
        raise ValueError(f"{SCHEMA}: $defs.model declares the model options {clash}; they are declared "
                         "once, in the model classes' Options (aeqa_model/models/options.py)")
    model.update(options)
    defaults = rules["properties"]["model_defaults"]["properties"]
    for key in defaults:
        defaults[key] = options[key]
    # The architecture names come from the one registry, models.ARCHS: a model entry's
    # arch, and the throughput table's keys (graph_factor: the archs that take one).
    model["arch"] = {"enum": sorted(ARCHS)}
    throughput = rules["properties"]["throughput"]["properties"]
    positive = {"type": "number", "exclusiveMinimum": 0}
    throughput["tokens_per_s"]["patternProperties"] = {f"^({'|'.join(sorted(ARCHS))})$": positive}
    graph_archs = sorted(a for a in ARCHS if "graph_factor" in model_class(a).Options.names())
    throughput["graph_factor"]["patternProperties"] = {f"^({'|'.join(graph_archs)})$": positive}
    return rules


def with_declared_settings(rules: dict) -> dict:
    """The schema with the sections declared in code filled in, as :func:`with_model_options`
    adds the models' options: ``$defs.training`` (the top-level ``training:``, a dataset's,
    a model's, ``model_training``'s) from ``train.settings.TrainingSettings``, and
    ``evaluate`` from ``metrics.settings.EvaluateSettings``. The schema file keeps an empty
    stub for each; a stub that declares keys is an error (they would be a second copy).
    Changes ``rules``."""
    from aeqa_model.metrics.settings import schema as evaluate_schema
    from aeqa_model.train.settings import schema as training_schema

    for section, name, declared_in, generated in (
            (rules["$defs"], "training", "aeqa_model/train/settings.py (TrainingSettings)", training_schema()),
            (rules["properties"], "evaluate", "aeqa_model/metrics/settings.py (EvaluateSettings)", evaluate_schema())):
        stub = section.get(name) or {}
        if stub.get("properties"):
            raise ValueError(f"{SCHEMA}: {name} declares the {name} settings {sorted(stub['properties'])}; "
                             f"they are declared once, in {declared_in}")
        section[name] = {**stub, **generated}
    return rules


# --------------------------------------------------------------- references --
def check_references(cfg: dict, problems: list[str] = ()) -> None:
    """Fail at start-up (before any job) when the config names things that do not
    exist. ``problems``: those found while loading (apply_model_defaults)."""
    from aeqa_model.data.recipes import recipe_problems
    from aeqa_model.decode import check_decoding
    from aeqa_model.metrics.neural import check_checkpoint_setting
    from aeqa_model.models import check_options

    datasets, models, decodings = cfg["datasets"], cfg["models"], cfg["decodings"]
    eval_only = evaluation_only(cfg)
    trainable = [d for d in datasets if d not in eval_only]
    sizes = size_table(cfg)
    errors = []
    for name, ds in datasets.items():
        errors.extend(recipe_problems(name, ds))
        for src in ds.get("sources", []):
            if src not in cfg.get("sources", {}):
                errors.append(f"datasets.{name}.sources: unknown source {src!r}")
        for direction in ds["directions"]:
            parts = direction.split("-")
            if len(parts) != 2 or set(parts) - set(ds["langs"]):
                errors.append(f"datasets.{name}.directions: {direction!r} is not a pair of {ds['langs']}")
    for name, decoding in decodings.items():
        errors.extend(check_decoding(name, decoding))
    for name, model in models.items():
        errors.extend(check_options(name, model))
        if model["size"] not in sizes:
            errors.append(f"models.{name}.size: unknown size {model['size']!r}")
        if model.get("decoding") and model["decoding"] not in decodings:
            errors.append(f"models.{name}.decoding: unknown decoding {model['decoding']!r}")
    for name in eval_only:
        parent = datasets[name]["evaluation_of"]
        if parent not in trainable:
            errors.append(f"datasets.{name}.evaluation_of: {parent!r} is not a trainable dataset")
    for name, ds in datasets.items():
        mr = ds.get("multi_reference")
        if mr and (mr not in eval_only or datasets[mr]["evaluation_of"] != name):
            errors.append(f"datasets.{name}.multi_reference: {mr!r} must be an evaluation_of: {name} dataset")
        elif mr and set(datasets[mr]["directions"]) - set(ds["directions"]):
            errors.append(f"datasets.{mr}.directions: {datasets[mr]['directions']} must be among "
                          f"datasets.{name}.directions {ds['directions']}")
    errors.extend(problems)
    for name, ds in datasets.items():
        for model in ds.get("model_training") or {}:
            if model not in models:
                errors.append(f"datasets.{name}.model_training: unknown model {model!r}")
    teacher = cfg["distill"]["teacher"]
    if teacher not in models:
        errors.append(f"distill.teacher: unknown model {teacher!r}")
    for out, spec in cfg.get("outputs", {}).items():
        for i, block in enumerate(spec.get("blocks", [])):
            for ds in block["datasets"]:
                if ds not in datasets:
                    errors.append(f"outputs.{out}.blocks[{i}].datasets: unknown dataset {ds!r}")
            for m in block["models"]:
                if m not in models:
                    errors.append(f"outputs.{out}.blocks[{i}].models: unknown model {m!r}")
            for dec in block.get("decodings", ["default"]):
                if dec != "default" and dec not in decodings:
                    errors.append(f"outputs.{out}.blocks[{i}].decodings: unknown decoding {dec!r}")
    baseline = cfg["evaluate"].get("significance_baseline")
    if baseline and baseline not in models:
        # A typo used to pass: every metrics.json then said "no baseline given".
        errors.append(f"evaluate.significance_baseline: unknown model {baseline!r}; set it to one of the models "
                      f"({', '.join(sorted(models))}) or to null to leave the significance test out")
    errors.extend(averaging_problems(cfg, trainable))
    errors.extend(device_problems(cfg))
    errors.extend(mbart_problems(cfg["pretrain_sqs"]))
    for key in ("comet_model", "bleurt_checkpoint"):
        problem = check_checkpoint_setting(key, cfg["evaluate"].get(key))
        if problem:
            errors.append(problem)
    # A local source whose path is set but wrong is a typo: say so now. One still at
    # `path: null` (not obtained yet, e.g. CWMT in the paper config) fails in its
    # download job with its instructions, so that the paper DAG still dry-runs.
    used = {src for ds in datasets.values() for src in ds.get("sources", [])}
    for name in sorted(used & set(cfg.get("sources", {}))):
        src = cfg["sources"][name]
        if src.get("type") == "local" and src.get("path") and not Path(src["path"]).expanduser().is_file():
            errors.append(f"sources.{name}.path: local file {src['path']} not found; "
                          + (src.get("instructions") or "fix the path, or set it to null until you have the file"))
    _invalid(errors)


def averaging_problems(cfg: dict, trainable: list[str]) -> list[str]:
    """training.average_last above training.keep_last, for any model on any dataset (the
    settings a training job reads: training, overlaid by the dataset's and the model's)."""
    from aeqa_model.train.settings import averaging_problem

    problems = {}
    general = averaging_problem(cfg["training"])
    if general:
        problems[f"training: {general}"] = None
    for dataset in trainable:
        for model in cfg["models"]:
            problem = averaging_problem(cluster.train_spec(cfg, model, dataset))
            if problem and problem != general:
                problems[f"training (of model {model} on dataset {dataset}, with its overrides): {problem}"] = None
    return list(problems)


def device_problems(cfg: dict) -> list[str]:
    """``device: cuda`` where no job can get a GPU: this machine has none and no stage's
    resources ask for one (with ``gpu:`` set, the jobs go to GPU nodes and the machine
    that submits them may have none). Each job used to die on "Torch not compiled with
    CUDA enabled", naming no key."""
    if cfg.get("device") != "cuda":
        return []
    tables = [cfg.get("resources") or {}] + [ds.get("resources") or {} for ds in cfg["datasets"].values()]
    if any(int((stage or {}).get("gpu", 0) or 0) > 0 for table in tables for stage in table.values()):
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return ["device: cuda, but torch sees no CUDA GPU on this machine and no stage's resources ask for one "
            "(resources.<stage>.gpu); set device: auto (the GPU where there is one) or cpu, or give the GPU "
            "stages gpu: 1 to run them on GPU nodes"]


def mbart_problems(sqs: dict) -> list[str]:
    """pretrain_sqs.encoder: mbart needs a complete local mBART directory: the files
    aeqa_model.pretrain_sqs.pretrain.check_mbart_dir needs (its tokenizer included), checked
    here so that a bad directory fails before any job."""
    if sqs["encoder"] != "mbart":
        return []
    if not sqs.get("mbart_path"):
        return ["pretrain_sqs.mbart_path: required when pretrain_sqs.encoder is mbart; set it to a local "
                "mbart-large-cc25 directory, or use encoder: embedded"]
    mbart = Path(sqs["mbart_path"]).expanduser()
    if not mbart.is_dir():
        return [f"pretrain_sqs.mbart_path: {sqs['mbart_path']} is not a directory; download "
                "mbart-large-cc25 there, or use encoder: embedded"]
    missing = [name for name in ("config.json", "sentencepiece.bpe.model") if not (mbart / name).is_file()]
    if not list(mbart.glob("*.bin")) + list(mbart.glob("*.safetensors")):
        missing.append("pytorch_model.bin or model.safetensors")
    if missing:
        return [f"pretrain_sqs.mbart_path: {mbart} is an incomplete mBART directory, missing "
                f"{', '.join(missing)}; copy the whole facebook/mbart-large-cc25 snapshot there"]
    return []


# ---------------------------------------------------------------- resources --
def check_resources(cfg: dict) -> None:
    """Resource settings that would only fail at submission (or silently do the wrong
    thing) are errors at start-up."""
    datasets = cfg["datasets"]
    errors = []
    stages = set(cfg.get("resources") or {}) - {"default"}
    for ds in datasets.values():
        stages |= set(ds.get("resources") or {})
    for stage in sorted(stages):
        base = cluster.stage_resources(cfg, stage)
        for ds in [None, *datasets]:
            table = cluster.stage_resources(cfg, stage, ds)
            where = f"datasets.{ds}.resources.{stage}" if ds else f"resources.{stage}"
            runtime, before = table.get("runtime"), table.get("signal_before_s")
            if runtime == "throughput" and stage not in cluster.TRAIN_STAGES:
                errors.append(f"{where}.runtime: 'throughput' is only for the training stages "
                              f"{', '.join(cluster.TRAIN_STAGES)}")
            elif runtime == "throughput" and not (cfg.get("throughput") or {}).get("tokens_per_s"):
                errors.append(f"{where}.runtime: 'throughput' needs the config's throughput.tokens_per_s")
            elif isinstance(runtime, int) and before and int(before) >= 60 * runtime:
                errors.append(f"{where}.signal_before_s ({before} s) must be shorter than its runtime ({runtime} min)")
            if ds and table.get("slurm_partition") and not base.get("slurm_partition"):
                # a job of another dataset would otherwise drop the profile's default partition
                errors.append(f"{where}.slurm_partition: set resources.{stage}.slurm_partition (or "
                              f"resources.default's) too, for the other datasets' {stage} jobs")
    _invalid(errors)
