"""The LLM track through Snakemake: a tiny grid end to end (tiny random Llama, synthetic task, lm-eval),
and the paper grids' dry-runs listing GPU jobs with bf16 and gradient accumulation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]

TINY_LLM = {"grid": "tiny_llm", "kind": "llm", "methods": ["lora", {"name": "lora_r4", "method": "lora",
                                                                     "params": {"r": 4}}],
            "models": ["tiny-llama"], "tasks": ["syn_category"], "seeds": [0], "zero_shot": True,
            "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 320, "max_train_samples": 16},
            "eval": {"tasks": ["syn_category"], "limit": 8, "batch_size": 8, "bootstrap_iters": 10}}


def snakemake(*args, cwd, extra_env=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def test_tiny_llm_grid_end_to_end(tmp_path):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(TINY_LLM))
    proc = snakemake("-d", str(tmp_path), "--configfile", str(tmp_path / "grid.yaml"), "--cores", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (tmp_path / "reports" / "tiny_llm" / "README.md").read_text()
    assert "| zero-shot" in text and "| lora " in text and "| lora_r4" in text and "syn_category" in text
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "cells").glob("*/result.json")]
    assert len(records) == 3 and {r["track"] for r in records} == {"llm"}
    assert len({r["protocol_hash"] for r in records}) == 1  # zero-shot and both LoRAs: one protocol
    assert all((p.parent / "lm_eval_results.json").is_file() for p in (tmp_path / "results" / "cells").glob("*/result.json"))


def fake_data(root: Path) -> Path:
    """Stand-ins for the local test sets the paper grids score (only their presence is read by a dry-run)."""
    from adaptbench.tracks.llm.lmeval import LA, MC_SOURCES

    (root / "gsm8k").mkdir(parents=True)
    (root / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2\n#### 2"}) + "\n")
    for folder in MC_SOURCES.values():
        (root / LA / folder).mkdir(parents=True)
        (root / LA / folder / "test.json").write_text("[]")
    return root


@pytest.mark.parametrize("grid, cells, accumulation", [
    ("llama2_7b_metamath", 7, 32),  # six methods + the zero-shot row; batch 128 = 4 × 32
    ("llama7b_commonsense", 3, 4),  # LoRA, PEFT's DoRA + the zero-shot row; batch 16 = 4 × 4
])
def test_paper_grid_dry_run_lists_gpu_jobs_with_bf16_and_accumulation(grid, cells, accumulation, tmp_path):
    data = fake_data(tmp_path / "data")
    proc = snakemake("-n", "-p", "--profile", "slurm", "--configfile", f"workflows/grids/{grid}.yaml",
                     "--config", f"data_dir={data}", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports",
                     cwd=REPO, extra_env={"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    blocks = [b for b in proc.stdout.split("rule ") if b.startswith("llm_cell:")]
    assert len(blocks) == cells
    assert all("gpu=1" in b and "mem_mb=120000" in b for b in blocks)
    assert all('"precision":"bf16"' in b and f'"grad_accum_steps":{accumulation}' in b
               for b in blocks if "zero_shot" not in b)


def test_offline_the_hub_training_set_is_unavailable_and_only_the_zero_shot_row_runs():
    from adaptbench.grid import plan

    cfg = yaml.safe_load((REPO / "workflows" / "grids" / "llama2_7b_metamath.yaml").read_text())
    os.environ["HF_HUB_OFFLINE"] = "1"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = plan({**cfg, "data_dir": str(fake_data(Path(tmp)))})
    assert "metamathqa" in result.unavailable and "not available offline" in result.unavailable["metamathqa"]
    assert [c.label for c in result.cells] == ["zero-shot"]
