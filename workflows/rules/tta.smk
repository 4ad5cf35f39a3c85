# Test-time adaptation: train each source model once → adapt on every scenario's stream.
from adaptbench.tta import grid as ttagrid

TTA_SOURCES = ttagrid.sources(config)
SOURCE_KEYS = {ttagrid.source_key(s): s for s in TTA_SOURCES.values()}
SOURCE_DIR = f"{RESULTS}/sources/{{source}}"

wildcard_constraints:
    source=r"[0-9a-f]{16}",


rule train_source:
    """The source model a TTA stream starts from: an image classifier trained on clean digits/MNIST,
    or MiniLM fine-tuned on a sentence task (the fine-tuning job itself). Shared by every grid."""
    output:
        f"{SOURCE_DIR}/source.json",
    log:
        f"{SOURCE_DIR}/source.log",
    params:
        source=lambda wc: shlex.quote(gridlib.as_json(SOURCE_KEYS[wc.source])),
        python=PYTHON,
    threads: rule_resource("source", "threads")
    resources:
        mem_mb=rule_resource("source", "mem_mb"),
        runtime=runtime_for("source"),
        gpu=rule_resource("source", "gpu"),
        **site_resources("source"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench tta-source --source {params.source} --threads {threads}"
        " --out $(dirname {output}) > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"


rule adapt_stream:
    """One method × source × scenario × seed: online predictions over every shift → result.json."""
    input:
        lambda wc: f"{RESULTS}/sources/{ttagrid.source_key(TTA_SOURCES[cell(wc).source])}/source.json",
    output:
        f"{CELL_DIR}/result.json",
    log:
        f"{CELL_DIR}/adapt.log",
    params:
        label=lambda wc: shlex.quote(cell(wc).label),
        method=lambda wc: cell(wc).method,
        method_params=lambda wc: shlex.quote(gridlib.as_json(cell(wc).method_params)),
        source=lambda wc: shlex.quote(gridlib.as_json(TTA_SOURCES[cell(wc).source])),
        scenario=lambda wc: shlex.quote(gridlib.as_json(cell(wc).config["scenario"])),
        shifts=lambda wc: shlex.quote(gridlib.as_json(list(cell(wc).shifts))),
        severities=shlex.quote(gridlib.as_json(config.get("severities", [5]))),
        seed=lambda wc: cell(wc).seed,
        python=PYTHON,
    threads: rule_resource("adapt", "threads")
    resources:
        mem_mb=rule_resource("adapt", "mem_mb"),
        runtime=runtime_for("adapt"),
        gpu=rule_resource("adapt", "gpu"),
        **site_resources("adapt"),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench adapt --method {params.method} --label {params.label}"
        " --method-params {params.method_params} --source {params.source} --source-dir $(dirname {input})"
        " --scenario {params.scenario} --shifts {params.shifts} --severities {params.severities}"
        " --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"
        " || {{ tail -n 1 {log} >&2; exit 2; }}"
