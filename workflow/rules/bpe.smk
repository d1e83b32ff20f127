# Stage 3: joint BPE (subword-nmt) learned on the training data of both
# languages, applied to every split; then the joint dictionary and the
# memory-mappable binarized splits. KD corpora reuse the raw codes and dictionary.

SPLITS = ["train", "valid", "test"]


rule bpe:
    input:
        report=f"{RESULTS}/data/{{dataset}}/tok/report.json",
    output:
        codes=f"{RESULTS}/data/{{dataset}}/bpe/codes",
        done=f"{RESULTS}/data/{{dataset}}/bpe/done.json",
    params:
        python=PYTHON,
        scripts=SCRIPTS,
        merges=lambda wc: DATASETS[wc.dataset].get("bpe", {}).get("merges", 40000),
        train=lambda wc: " ".join(f"{data_dir(wc.dataset)}/tok/train.{l}" for l in langs(wc.dataset)),
        inputs=lambda wc: " ".join(f"{data_dir(wc.dataset)}/tok/{s}.{l}" for s in SPLITS for l in langs(wc.dataset)),
        outputs=lambda wc: " ".join(f"{data_dir(wc.dataset)}/bpe/{s}.{l}" for s in SPLITS for l in langs(wc.dataset)),
    log:
        f"{RESULTS}/logs/bpe/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bpe/{{dataset}}.tsv"
    threads: res("bpe", "cpus_per_task", 2)
    resources:
        mem_mb=res("bpe", "mem_mb", 8000),
        runtime=res("bpe", "runtime", 240),
        cpus_per_task=res("bpe", "cpus_per_task", 2),
    conda:
        CONDA_ENV
    shell:
        "({params.python} {params.scripts}/bpe.py learn --merges {params.merges} --codes {output.codes} --inputs {params.train}"
        " && {params.python} {params.scripts}/bpe.py apply --codes {output.codes} --inputs {params.inputs}"
        " --outputs {params.outputs} --workers {threads}"
        " && {params.python} -m aeqa_model.data.stamp --out {output.done} --files {params.outputs}) > {log} 2>&1"


rule binarize:
    input:
        done=f"{RESULTS}/data/{{dataset}}/bpe/done.json",
    output:
        report=f"{RESULTS}/data/{{dataset}}/bin/report.json",
    params:
        python=PYTHON,
        dictionary=lambda wc: f"{data_dir(wc.dataset)}/bin/dict.txt",
        train=lambda wc: " ".join(f"{data_dir(wc.dataset)}/bpe/train.{l}" for l in langs(wc.dataset)),
        inputs=lambda wc: " ".join(f"{data_dir(wc.dataset)}/bpe/{s}.{l}" for s in SPLITS for l in langs(wc.dataset)),
        prefixes=lambda wc: " ".join(bin_prefix(wc.dataset, s, l) for s in SPLITS for l in langs(wc.dataset)),
    log:
        f"{RESULTS}/logs/binarize/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/binarize/{{dataset}}.tsv"
    resources:
        mem_mb=res("binarize", "mem_mb", 8000),
        runtime=res("binarize", "runtime", 120),
    conda:
        CONDA_ENV
    shell:
        "{params.python} -m aeqa_model.data.indexed --dict {params.dictionary} --build-dict-from {params.train}"
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
    threads: res("bpe", "cpus_per_task", 2)
    resources:
        mem_mb=res("bpe", "mem_mb", 8000),
        runtime=res("bpe", "runtime", 240),
        cpus_per_task=res("bpe", "cpus_per_task", 2),
    conda:
        CONDA_ENV
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
    resources:
        mem_mb=res("binarize", "mem_mb", 8000),
        runtime=res("binarize", "runtime", 120),
    conda:
        CONDA_ENV
    shell:
        "{params.python} -m aeqa_model.data.indexed --dict {params.dictionary} --inputs {input.src} {input.tgt}"
        " --prefixes {params.prefix}.src {params.prefix}.tgt --report {output.report} > {log} 2>&1"
