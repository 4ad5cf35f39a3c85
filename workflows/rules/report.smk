# Every track: the grid's records → one tidy table → the track's report.
#
# A failed cell is a row with its reason, and the report of the rest still appears. Snakemake never
# runs a job whose inputs failed, so collate_results (input: every cell's result.json) cannot run under
# --keep-going when a cell failed; a collate whose only input is the index would run before the cells.
# Instead the `onerror` hook below, which Snakemake calls once after every job it could run has
# finished, collates what is there and writes the report: completed cells in the table, failed ones
# listed with the reason from their failure.json. Snakemake still exits non-zero, and the next run
# retries only the failed cells.
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
        # make report (report_only): the records that are stored, so nothing trains and nothing is missing
        results=[f for f in result_files() if os.path.exists(f)] if REPORT_ONLY else result_files(),
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
    """Tables in the papers' layout (md/csv/tex), claims side by side, plots; and index.html, the grid's page
    (its stored rows as sortable tables with claims and verdicts, every cell traced to its record, the figures)."""
    input:
        cells=f"{GRID_DIR}/tidy.csv",
    output:
        f"{REPORTS}/{GRID}/README.md",
    log:
        f"{GRID_DIR}/report.log",
    params:
        command=lambda wc, input: report_command(input.cells),
    conda:
        "../../envs/adaptbench.yaml"
    shell:
        "{params.command} > {log} 2>&1"


onerror:
    partial_report()
