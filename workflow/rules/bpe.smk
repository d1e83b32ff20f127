# Stage 3: joint BPE (subword-nmt) learned on the training data of both
# languages, applied to every split; then the joint dictionary and the
# memory-mappable binarized splits. KD corpora reuse the raw codes and dictionary.



rule bpe:
    input:
        report=f"{RESULTS}/data/{{dataset}}/tok/report.json",
    output:
        codes=f"{RESULTS}/data/{{dataset}}/bpe/codes",
        done=f"{RESULTS}/data/{{dataset}}/bpe/done.json",
    wildcard_constraints:
        dataset="|".join(TRAINABLE) or "^$",
    params:
        python=PYTHON,
        scripts=SCRIPTS,
        merges=lambda wc: DATASETS[wc.dataset].get("bpe", {}).get("merges", 40000),
        train=lambda wc: " ".join(f"{data_dir(wc.dataset)}/tok/train.{l}" for l in langs(wc.dataset)),
        inputs=lambda wc: " ".join(text_files(wc.dataset, "tok")),
        outputs=lambda wc: " ".join(text_files(wc.dataset, "bpe")),
    log:
        f"{RESULTS}/logs/bpe/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bpe/{{dataset}}.tsv"
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "({params.python} {params.scripts}/bpe.py learn --merges {params.merges} --codes {output.codes} --inputs {params.train}"
        " && {params.python} {params.scripts}/bpe.py apply --codes {output.codes} --inputs {params.inputs}"
        " --outputs {params.outputs} --workers {threads}"
        " && {params.python} -m aeqa_model.data.stamp --out {output.done} --files {params.outputs}) > {log} 2>&1"


rule bpe_eval_only:
    input:
        report=f"{RESULTS}/data/{{dataset}}/tok/report.json",
        parent=lambda wc: f"{data_dir(model_dataset(wc.dataset))}/bpe/done.json",
    output:
        done=f"{RESULTS}/data/{{dataset}}/bpe/done.json",
    wildcard_constraints:
        dataset="|".join(EVAL_ONLY) or "^$",
    params:
        python=PYTHON,
        scripts=SCRIPTS,
        codes=lambda wc: f"{data_dir(model_dataset(wc.dataset))}/bpe/codes",
        inputs=lambda wc: " ".join(text_files(wc.dataset, "tok")),
        outputs=lambda wc: " ".join(text_files(wc.dataset, "bpe")),
    log:
        f"{RESULTS}/logs/bpe/{{dataset}}.log",
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "({params.python} {params.scripts}/bpe.py apply --codes {params.codes} --inputs {params.inputs}"
        " --outputs {params.outputs} --workers {threads}"
        " && {params.python} -m aeqa_model.data.stamp --out {output.done} --files {params.outputs}) > {log} 2>&1"


rule binarize:
    input:
        unpack(binarize_inputs),
    output:
        report=f"{RESULTS}/data/{{dataset}}/bin/report.json",
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        build=lambda wc: "" if wc.dataset in EVAL_ONLY else "--build-dict-from " + " ".join(
            f"{data_dir(wc.dataset)}/bpe/train.{l}" for l in langs(wc.dataset)),
        inputs=lambda wc: " ".join(f"{data_dir(wc.dataset)}/bpe/{s}.{l}" for s in splits_of(wc.dataset) for l in langs(wc.dataset)),
        prefixes=lambda wc: " ".join(bin_prefix(wc.dataset, s, l) for s in splits_of(wc.dataset) for l in langs(wc.dataset)),
    log:
        f"{RESULTS}/logs/binarize/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/binarize/{{dataset}}.tsv"
    threads: stage_threads("binarize", 1)
    resources:
        **stage_resources("binarize", mem_mb=8000, runtime=120, cpus=1),
    shell:
        "{params.python} -m aeqa_model.data.indexed --dict {params.dictionary} {params.build}"
        " --inputs {params.inputs} --prefixes {params.prefixes} --report {output.report} > {log} 2>&1"


rule bpe_kd:
    input:
        codes=f"{RESULTS}/data/{{dataset}}/bpe/codes",
        src=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/tok/train.src",
        tgt=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/tok/train.tgt",
    output:
        src=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/bpe/train.src",
        tgt=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/bpe/train.tgt",
    params:
        python=PYTHON,
        scripts=SCRIPTS,
    log:
        f"{RESULTS}/logs/bpe_kd/{{dataset}}.{{direction}}.log",
    threads: stage_threads("bpe", 2)
    resources:
        **stage_resources("bpe", mem_mb=8000, runtime=240, cpus=2),
    shell:
        "{params.python} {params.scripts}/bpe.py apply --codes {input.codes} --inputs {input.src} {input.tgt}"
        " --outputs {output.src} {output.tgt} --workers {threads} > {log} 2>&1"


rule binarize_kd:
    input:
        binarized=f"{RESULTS}/data/{{dataset}}/bin/report.json",
        src=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/bpe/train.src",
        tgt=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/bpe/train.tgt",
    output:
        report=f"{RESULTS}/data/{{dataset}}/kd/{{direction}}/bin/report.json",
    params:
        python=PYTHON,
        dictionary=lambda wc: f"{data_dir(wc.dataset)}/bin/dict.txt",
        prefix=lambda wc: f"{data_dir(wc.dataset)}/kd/{wc.direction}/bin/train",
    log:
        f"{RESULTS}/logs/binarize_kd/{{dataset}}.{{direction}}.log",
    threads: stage_threads("binarize", 1)
    resources:
        **stage_resources("binarize", mem_mb=8000, runtime=120, cpus=1),
    shell:
        "{params.python} -m aeqa_model.data.indexed --dict {params.dictionary} --inputs {input.src} {input.tgt}"
        " --prefixes {params.prefix}.src {params.prefix}.tgt --report {output.report} > {log} 2>&1"
