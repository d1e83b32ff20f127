# Stage 4: the AT teacher (Transformer trained on raw data; distill.teacher).


rule train_teacher:
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/models/{{dataset}}/{{direction}}/raw/{{model}}/model.pt",
    wildcard_constraints:
        model=TEACHER,
    params:
        python=PYTHON,
        p=train_params,
        launcher=lambda wc, resources: launcher(resources),
        out_dir=lambda wc, output: str(Path(output.model).parent),
        seed=lambda wc: model_seed(wc.model),
        device=config.get("device", "auto"),
        config_sha=lambda wc: settings_sha(train_params(wc), model_seed(wc.model), RUN),
    log:
        f"{RESULTS}/logs/train_teacher/{{dataset}}.{{direction}}.{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_teacher/{{dataset}}.{{direction}}.{{model}}.tsv"
    threads: stage_threads("train_teacher")
    resources:
        **stage_resources("train_teacher", mem_mb=4000, runtime=60, gpu=True),
    shell:
        TRAIN_SHELL
