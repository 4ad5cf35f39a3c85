# Fine-tuning: (init) → train and score, one job per cell. Cells live in results/cells/<key>/.
from adaptbench.tracks.finetune import grid as finetune_grid

INITS, INIT_OF = finetune_grid.init_index(PLAN.cells, config.get("data_dir"))
INIT_FILE = f"{RESULTS}/inits/{{init}}/init.pt"

wildcard_constraints:
    init=r"[0-9a-f]{16}",


rule init_adapter:
    """Data-driven initialisation (EVA, CorDA) from training batches, cached per model × task × seed ×
    batches: retraining a cell with other training settings reuses it."""
    output:
        INIT_FILE,
    log:
        f"{RESULTS}/inits/{{init}}/init.log",
    params:
        method=lambda wc: INITS[wc.init].method,
        model=lambda wc: shlex.quote(INITS[wc.init].model_source),
        task=lambda wc: INITS[wc.init].task,
        seed=lambda wc: INITS[wc.init].seed,
        method_params=lambda wc: shlex.quote(gridlib.as_json(INITS[wc.init].method_params)),
        train_params=lambda wc: shlex.quote(gridlib.as_json(finetune_grid.init_batches(INITS[wc.init]))),
        data_dir=data_dir_flag(),
        python=PYTHON,
    threads: rule_resource("train", "threads")
    resources:
        mem_mb=rule_resource("train", "mem_mb"),
        runtime=runtime_for("train"),
        gpu=rule_resource("train", "gpu"),
        **site_resources("train"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench init --method {params.method} --model {params.model}"
        " --task {params.task} --seed {params.seed} --method-params {params.method_params}"
        " --train-params {params.train_params} {params.data_dir} --threads {threads} --out {output}"
        " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"


rule finetune:
    """Fine-tune one cell and score it in the same process → train.json, result.json; keeps the checkpoint
    train.keep_checkpoint asks for (re-score it with `adaptbench evaluate`). Killed or preempted, it
    leaves resume.pt and a rerun continues from it."""
    input:
        init=lambda wc: [INIT_FILE.format(init=INIT_OF[wc.cell])] if wc.cell in INIT_OF else [],
    output:
        log_json=f"{CELL_DIR}/train.json",
        result=f"{CELL_DIR}/result.json",
    log:
        f"{CELL_DIR}/train.log",
    params:
        label=lambda wc: shlex.quote(cell(wc).label),
        method=lambda wc: cell(wc).method,
        model=lambda wc: shlex.quote(cell(wc).model_source),
        task=lambda wc: cell(wc).task,
        seed=lambda wc: cell(wc).seed,
        method_params=lambda wc: shlex.quote(gridlib.as_json(cell(wc).method_params)),
        train_params=lambda wc: shlex.quote(gridlib.as_json(finetune_grid.semantic_train(cell(wc)))),
        data_dir=data_dir_flag(),
        init=lambda wc, input: f"--init {shlex.quote(input.init[0])}" if input.init else "",
        python=PYTHON,
    threads: rule_resource("train", "threads")
    resources:
        mem_mb=rule_resource("train", "mem_mb"),
        runtime=lambda wc, attempt: (rule_resource("train", "runtime") + rule_resource("evaluate", "runtime")) * attempt,
        gpu=rule_resource("train", "gpu"),
        # run control: changing these reruns nothing (resources, not params)
        checkpoint_every=int((config.get("train") or {}).get("checkpoint_every", 0)),
        keep_checkpoint=(config.get("train") or {}).get("keep_checkpoint", "trainable"),
        **site_resources("train"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench train {params.init} --method {params.method} --label {params.label}"
        " --model {params.model} --task {params.task} --seed {params.seed}"
        " --method-params {params.method_params} --train-params {params.train_params}"
        " --checkpoint-every {resources.checkpoint_every} --keep-checkpoint {resources.keep_checkpoint}"
        " --no-progress {params.data_dir} --threads {threads} --out $(dirname {output.log_json}) > {log} 2>&1"
        " || {{ tail -n 1 {log} >&2; exit 2; }}"
