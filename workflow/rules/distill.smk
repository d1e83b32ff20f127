# Stage 5: sequence-level distillation. The teacher translates the training
# source in N contiguous shards (scatter: each shard is its own job, a SLURM
# job under the slurm profile; finished shards are never redone), then gather
# concatenates them in order into the KD corpus, which goes through bpe_kd and
# binarize_kd with the raw data's codes and dictionary.


rule distill_shard:
    input:
        binarized=path("bin_report"),
        teacher=teacher_path,
    output:
        shard=path("kd_shard"),
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        src=lambda wc: bin_prefix(wc.dataset, "train", src_tgt(wc.direction)[0]),
        tgt=lambda wc: bin_prefix(wc.dataset, "train", src_tgt(wc.direction)[1]),
        tgt_lang=lambda wc: src_tgt(wc.direction)[1],
        decoding=jq({"strategy": "beam", "beam": config["distill"]["beam"], "lenpen": config["distill"]["lenpen"]}),
        shards=shard_count(),
        max_tokens=config["distill"].get("max_tokens", 8000),
        device=config.get("device", "auto"),
    log:
        f"{RESULTS}/logs/distill/{{dataset}}.{{direction}}.{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/distill/{{dataset}}.{{direction}}.{{shard}}.tsv"
    threads: stage_threads("distill_shard")
    resources:
        **stage_resources("distill_shard", mem_mb=4000, runtime=60, gpu=True),
    shell:
        "exec {params.python:q} -m aeqa_model.decode.cli --model {input.teacher:q} --dict {params.dictionary:q}"
        " --src-prefix {params.src:q} --tgt-prefix {params.tgt:q} --decoding {params.decoding:q}"
        " --tgt-lang {params.tgt_lang:q} --out-tok {output.shard:q} --shard {wildcards.shard}"
        " --num-shards {params.shards} --max-tokens {params.max_tokens} --device {params.device:q}"
        " --threads {threads} > {log:q} 2>&1"


# Concatenating the shards is I/O only: a local job (localrule) on the machine
# Snakemake runs on, not a SLURM job.
rule distill_gather:
    localrule: True
    input:
        shards=distill_shards,
    output:
        src=path("kd_train", stage="tok", side="src"),
        tgt=path("kd_train", stage="tok", side="tgt"),
        report=path("kd_tok_report"),
    params:
        python=PYTHON,
        src=lambda wc: text_file(wc.dataset, "tok", "train", src_tgt(wc.direction)[0]),
        ref=lambda wc: text_file(wc.dataset, "tok", "train", src_tgt(wc.direction)[1]),
    log:
        f"{RESULTS}/logs/distill_gather/{{dataset}}.{{direction}}.log",
    threads: stage_threads("distill_gather", 1)
    resources:
        **stage_resources("distill_gather", mem_mb=4000, runtime=60, cpus=1),
    shell:
        "exec {params.python:q} -m aeqa_model.distill.cli --shards {input.shards:q} --src {params.src:q} --ref {params.ref:q}"
        " --out-src {output.src:q} --out-tgt {output.tgt:q} --report {output.report:q} > {log:q} 2>&1"
