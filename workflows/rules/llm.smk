# LLM track: one job per cell trains a causal LM and scores it with lm-eval → result.json.
rule llm_cell:
    """Instruction-tune (or not: the zero-shot row) and score with lm-evaluation-harness."""
    output:
        f"{CELL_DIR}/result.json",
    log:
        f"{CELL_DIR}/llm.log",
    params:
        label=lambda wc: shlex.quote(cell(wc).label),
        method=lambda wc: cell(wc).method,
        model=lambda wc: shlex.quote(cell(wc).model_source),
        task=lambda wc: cell(wc).task,
        seed=lambda wc: cell(wc).seed,
        method_params=lambda wc: shlex.quote(gridlib.as_json(cell(wc).method_params)),
        train_params=lambda wc: shlex.quote(gridlib.as_json({k: v for k, v in cell(wc).train_params.items() if k != "checkpoint_every"})),
        evaluation=lambda wc: shlex.quote(gridlib.as_json(cell(wc).config["eval"])),
        data_dir=data_dir_flag(),
        python=PYTHON,
    threads: rule_resource("llm", "threads")
    resources:
        mem_mb=rule_resource("llm", "mem_mb"),
        runtime=runtime_for("llm"),
        gpu=rule_resource("llm", "gpu"),
        checkpoint_every=int((config.get("train") or {}).get("checkpoint_every", 0)),  # run control
        **site_resources("llm"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench llm --method {params.method} --label {params.label} --model {params.model}"
        " --task {params.task} --seed {params.seed} --method-params {params.method_params}"
        " --train-params {params.train_params} --eval {params.evaluation} {params.data_dir}"
        " --checkpoint-every {resources.checkpoint_every} --threads {threads} --out $(dirname {output})"
        " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"
