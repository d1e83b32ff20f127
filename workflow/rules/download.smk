# Stage 1: fetch every source of a dataset (checksums, retries, resume, cache)
# and build orig/{train,valid,test}.{lang}. manifest.json is written last and
# marks the dataset complete.


rule download:
    output:
        manifest=path("manifest"),
    params:
        python=PYTHON,
        dataset_spec=lambda wc: jq(aeqa_model.config_facts.download_spec(DATASETS[wc.dataset])),
        sources_spec=lambda wc: jq({s: config["sources"][s] for s in DATASETS[wc.dataset].get("sources", [])}),
        cache=os.environ.get("AEQA_DATA_CACHE", config.get("cache_dir", "results/.cache")),
        out_dir=lambda wc, output: str(Path(output.manifest).parent),
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
    threads: stage_threads("download", 1)
    resources:
        **stage_resources("download", mem_mb=4000, runtime=120, cpus=1),
    shell:
        "exec {params.python:q} -m aeqa_model.download.cli --dataset {wildcards.dataset:q} --dataset-spec {params.dataset_spec:q}"
        " --sources-spec {params.sources_spec:q} --cache-dir {params.cache:q} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"
