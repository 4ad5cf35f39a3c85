"""Real MiniLM on real GLUE subsets (../shared/data); skipped when the data is absent."""

import pytest

from adaptbench.tracks.finetune.job import evaluate_checkpoint
from adaptbench.tracks.finetune.job import train

pytestmark = pytest.mark.integration


def test_minilm_lora_learns_sst2_from_a_small_subset(shared_glue, tmp_path):
    record = train(method="lora", model="minilm", task="sst2", seed=0, out_dir=tmp_path, data_dir=str(shared_glue),
                   train_params={"epochs": 2, "max_train_samples": 512, "max_eval_samples": 200, "lr": 3e-3,
                                 "max_length": 64, "batch_size": 32}, progress=False)
    info = record["run_info"]
    assert info["data"]["validation"]["rows"] == 200 and "SST-2/dev.tsv" in info["data"]["validation"]["source"]
    assert info["model_info"]["weights_sha256"]
    acc = record["train_info"]["history"][-1]["metrics"]["acc"]
    assert acc > 0.65, acc  # chance is ~0.5; 32 LoRA steps on pretrained MiniLM reach ~0.74
    result = evaluate_checkpoint(tmp_path, tmp_path / "result.json", data_dir=str(shared_glue))
    assert result["metrics"]["acc"]["value"] == pytest.approx(acc)
    assert str(shared_glue.resolve()) not in (tmp_path / "result.json").read_text()  # no machine paths


def test_minilm_full_on_stsb_reports_pearson_and_spearman(shared_glue, tmp_path):
    record = train(method="full", model="minilm", task="stsb", seed=0, out_dir=tmp_path, data_dir=str(shared_glue),
                   train_params={"epochs": 3, "max_train_samples": 256, "max_eval_samples": 100, "lr": 1e-4,
                                 "max_length": 64, "batch_size": 32}, progress=False)
    scores = record["train_info"]["history"][-1]["metrics"]
    assert set(scores) == {"pearson", "spearman"} and all(-1 <= v <= 1 for v in scores.values())
    assert record["run_info"]["data"]["train"]["rows"] == 256
    curve = record["train_info"]["loss_curve"]
    assert sum(curve[-5:]) < sum(curve[:5]), curve  # MSE on the 0-5 scores falls from the untrained head's level
