"""A grid stored the way the workflow stores it, for the compare tests: every cell computed by the real job
(``run(cell, folder)`` → its record), named by the hash the grid computes, and the grid's index."""

from adaptbench import grid as gridlib


def store_grid(root, config: dict, run) -> None:
    plan = gridlib.plan(config)
    for cell in plan.cells:
        record = run(cell, root / "cells" / cell.key)
        assert record["config_hash"] == cell.key  # the job names its cell as the grid does
    kind = config.get("kind", "finetune")
    gridlib.write_index(root / "grids" / config["grid"] / "index.json", gridlib.index_json(plan, config["grid"], kind))
