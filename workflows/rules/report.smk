# Every track: the grid's records → one tidy table → the track's report.
localrules: index_grid, collate_results, report_tables


rule index_grid:
    """The grid's cells by key with its labels: what collate joins to the stored records."""
    output:
        f"{GRID_DIR}/index.json",
    log:
        f"{GRID_DIR}/index.log",
    params:
        index=gridlib.index_json(PLAN, GRID, TRACK.kind),
    run:
        gridlib.write_index(output[0], params.index)


rule collate_results:
    """The grid's index + its cells' result.json → one tidy CSV (one row per cell × metric)."""
    input:
        index=f"{GRID_DIR}/index.json",
        results=result_files(),
    output:
        f"{GRID_DIR}/tidy.csv",
    log:
        f"{GRID_DIR}/collate.log",
    params:
        python=PYTHON,
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.python} -m adaptbench collate --index {input.index} --out {output} > {log} 2>&1"


rule report_tables:
    """Tables in the papers' layout (md/csv/tex), claims side by side, plots."""
    input:
        cells=f"{GRID_DIR}/tidy.csv",
    output:
        f"{REPORTS}/{GRID}/README.md",
    log:
        f"{GRID_DIR}/report.log",
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
