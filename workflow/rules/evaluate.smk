# Stage 8: decode the test set with each (model, decoding) and score it.
# decode also times batch-1 latency of the model and of the AT teacher (beam 4)
# in the same process on the same device (speed.json).


rule decode:
    input:
        unpack(decode_inputs),
    output:
        tok=path("decode", file="hyp.tok"),
        bpe=path("decode", file="hyp.bpe"),
        detok=path("decode", file="hyp.detok"),
        speed=path("decode", file="speed.json"),
    params:
        python=PYTHON,
        dictionary=lambda wc: dict_path(wc.dataset),
        src=lambda wc: bin_prefix(wc.dataset, config["evaluate"]["test_split"], src_tgt(wc.direction)[0]),
        tgt=lambda wc: bin_prefix(wc.dataset, config["evaluate"]["test_split"], src_tgt(wc.direction)[1]),
        tgt_lang=lambda wc: src_tgt(wc.direction)[1],
        decoding=lambda wc: jq(DECODINGS[wc.decoding]),
        teacher=lambda wc, input: ["--teacher", input.teacher] if "teacher" in input.keys() else [],
        subset=evaluate_setting("speed_subset"),
        # --speed-graphs rides on this param and only when set: a run whose config leaves
        # evaluate.speed_graphs at its default keeps the shell command and the params it
        # was made with, so no decode is redone (a new shell word or param would be).
        warmup=(evaluate_setting("speed_warmup") if evaluate_setting("speed_graphs") == "none"
                else [evaluate_setting("speed_warmup"), "--speed-graphs", evaluate_setting("speed_graphs")]),
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
        metrics=path("metrics"),
    params:
        python=PYTHON,
        ref_tok=lambda wc: eval_text(wc, "tok", "tgt"),
        ref_detok=lambda wc: eval_text(wc, "orig", "tgt"),
        src_detok=lambda wc: eval_text(wc, "orig", "src"),
        tgt_lang=lambda wc: src_tgt(wc.direction)[1],
        spec=jq(config["evaluate"]),
        cell=eval_cell,
        provenance=eval_provenance,
        baseline=eval_baseline_args,
        extra=eval_extra_args,
        # COMET/BLEURT: on the CPU under device: cpu; otherwise a GPU when the job sees one
        # (evaluate jobs request none from SLURM, so `cuda` would fail on a CPU node)
        device="cpu" if config.get("device", "auto") == "cpu" else "auto",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.{{direction}}.{{data}}.{{model}}.{{decoding}}.tsv"
    threads: stage_threads("evaluate", 1)
    resources:
        **stage_resources("evaluate", mem_mb=4000, runtime=30, cpus=1),
    shell:
        "exec {params.python:q} -m aeqa_model.evaluate.cli --hyp-tok {input.tok:q} --ref-tok {params.ref_tok:q}"
        " --hyp-detok {input.detok:q} --ref-detok {params.ref_detok:q} --src-detok {params.src_detok:q}"
        " --tgt-lang {params.tgt_lang:q} --spec {params.spec:q} --cell {params.cell:q}"
        " --provenance {params.provenance:q} --speed {input.speed:q} {params.baseline:q} {params.extra:q}"
        " --device {params.device:q} --out {output.metrics:q} > {log:q} 2>&1"
