# Stage 8: decode the test set with each (model, decoding) and score it.
# decode also times batch-1 latency of the model and of the AT teacher (beam 4)
# in the same process on the same device (speed.json).


rule decode:
    input:
        unpack(decode_inputs),
    output:
        tok=f"{RESULTS}/decode/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/hyp.tok",
        bpe=f"{RESULTS}/decode/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/hyp.bpe",
        detok=f"{RESULTS}/decode/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/hyp.detok",
        speed=f"{RESULTS}/decode/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/speed.json",
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        src=lambda wc: bin_prefix(wc.dataset, config["evaluate"]["test_split"], src_tgt(wc.direction)[0]),
        tgt=lambda wc: bin_prefix(wc.dataset, config["evaluate"]["test_split"], src_tgt(wc.direction)[1]),
        tgt_lang=lambda wc: src_tgt(wc.direction)[1],
        decoding=lambda wc: jq(DECODINGS[wc.decoding]),
        teacher=lambda wc, input: ["--teacher", input.teacher] if "teacher" in input.keys() else [],
        subset=config["evaluate"]["speed_subset"],
        warmup=config["evaluate"]["speed_warmup"],
        device=config.get("device", "auto"),
    log:
        f"{RESULTS}/logs/decode/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.tsv"
    threads: stage_threads("decode")
    resources:
        **stage_resources("decode", mem_mb=4000, runtime=30, gpu=True),
    shell:
        "exec {params.python:q} -m aeqa_model.decode.cli --model {input.model:q} --dict {params.dictionary:q}"
        " --src-prefix {params.src:q} --tgt-prefix {params.tgt:q} --decoding {params.decoding:q} {params.teacher:q}"
        " --tgt-lang {params.tgt_lang:q} --out-bpe {output.bpe:q} --out-tok {output.tok:q} --out-detok {output.detok:q}"
        " --speed-out {output.speed:q} --speed-reference {input.at_reference:q} --speed-subset {params.subset}"
        " --speed-warmup {params.warmup} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=f"{RESULTS}/eval/{{dataset}}/{{direction}}/{{data}}/{{model}}/{{decoding}}/metrics.json",
    params:
        python=PYTHON,
        scripts=SCRIPTS,
        ref_tok=lambda wc: f"{data_dir(wc.dataset)}/tok/{config['evaluate']['test_split']}.{src_tgt(wc.direction)[1]}",
        ref_detok=lambda wc: f"{data_dir(wc.dataset)}/orig/{config['evaluate']['test_split']}.{src_tgt(wc.direction)[1]}",
        src_detok=lambda wc: f"{data_dir(wc.dataset)}/orig/{config['evaluate']['test_split']}.{src_tgt(wc.direction)[0]}",
        tgt_lang=lambda wc: src_tgt(wc.direction)[1],
        spec=jq(config["evaluate"]),
        cell=lambda wc: jq({"run": RUN, "dataset": wc.dataset, "direction": wc.direction,
                            "src": src_tgt(wc.direction)[0], "tgt": src_tgt(wc.direction)[1], "data": wc.data,
                            "model": wc.model, "arch": arch(wc.model), "decoding": wc.decoding,
                            "model_config": MODELS[wc.model], "decoding_config": DECODINGS[wc.decoding]}),
        provenance=lambda wc: jq({"config_sha256": settings_sha(config["evaluate"], MODELS[wc.model], DECODINGS[wc.decoding],
                                                                 model_seed(wc.model), RUN, wc.dataset, wc.direction, wc.data),
                                  "seed": model_seed(wc.model)}),
        baseline=lambda wc, input: ["--baseline-hyp-tok", input.baseline, "--baseline-name",
                                    config["evaluate"]["significance_baseline"]] if "baseline" in input.keys() else [],
        extra=lambda wc, input: (
            (["--extra-refs-tok", *extra_reference_files(wc.dataset)] if extra_reference_files(wc.dataset) else [])
            + (["--multi-reference-from", input.multi_reference] if "multi_reference" in input.keys() else [])),
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.tsv"
    threads: stage_threads("evaluate", 1)
    resources:
        **stage_resources("evaluate", mem_mb=4000, runtime=30, cpus=1),
    shell:
        "exec {params.python:q} {params.scripts:q}/evaluate.py --hyp-tok {input.tok:q} --ref-tok {params.ref_tok:q}"
        " --hyp-detok {input.detok:q} --ref-detok {params.ref_detok:q} --src-detok {params.src_detok:q}"
        " --tgt-lang {params.tgt_lang:q} --spec {params.spec:q} --cell {params.cell:q}"
        " --provenance {params.provenance:q} --speed {input.speed:q} {params.baseline:q} {params.extra:q}"
        " --out {output.metrics:q} > {log:q} 2>&1"
