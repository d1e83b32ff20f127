# Stage 3: joint BPE (subword-nmt) learned on the training data of both
# languages, applied to every split; then the joint dictionary and the
# memory-mappable binarized splits. KD corpora reuse the raw codes and dictionary.



rule bpe:
    input:
        report=path("tok_report"),
    output:
        codes=path("bpe_codes"),
        done=path("bpe_done"),
    wildcard_constraints:
        dataset="|".join(TRAINABLE) or "^$",
    params:
        python=PYTHON,
        merges=lambda wc: DATASETS[wc.dataset].get("bpe", {}).get("merges", 40000),
        train=lambda wc: text_files(wc.dataset, "tok", splits=["train"], references=False),
        inputs=lambda wc: text_files(wc.dataset, "tok"),
        outputs=lambda wc: text_files(wc.dataset, "bpe"),
    log:
        f"{RESULTS}/logs/bpe/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bpe/{{dataset}}.tsv"
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "exec {params.python:q} -m aeqa_model.bpe.cli learn-apply --merges {params.merges} --codes {output.codes:q}"
        " --learn-inputs {params.train:q} --inputs {params.inputs:q} --outputs {params.outputs:q} --workers {threads}"
        " --stamp {output.done:q} > {log:q} 2>&1"


rule bpe_eval_only:
    input:
        report=path("tok_report"),
        parent=lambda wc: path("bpe_done", dataset=model_dataset(wc.dataset)),
    output:
        done=path("bpe_done"),
    wildcard_constraints:
        dataset="|".join(EVAL_ONLY) or "^$",
    params:
        python=PYTHON,
        codes=lambda wc: path("bpe_codes", dataset=model_dataset(wc.dataset)),
        inputs=lambda wc: text_files(wc.dataset, "tok"),
        outputs=lambda wc: text_files(wc.dataset, "bpe"),
    log:
        f"{RESULTS}/logs/bpe/{{dataset}}.log",
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "exec {params.python:q} -m aeqa_model.bpe.cli apply --codes {params.codes:q} --inputs {params.inputs:q}"
        " --outputs {params.outputs:q} --workers {threads} --stamp {output.done:q} > {log:q} 2>&1"


rule binarize:
    input:
        unpack(binarize_inputs),
    output:
        report=path("bin_report"),
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        build=lambda wc: [] if wc.dataset in EVAL_ONLY else ["--build-dict-from"] + text_files(
            wc.dataset, "bpe", splits=["train"], references=False),
        inputs=lambda wc: text_files(wc.dataset, "bpe", references=False),
        prefixes=lambda wc: [bin_prefix(wc.dataset, s, l) for s in splits_of(wc.dataset) for l in langs(wc.dataset)],
    log:
        f"{RESULTS}/logs/binarize/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/binarize/{{dataset}}.tsv"
    threads: stage_threads("binarize", 1)
    resources:
        **stage_resources("binarize", mem_mb=8000, runtime=120, cpus=1),
    shell:
        "exec {params.python:q} -m aeqa_model.binarize.cli --dict {params.dictionary:q} {params.build:q}"
        " --inputs {params.inputs:q} --prefixes {params.prefixes:q} --report {output.report:q} > {log:q} 2>&1"


rule bpe_kd:
    input:
        codes=path("bpe_codes"),
        src=path("kd_train", stage="tok", side="src"),
        tgt=path("kd_train", stage="tok", side="tgt"),
    output:
        src=path("kd_train", stage="bpe", side="src"),
        tgt=path("kd_train", stage="bpe", side="tgt"),
    params:
        python=PYTHON,
    log:
        f"{RESULTS}/logs/bpe_kd/{{dataset}}.{{direction}}.log",
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "exec {params.python:q} -m aeqa_model.bpe.cli apply --codes {input.codes:q} --inputs {input.src:q} {input.tgt:q}"
        " --outputs {output.src:q} {output.tgt:q} --workers {threads} > {log:q} 2>&1"


rule binarize_kd:
    input:
        binarized=path("bin_report"),
        src=path("kd_train", stage="bpe", side="src"),
        tgt=path("kd_train", stage="bpe", side="tgt"),
    output:
        report=path("kd_bin_report"),
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        prefixes=lambda wc: [path("kd_bin", dataset=wc.dataset, direction=wc.direction, side=side)
                             for side in ("src", "tgt")],
    log:
        f"{RESULTS}/logs/binarize_kd/{{dataset}}.{{direction}}.log",
    threads: stage_threads("binarize", 1)
    resources:
        **stage_resources("binarize", mem_mb=8000, runtime=120, cpus=1),
    shell:
        "exec {params.python:q} -m aeqa_model.binarize.cli --dict {params.dictionary:q} --inputs {input.src:q} {input.tgt:q}"
        " --prefixes {params.prefixes:q} --report {output.report:q} > {log:q} 2>&1"
