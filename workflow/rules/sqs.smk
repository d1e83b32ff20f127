# Stage 6: pre-aligned Semantic Quantization Space (App. A.2). The multilingual
# encoder (embedded denoising model, or a local mBART) is prepared once per
# dataset; the alignment with the EMA codebook runs per codebook size K and
# NAT width D. Both run on the config's `device`, under torchrun with gpu > 1,
# and checkpoint like training: exit code 75 = interrupted after a checkpoint
# (SLURM time-limit signal), the rerun resumes (`exec`: see TRAIN_SHELL).


rule pretrain_sqs_encoder:
    input:
        manifest=path("manifest"),
    output:
        encoder=path("sqs_encoder"),
        stats=path("sqs_encoder_stats"),
    params:
        python=PYTHON,
        spec=jq(aeqa_model.config_facts.encoder_stage_spec(config)),
        src=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[0]),
        tgt=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[1]),
        seed=config["seed"],
        device=config.get("device", "auto"),
        launcher=lambda wc, resources: launcher(resources),
    log:
        f"{RESULTS}/logs/pretrain_sqs/{{dataset}}.encoder.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_sqs/{{dataset}}.encoder.tsv"
    threads: stage_threads("pretrain_sqs")
    resources:
        **stage_resources("pretrain_sqs", mem_mb=4000, runtime=60, gpu=True),
    shell:
        "exec {params.launcher:q} -m aeqa_model.pretrain_sqs.cli --stage encoder --spec {params.spec:q} --src-text {params.src:q}"
        " --tgt-text {params.tgt:q} --codebook-size 0 --dim 0 --encoder-out {output.encoder:q}"
        " --out /dev/null --stats {output.stats:q} --seed {params.seed} --device {params.device:q}"
        " --threads {threads} > {log:q} 2>&1"


rule pretrain_sqs:
    input:
        encoder=path("sqs_encoder"),
    output:
        sqs=path("sqs", file="sqs.pt"),
        stats=path("sqs", file="stats.json"),
        aligned=path("sqs", file="aligned_encoder.pt"),
    wildcard_constraints:
        k=r"\d+",
        dim=r"\d+",
    params:
        python=PYTHON,
        spec=jq(config["pretrain_sqs"]),
        src=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[0]),
        tgt=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[1]),
        seed=config["seed"],
        device=config.get("device", "auto"),
        launcher=lambda wc, resources: launcher(resources),
    log:
        f"{RESULTS}/logs/pretrain_sqs/{{dataset}}.K{{k}}_D{{dim}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_sqs/{{dataset}}.K{{k}}_D{{dim}}.tsv"
    threads: stage_threads("pretrain_sqs")
    resources:
        **stage_resources("pretrain_sqs", mem_mb=4000, runtime=60, gpu=True),
    shell:
        "exec {params.launcher:q} -m aeqa_model.pretrain_sqs.cli --stage align --spec {params.spec:q} --src-text {params.src:q}"
        " --tgt-text {params.tgt:q} --codebook-size {wildcards.k} --dim {wildcards.dim}"
        " --encoder-out {input.encoder:q} --out {output.sqs:q} --stats {output.stats:q}"
        " --aligned-encoder-out {output.aligned:q} --seed {params.seed}"
        " --device {params.device:q} --threads {threads} > {log:q} 2>&1"


# A model entry with `sqs_align_updates: N` gets a pre-alignment of N updates of its
# own (the "longer pre-alignment" ablation); the encoder stage is shared.
use rule pretrain_sqs as pretrain_sqs_variant with:
    output:
        sqs=path("sqs_variant", file="sqs.pt"),
        stats=path("sqs_variant", file="stats.json"),
        aligned=path("sqs_variant", file="aligned_encoder.pt"),
    wildcard_constraints:
        k=r"\d+",
        dim=r"\d+",
        align=r"\d+",
    params:
        python=PYTHON,
        spec=lambda wc: jq({**config["pretrain_sqs"], "align_updates": int(wc.align)}),
        src=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[0]),
        tgt=lambda wc: text_file(wc.dataset, "orig", "train", langs(wc.dataset)[1]),
        seed=config["seed"],
        device=config.get("device", "auto"),
        launcher=lambda wc, resources: launcher(resources),
    log:
        f"{RESULTS}/logs/pretrain_sqs/{{dataset}}.K{{k}}_D{{dim}}_A{{align}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_sqs/{{dataset}}.K{{k}}_D{{dim}}_A{{align}}.tsv"


# H_y from the pre-aligned encoder (a model entry's `h_y_encoder: pretrained`,
# docs/method.md #26): the aligned encoder reads each training and validation target
# through its own tokenizer, and each BPE token gets the code of the states its
# characters cover (aeqa_model/pretrain_sqs/target_codes.py). Per SQS and per the
# targets a model trains on (raw or KD).
rule sqs_target_codes:
    input:
        sqs=path("sqs_file", file="sqs.pt"),
        aligned=path("sqs_file", file="aligned_encoder.pt"),
        # the raw BPE text is made under bpe_done; the distilled one is an output of its own
        bpe=lambda wc: path("bpe_done", dataset=wc.dataset),
        kd=lambda wc: [target_text(wc)] if wc.data == "kd" else [],
    output:
        report=path("sqs_codes", file="report.json"),
    wildcard_constraints:
        variant=r"K\d+_D\d+(_A\d+)?",
        data="raw|kd",
    params:
        python=PYTHON,
        train_tgt=target_text,
        valid_tgt=lambda wc: text_file(wc.dataset, "bpe", "valid", src_tgt(wc.direction)[1]),
        out_dir=lambda wc, output: str(Path(output.report).parent),
        device=config.get("device", "auto"),
    log:
        f"{RESULTS}/logs/sqs_target_codes/{{dataset}}.{{variant}}.{{direction}}.{{data}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sqs_target_codes/{{dataset}}.{{variant}}.{{direction}}.{{data}}.tsv"
    threads: stage_threads("pretrain_sqs")
    resources:
        **stage_resources("pretrain_sqs", mem_mb=4000, runtime=60, gpu=True),
    shell:
        "exec {params.python:q} -m aeqa_model.pretrain_sqs.cli --stage codes --sqs {input.sqs:q}"
        " --aligned-encoder {input.aligned:q} --train-tgt {params.train_tgt:q} --valid-tgt {params.valid_tgt:q}"
        " --out-dir {params.out_dir:q} --report {output.report:q} --device {params.device:q}"
        " --threads {threads} > {log:q} 2>&1"
