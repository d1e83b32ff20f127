"""What a loaded config says, as the rules and the run's layout read it: the model facts
(a model's default decoding, codebook size, width, whether it starts from the pre-aligned
SQS or reads its target codes), the cells each paper output needs, and the part of the
config each job reads (so that editing another part reruns nothing of it).

Model facts come from the models themselves: a model's default decoding is its class's
``default_decoding``, its width follows the size table the trainer uses
(``models.transformer.SIZES`` overlaid by the config's ``model_sizes``). Loading and
checking the config is :mod:`aeqa_model.config`'s.
"""
from __future__ import annotations


# -------------------------------------------------------------- model facts --
def size_table(cfg: dict) -> dict:
    """Named model sizes: the built-in ones (models.transformer.SIZES), overlaid by
    the config's model_sizes (the trainer's table, models' build)."""
    from aeqa_model.models.transformer import SIZES

    return {**SIZES, **(cfg.get("model_sizes") or {})}


def default_decoding(spec: dict) -> str:
    """A model entry's decoding: its own ``decoding:``, else its class's default_decoding."""
    from aeqa_model.models import model_class

    return spec.get("decoding") or model_class(spec["arch"]).default_decoding


def codebook_size(spec: dict) -> int:
    """An AEQA model entry's codebook size K: its own, else its arch's default."""
    from aeqa_model.models import model_options

    return model_options(spec).codebook_size


def needs_sqs(spec: dict) -> bool:
    """Whether a model entry starts from the pre-aligned codebook: an arch with an SQS
    (its options declare ``sqs_init``) whose ``sqs_init`` is (by default) pretrained."""
    from aeqa_model.models import model_options

    return getattr(model_options(spec), "sqs_init", None) == "pretrained"


def reads_target_codes(spec: dict) -> bool:
    """Whether a model entry reads the pre-aligned encoder's target codes (an AEQA model
    with ``h_y_encoder: pretrained``, docs/method.md #26), at its declared default unless set."""
    from aeqa_model.models import model_options

    return getattr(model_options(spec), "h_y_encoder", None) == "pretrained"


def model_width(cfg: dict, spec: dict) -> int:
    """embed_dim of a model entry: its own, else its size's, else TransformerConfig's."""
    from aeqa_model.models.transformer import TransformerConfig

    size = size_table(cfg).get(spec["size"], {})
    return int(spec.get("embed_dim", size.get("embed_dim", TransformerConfig.embed_dim)))


def evaluation_only(cfg: dict) -> list[str]:
    """Evaluation-only datasets (evaluation_of: another dataset), in config order."""
    return [d for d, spec in cfg["datasets"].items() if spec.get("evaluation_of")]


# --------------------------------------------------------------------- grid --
def output_cells(cfg: dict, name: str) -> list[tuple[str, str, str, str, str]]:
    """Every (dataset, direction, data, model, decoding) cell an output needs, its
    ``default`` decodings resolved to each model's (sorted, without repeats)."""
    cells = set()
    for block in cfg.get("outputs", {}).get(name, {}).get("blocks", []):
        for ds in block["datasets"]:
            for direction in block.get("directions") or cfg["datasets"][ds]["directions"]:
                for data in block.get("data", ["raw"]):
                    for model in block["models"]:
                        for dec in block.get("decodings", ["default"]):
                            dec = default_decoding(cfg["models"][model]) if dec == "default" else dec
                            cells.add((ds, direction, data, model, dec))
    return sorted(cells)


def reads_metric(obj, metric: str) -> bool:
    """Whether an output spec reads `metric` anywhere (defaults, columns, rows, series)."""
    if isinstance(obj, dict):
        return obj.get("metric") == metric or any(reads_metric(v, metric) for v in obj.values())
    if isinstance(obj, list):
        return any(reads_metric(v, metric) for v in obj)
    return False


def multi_reference_cells(cfg: dict) -> set[tuple[str, str, str, str, str]]:
    """The cells whose metrics.json carries a multi_reference score: those of the
    outputs that read it (Table 4), in a direction the multi-reference set has
    (its references are German: EN-DE only, never DE-EN)."""
    datasets = cfg["datasets"]
    cells = set()
    for name, spec in cfg.get("outputs", {}).items():
        if reads_metric(spec, "multi_reference"):
            for cell in output_cells(cfg, name):
                multi = datasets[cell[0]].get("multi_reference")
                if multi and cell[1] in datasets[multi]["directions"]:
                    cells.add(cell)
    return cells


# ------------------------------------------------------ what one job reads --
# Each job's params hold only the settings it reads, so that editing another part
# of the config reruns nothing of it (tests/reliability/test_targeted_reruns.py).

# The keys of a dataset entry the download reads (aeqa_model.data.recipes): editing
# its prepare, bpe or training settings refetches nothing, and leaves the
# pre-alignment (which reads the downloaded orig/ text) alone.
DOWNLOAD_KEYS = ("recipe", "langs", "sources", "recipe_options")
# pretrain_sqs keys only the alignment stage reads: editing them leaves the
# (shared, expensive) denoising encoder alone.
ALIGN_ONLY_KEYS = ("align_updates", "alpha", "ema_decay", "batch_size", "align_denoise_weight")


def download_spec(dataset: dict) -> dict:
    """The keys of a dataset entry its download reads."""
    return {k: dataset[k] for k in DOWNLOAD_KEYS if k in dataset}


def encoder_stage_spec(cfg: dict) -> dict:
    """The pretrain_sqs settings the denoising-encoder stage reads."""
    return {k: v for k, v in cfg["pretrain_sqs"].items() if k not in ALIGN_ONLY_KEYS}


def size_entry(cfg: dict, spec: dict) -> dict:
    """The one ``model_sizes`` entry a model uses (none for the built-in sizes), so
    editing another size reruns nothing of this model."""
    sizes = cfg.get("model_sizes") or {}
    return {spec["size"]: sizes[spec["size"]]} if spec["size"] in sizes else {}


def model_seed(cfg: dict, spec: dict) -> int:
    """A model entry's own seed, else the config's."""
    return int(spec.get("seed", cfg["seed"]))
