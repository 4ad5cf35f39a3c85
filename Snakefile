# adaptbench: method × model × task × seed → fine-tune → evaluate → collate → report.
#   snakemake -n                                          # the DAG of the default (demo) grid
#   snakemake --cores 2                                   # run it
#   snakemake --cores 2 --configfile workflows/grids/glue_minilm.yaml --config data_dir=../shared/data/glue
#   snakemake --profile slurm --configfile workflows/grids/lora_roberta_base_glue.yaml
# Parse time imports no torch: each SLURM job re-parses this file.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

if not workflow.overwrite_configfiles:  # a --configfile grid replaces the demo instead of merging into it
    configfile: "workflows/grids/demo.yaml"

sys.path.insert(0, workflow.basedir)  # the adaptbench package of this checkout, installed or not
from adaptbench.grid import typed_config

config.update(typed_config(config))  # --config seeds=[0,1] arrives as strings
validate(config, "workflows/schemas/grid.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/finetune.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/report.smk"


rule all:
    input:
        report_targets(),
    default_target: True
