localrules: collate_results, report_tables


rule collate_results:
    """Every cell's result.json → one tidy CSV."""
    input:
        result_files(),
    output:
        f"{RESULTS}/{GRID}/cells.csv",
    log:
        f"{RESULTS}/{GRID}/collate.log",
    params:
        python=PYTHON,
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench collate {input} --out {output} > {log} 2>&1"


rule report_tables:
    """Tables in the papers' layout (md/csv/tex), claims side by side, plots."""
    input:
        cells=f"{RESULTS}/{GRID}/cells.csv",
    output:
        f"{REPORTS}/{GRID}/README.md",
    log:
        f"{RESULTS}/{GRID}/report.log",
    params:
        grid_json=shlex.quote(gridlib.as_json(config)),
        unavailable=shlex.quote(gridlib.as_json(UNAVAILABLE)),
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        python=PYTHON,
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench report --cells {input.cells} --grid-json {params.grid_json}"
        " --unavailable {params.unavailable} --out-dir {params.out_dir} > {log} 2>&1"
