# adaptbench: a grid (method × model × task × seed) → one job per cell → result records → report.
#   snakemake -n                                          # the DAG of the default (demo) grid
#   snakemake --cores 2                                   # run it
#   snakemake --cores 2 --configfile workflows/grids/glue_minilm.yaml --config data_dir=../shared/data/glue
#   snakemake --profile slurm --configfile workflows/grids/lora_roberta_base_glue.yaml
#   snakemake --cores 2 --configfile workflows/grids/tta_demo.yaml       # test-time adaptation
# The grid's `kind` picks its track (adaptbench/tracks/<kind>/, workflows/rules/<kind>.smk).
# Parse time imports no torch: each SLURM job re-parses this file.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

DEFAULT_GRID = "workflows/grids/demo.yaml"
if not workflow.overwrite_configfiles:  # a --configfile grid replaces the demo instead of merging into it
    configfile: DEFAULT_GRID

sys.path.insert(0, workflow.basedir)  # the adaptbench package of this checkout, installed or not
from adaptbench import grid as gridlib

REPORT_ONLY = os.environ.get("ADAPTBENCH_REPORT_ONLY") == "1"  # make report: tables from stored cells only
try:  # --config typing, the track's schema, every name and setting: one line naming file and key
    TRACK, PLAN = gridlib.load_plan(config, workflow.overwrite_configfiles or [f"{workflow.basedir}/{DEFAULT_GRID}"],
                                    workflow.config_settings.config)
except gridlib.USER_ERRORS as e:
    sys.exit(f"adaptbench: error: {e}")


include: "workflows/rules/common.smk"
include: str(TRACK.rules)
include: "workflows/rules/report.smk"


rule all:
    input:
        [] if REPORT_ONLY else result_files(),  # a rerun retries failed cells though a partial report exists
        report_targets(),
    default_target: True
