"""Where every file of a run lives (no Snakemake needed; tests/test_layout.py).

The rules (``workflow/rules/common.smk``) declare their outputs with the patterns
of :data:`PATTERNS`, each written once, and their input functions fill the same
patterns in through :class:`RunLayout`, so an output and the inputs that name it
cannot drift apart. ``RunLayout`` also knows which files a dataset, a model and a
table or figure of the paper grid need.
"""
from __future__ import annotations

from aeqa_model import config_facts as facts

_D, _KD = "{RESULTS}/data/{dataset}", "{RESULTS}/data/{dataset}/kd/{direction}"
_CELL = "{dataset}/{direction}/{data}/{model}"
PATTERNS = {
    "data": _D,  # a dataset's folder
    "manifest": f"{_D}/orig/manifest.json",
    # a text file of a stage (orig, tok, bpe); split: train, valid, test, test.ref<i>
    "text": f"{_D}/{{stage}}/{{split}}.{{lang}}",
    "tok_report": f"{_D}/tok/report.json",
    "bpe_codes": f"{_D}/bpe/codes",
    "bpe_done": f"{_D}/bpe/done.json",
    "dict": f"{_D}/bin/dict.txt",  # the joint dictionary (an evaluation-only set uses its parent's)
    "bin": f"{_D}/bin/{{split}}.{{lang}}",  # a binarized split's prefix (.bin/.idx)
    "bin_report": f"{_D}/bin/report.json",
    "kd_shard": f"{_KD}/shards/{{shard}}.tok",
    "kd_train": f"{_KD}/{{stage}}/train.{{side}}",  # stage: tok, bpe; side: src, tgt
    "kd_tok_report": f"{_KD}/tok/report.json",
    "kd_bin": f"{_KD}/bin/train.{{side}}",  # the binarized KD corpus' prefix (.bin/.idx); side: src, tgt
    "kd_bin_report": f"{_KD}/bin/report.json",
    "sqs_encoder": "{RESULTS}/sqs/{dataset}/encoder.pt",
    "sqs_encoder_stats": "{RESULTS}/sqs/{dataset}/encoder_stats.json",
    # a model entry's sqs_align_updates: a pre-alignment of its own length (_A<updates>)
    "sqs": "{RESULTS}/sqs/{dataset}/K{k}_D{dim}/{file}",  # file: sqs.pt, stats.json
    "sqs_variant": "{RESULTS}/sqs/{dataset}/K{k}_D{dim}_A{align}/{file}",
    # a file of either (sqs.pt, aligned_encoder.pt), by its directory's name: variant is
    # K{k}_D{dim} or K{k}_D{dim}_A{align} (what sqs_target_codes reads)
    "sqs_file": "{RESULTS}/sqs/{dataset}/{variant}/{file}",
    # the pre-aligned encoder's code of each target token (h_y_encoder: pretrained); variant:
    # the directory of the sqs.pt it is made with (K{k}_D{dim} or K{k}_D{dim}_A{align})
    # file: report.json (written last), or the prefixes train and valid (.bin/.idx/.sum)
    "sqs_codes": "{RESULTS}/sqs/{dataset}/{variant}/codes/{direction}.{data}/{file}",
    "model": f"{{RESULTS}}/models/{_CELL}/model.pt",
    "decode": f"{{RESULTS}}/decode/{_CELL}/{{decoding}}/{{file}}",  # file: hyp.tok, hyp.bpe, hyp.detok, speed.json
    "metrics": f"{{RESULTS}}/eval/{_CELL}/{{decoding}}/metrics.json",
    "paper": "{RESULTS}/paper/{name}.{ext}",
}


class RunLayout:
    """The files of one run (``results_dir``/``run_name``) of a loaded config."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.results = f"{cfg.get('results_dir', 'results')}/{cfg['run_name']}"
        self.datasets, self.models = cfg["datasets"], cfg["models"]
        self.eval_only = facts.evaluation_only(cfg)
        self.teacher = cfg["distill"]["teacher"]
        self.paper_index = f"{self.results}/paper/README.md"
        self.learning_curves = {ext: self.path("paper", name="learning_curves", ext=ext)
                                for ext in ("png", "pdf", "csv")}

    # ------------------------------------------------------------ patterns --
    def path(self, pattern: str, **values) -> str:
        """PATTERNS[pattern] with RESULTS and the given wildcards filled in; the
        others stay wildcards (a rule's output:)."""
        filled = PATTERNS[pattern].replace("{RESULTS}", self.results)
        for key, value in values.items():
            filled = filled.replace(f"{{{key}}}", str(value))
        return filled

    # --------------------------------------------------- data of a dataset --
    def data_dir(self, dataset: str) -> str:
        return self.path("data", dataset=dataset)

    def model_dataset(self, dataset: str) -> str:
        """The dataset whose models, BPE codes and dictionary serve ``dataset``
        (evaluation-only sets, e.g. the multi-reference set, are decoded with those)."""
        return self.datasets[dataset].get("evaluation_of", dataset)

    def dict_path(self, dataset: str) -> str:
        return self.path("dict", dataset=self.model_dataset(dataset))

    def splits_of(self, dataset: str) -> list[str]:
        return ["test"] if dataset in self.eval_only else ["train", "valid", "test"]

    def extra_reference_files(self, dataset: str, stage: str = "tok") -> list[str]:
        extra = self.datasets[dataset].get("extra_references")
        if not extra:
            return []
        return [self.text_file(dataset, stage, f"test.ref{i}", extra["lang"]) for i in range(1, extra["count"] + 1)]

    def text_file(self, dataset: str, stage: str, split: str, lang: str) -> str:
        """One text file of a stage (orig, tok or bpe) of a dataset."""
        return self.path("text", dataset=dataset, stage=stage, split=split, lang=lang)

    def text_files(self, dataset: str, stage: str, splits: list[str] | None = None,
                   references: bool = True) -> list[str]:
        """The text files of a stage (tok or bpe) of a dataset, split by split and language
        by language: of every split (or of ``splits``), extra references included unless
        ``references`` is False."""
        langs = self.datasets[dataset]["langs"]
        splits = self.splits_of(dataset) if splits is None else splits
        files = [self.text_file(dataset, stage, split, lang) for split in splits for lang in langs]
        return files + (self.extra_reference_files(dataset, stage) if references else [])

    def bin_prefix(self, dataset: str, split: str, lang: str) -> str:
        return self.path("bin", dataset=dataset, split=split, lang=lang)

    # ------------------------------------------------------ models and cells --
    def model_sqs_path(self, dataset: str, model: str) -> str:
        """The pre-aligned SQS an AEQA model starts from (per K and width; a model's
        own sqs_align_updates gets a pre-alignment of its own length)."""
        spec = self.models[model]
        k, dim, align = facts.codebook_size(spec), facts.model_width(self.cfg, spec), spec.get("sqs_align_updates")
        if align:
            return self.path("sqs_variant", dataset=dataset, k=k, dim=dim, align=int(align), file="sqs.pt")
        return self.path("sqs", dataset=dataset, k=k, dim=dim, file="sqs.pt")

    def model_codes(self, dataset: str, direction: str, data: str, model: str, file: str) -> str | None:
        """``file`` (report.json, or the prefix train or valid) of the target codes a model
        with ``h_y_encoder: pretrained`` reads (made with the model's own sqs.pt, from the
        targets it trains on); None for the rest."""
        if not facts.reads_target_codes(self.models[model]):
            return None
        variant = self.model_sqs_path(dataset, model).rsplit("/", 2)[-2]
        return self.path("sqs_codes", dataset=dataset, variant=variant, direction=direction, data=data, file=file)

    def model_path(self, dataset: str, direction: str, data: str, model: str) -> str:
        return self.path("model", dataset=self.model_dataset(dataset), direction=direction, data=data, model=model)

    def teacher_path(self, dataset: str, direction: str) -> str:
        return self.model_path(dataset, direction, "raw", self.teacher)

    def decoding_name(self, model: str, decoding: str) -> str:
        """``default`` is the model's default decoding (its entry's, else its class's)."""
        return facts.default_decoding(self.models[model]) if decoding == "default" else decoding

    def metrics_path(self, dataset: str, direction: str, data: str, model: str, decoding: str) -> str:
        return self.path("metrics", dataset=dataset, direction=direction, data=data, model=model,
                         decoding=self.decoding_name(model, decoding))

    # --------------------------------------------------------- grid / paper --
    def output_kind(self, name: str) -> str:
        return self.cfg["outputs"][name].get("kind", "figure" if name.startswith("figure") else "table")

    def paper_outputs(self, name: str) -> dict[str, str]:
        exts = ("md", "tex", "csv") if self.output_kind(name) == "table" else ("png", "pdf")
        return {ext: self.path("paper", name=name, ext=ext) for ext in exts}

    def paper_file(self, name: str, table_ext: str = "md") -> str:
        """An output's main file: its table's ``table_ext`` file, or its figure's png."""
        return self.paper_outputs(name)[table_ext if self.output_kind(name) == "table" else "png"]

    def output_metrics(self, name: str) -> list[str]:
        """metrics.json of every cell a table or figure reads."""
        return [self.metrics_path(*cell) for cell in facts.output_cells(self.cfg, name)]

    def trained_models(self) -> list[str]:
        """model.pt of every training run the outputs need, the teacher of each pair
        included (evaluation-only datasets map to the dataset their models are trained on)."""
        runs = {(self.model_dataset(ds), di, data, mo) for name in self.cfg.get("outputs", {})
                for ds, di, data, mo, _ in facts.output_cells(self.cfg, name)}
        runs |= {(ds, di, "raw", self.teacher) for ds, di, _, _ in list(runs)}
        return sorted(self.model_path(*run) for run in runs)

    def paper_targets(self) -> list[str]:
        """Every table and figure, with the index and the learning curves."""
        names = list(self.cfg.get("outputs", {}))
        return [self.paper_file(n) for n in names] + ([self.paper_index, self.learning_curves["png"]] if names else [])
