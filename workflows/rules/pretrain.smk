# Pretraining: a small Llama from scratch per optimizer × size × corpus × seed → perplexity tables.
rule pretrain:
    """Train from scratch and score validation perplexity → result.json (the collate/report input)."""
    output:
        f"{CELL_DIR}/result.json",
    log:
        f"{CELL_DIR}/pretrain.log",
    params:
        label=lambda wc: shlex.quote(cell(wc).label),
        optimizer=lambda wc: cell(wc).method,
        optimizer_params=lambda wc: shlex.quote(gridlib.as_json(cell(wc).method_params)),
        train_params=lambda wc: shlex.quote(gridlib.as_json(cell(wc).train_params)),
        size=lambda wc: cell(wc).model,
        corpus=lambda wc: cell(wc).task,
        seed=lambda wc: cell(wc).seed,
        data_dir=data_dir_flag(),
        tokenizer=f"--tokenizer {shlex.quote(str(config['tokenizer']))}" if config.get("tokenizer") else "",
        python=PYTHON,
    threads: rule_resource("pretrain", "threads")
    resources:
        mem_mb=rule_resource("pretrain", "mem_mb"),
        runtime=runtime_for("pretrain"),
        gpu=rule_resource("pretrain", "gpu"),
        **site_resources("pretrain"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench pretrain --optimizer {params.optimizer} --label {params.label}"
        " --optimizer-params {params.optimizer_params} --model-size {params.size} --corpus {params.corpus}"
        " --seed {params.seed} --train-params {params.train_params} {params.data_dir} {params.tokenizer}"
        " --threads {threads} --out $(dirname {output}) > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"
