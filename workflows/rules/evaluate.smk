rule evaluate_glue:
    """Score the trained cell (merged where the method allows) → result.json."""
    input:
        checkpoint=f"{CELL_DIR}/checkpoint.pt",
        log_json=f"{CELL_DIR}/train.json",
    output:
        f"{CELL_DIR}/result.json",
    log:
        f"{CELL_DIR}/evaluate.log",
    params:
        python=PYTHON,
    threads: rule_resource("evaluate", "threads")
    resources:
        mem_mb=rule_resource("evaluate", "mem_mb"),
        runtime=runtime_for("evaluate"),
        gpu=rule_resource("evaluate", "gpu"),
        **site_resources("evaluate"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench evaluate --train-dir $(dirname {input.log_json}) --out {output}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"
