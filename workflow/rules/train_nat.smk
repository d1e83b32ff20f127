# Stage 7: every other trained cell (NAT models, AEQA-NAT variants, AT on KD),
# one rule for all models: the {model} wildcard picks the config entry.


ruleorder: train_teacher > train_nat


rule train_nat:
    input:
        unpack(train_inputs),
    output:
        model=path("model"),
    wildcard_constraints:
        data="raw|kd",
    params:
        python=PYTHON,
        p=train_params,
        launcher=lambda wc, resources: launcher(resources),
        out_dir=lambda wc, output: str(Path(output.model).parent),
        seed=lambda wc: model_seed(wc.model),
        device=config.get("device", "auto"),
        config_sha=train_config_sha,
    log:
        f"{RESULTS}/logs/train_nat/{{dataset}}.{{direction}}.{{data}}.{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_nat/{{dataset}}.{{direction}}.{{data}}.{{model}}.tsv"
    threads: stage_threads("train_nat")
    resources:
        **stage_resources("train_nat", mem_mb=4000, runtime=60, gpu=True),
    shell:
        TRAIN_SHELL
