"""For the compare tests: a grid stored the way the workflow stores it (every cell computed by the real job,
``run(cell, folder)`` → its record, named by the hash the grid computes, and the grid's index), and the fixture
that unregisters the method files a test module loaded."""

import pytest

from adaptbench import grid as gridlib
from adaptbench.user_methods import forget


@pytest.fixture(autouse=True, scope="module")
def unregister_afterwards():
    """Methods loaded by a test module leave the registry with it (tests/test_manifest.py compares it with the
    manifest). Import it into the module that loads method files."""
    yield
    forget()


def store_grid(root, config: dict, run) -> None:
    plan = gridlib.plan(config)
    for cell in plan.cells:
        record = run(cell, root / "cells" / cell.key)
        assert record["config_hash"] == cell.key  # the job names its cell as the grid does
    kind = config.get("kind", "finetune")
    gridlib.write_index(root / "grids" / config["grid"] / "index.json", gridlib.index_json(plan, config["grid"], kind))
