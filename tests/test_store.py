"""The committed store (results/): records and grid indexes only, nothing of this machine in them."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def committed() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / line for line in out.stdout.splitlines()]


def test_only_records_and_indexes_are_committed():
    allowed = {"result.json", "train.json", "lm_eval_results.json", "index.json", "failure.json", "README.md"}
    assert all(p.name in allowed for p in committed()), [p for p in committed() if p.name not in allowed][:5]


def test_no_absolute_path_of_this_machine_in_the_store():
    roots = {str(REPO), str(REPO.parent)}
    bad = [p for p in committed() if p.is_file() and any(r in p.read_text(errors="replace") for r in roots)]
    assert not bad, bad[:5]


def test_every_record_sits_in_the_folder_its_hash_names():
    for path in committed():
        if path.name == "result.json":
            record = json.loads(path.read_text())
            assert record["config_hash"] == path.parent.name, path
