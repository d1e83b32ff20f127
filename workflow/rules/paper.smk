# Stage 9: one rule per table and figure of the paper (file targets a user can
# ask for by name, e.g. results/demo/paper/table5.md), and the index.


for _name in config.get("outputs", {}):

    rule:
        name:
            f"paper_{_name}"
        localrule: True
        input:
            metrics=output_metrics(_name),
        output:
            **{k: (report(v, caption=str(ROOT / f"workflow/report/{_name}.rst"), category="Paper")
                   if k in ("md", "png") and (ROOT / f"workflow/report/{_name}.rst").exists() else v)
               for k, v in paper_outputs(_name).items()},
        params:
            python=PYTHON,
            target=_name,
            spec=jq(config["outputs"][_name]),
            paper_dir=str(ROOT / "config/paper"),
            out_dir=lambda wc, output: str(Path(output[0]).parent),
        log:
            f"{RESULTS}/logs/paper/{_name}.log",
        shell:
            "exec {params.python:q} -m aeqa_model.paper.cli --target {params.target:q} --spec {params.spec:q}"
            " --paper-dir {params.paper_dir:q} --metrics {input.metrics:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


# The tables, figures, index and learning curves read small JSON/CSV files and
# take seconds: they run on the machine Snakemake runs on (localrule), not as
# SLURM jobs.
rule paper_index:
    localrule: True
    input:
        [paper_file(n, table_ext="csv") for n in config.get("outputs", {})],
        LEARNING_CURVES["png"],
    output:
        PAPER_INDEX,
    params:
        python=PYTHON,
        paper_dir=str(ROOT / "config/paper"),
        out_dir=lambda wc, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/paper/index.log",
    shell:
        "exec {params.python:q} -m aeqa_model.paper.cli --target index --spec '{{}}' --paper-dir {params.paper_dir:q}"
        " --inputs {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


# Validation BLEU against updates for every model the run trains (issue 14): read
# from the train_log.csv beside each model.pt.
rule learning_curves:
    localrule: True
    input:
        models=trained_models(),
    output:
        **LEARNING_CURVES,
    params:
        python=PYTHON,
        logs=lambda wc, input: [str(Path(m).parent / "train_log.csv") for m in input.models],
        out_dir=lambda wc, output: str(Path(output.png).parent),
    log:
        f"{RESULTS}/logs/paper/learning_curves.log",
    shell:
        "exec {params.python:q} -m aeqa_model.paper.cli --target learning_curves --inputs {params.logs:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
