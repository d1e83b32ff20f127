# Stage 2: Moses pipeline (normalize, tokenize -a, segment ZH, clean train by
# length/ratio). report.json counts every dropped line and marks completion.


rule prepare:
    input:
        manifest=path("manifest"),
    output:
        report=path("tok_report"),
    params:
        python=PYTHON,
        spec=lambda wc: jq(DATASETS[wc.dataset].get("prepare", {})),
        langs=lambda wc: langs(wc.dataset),
        in_dir=lambda wc, input: str(Path(input.manifest).parent),
        out_dir=lambda wc, output: str(Path(output.report).parent),
        splits=lambda wc: splits_of(wc.dataset),
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv"
    threads: stage_threads("prepare", 2)
    resources:
        **stage_resources("prepare", mem_mb=4000, runtime=240, cpus=2),
    shell:
        "exec {params.python:q} -m aeqa_model.prepare.cli --spec {params.spec:q} --langs {params.langs:q} --in-dir {params.in_dir:q}"
        " --out-dir {params.out_dir:q} --splits {params.splits:q} --workers {threads} > {log:q} 2>&1"
