# adaptbench: a grid (method × model × task × seed) → one job per cell → result records → report.
#   snakemake -n                                          # the DAG of the default (demo) grid
#   snakemake --cores 2                                   # run it
#   snakemake --cores 2 --configfile workflows/grids/glue_minilm.yaml --config data_dir=../shared/data/glue
#   snakemake --profile slurm --configfile workflows/grids/lora_roberta_base_glue.yaml
#   snakemake --cores 2 --configfile workflows/grids/tta_demo.yaml       # test-time adaptation
# The grid's `kind` picks its track (adaptbench/tracks/<kind>/, workflows/rules/<kind>.smk).
# Parse time imports no torch: each SLURM job re-parses this file.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

if not workflow.overwrite_configfiles:  # a --configfile grid replaces the demo instead of merging into it
    configfile: "workflows/grids/demo.yaml"

sys.path.insert(0, workflow.basedir)  # the adaptbench package of this checkout, installed or not
from adaptbench.grid import typed_config
from adaptbench.tracks import get_track

config.update(typed_config(config))  # --config seeds=[0,1] arrives as strings
TRACK = get_track(config.get("kind", "finetune"))
validate(config, str(TRACK.schema))


include: "workflows/rules/common.smk"
include: str(TRACK.rules)
include: "workflows/rules/report.smk"


rule all:
    input:
        report_targets(),
    default_target: True
