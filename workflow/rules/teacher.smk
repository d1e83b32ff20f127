# Stage 4: the AT teacher (Transformer trained on raw data; distill.teacher): the
# training rule of train_nat.smk with no {data} wildcard (always raw) and resources
# of its own stage.


use rule train_nat as train_teacher with:
    output:
        model=path("model", data="raw"),
    wildcard_constraints:
        model=TEACHER,
    log:
        f"{RESULTS}/logs/train_teacher/{{dataset}}.{{direction}}.{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_teacher/{{dataset}}.{{direction}}.{{model}}.tsv"
    threads: stage_threads("train_teacher")
    resources:
        **stage_resources("train_teacher", mem_mb=4000, runtime=60, gpu=True),
