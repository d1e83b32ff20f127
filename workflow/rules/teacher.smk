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
    threads: res("train_teacher", "cpus_per_task", config.get("threads", 1))
    resources:
        gpu=res("train_teacher", "gpu", 0),
        mem_mb=res("train_teacher", "mem_mb", 4000),
        runtime=res("train_teacher", "runtime", 60),
        cpus_per_task=res("train_teacher", "cpus_per_task", config.get("threads", 1)),
        **slurm_resources("train_teacher"),
    conda:
        CONDA_ENV
    shell:
        TRAIN_SHELL
