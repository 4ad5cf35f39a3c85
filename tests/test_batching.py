"""Length-grouped training batches (train.group_by_length): the sampler's contract, its reproducibility
under the training loop, the cell hashes of stored cells, and evaluation in length order."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adaptbench.batching import (LengthGroupedSampler, epoch_batches, length_grouped_order, mega_batch_size,
                                 order_batches, padding_fraction, train_loader)
from adaptbench.config import TrainConfig
from adaptbench.loop import Run, fit
from adaptbench.protocol import Adapter
from adaptbench.results import config_hash

REPO = Path(__file__).resolve().parent.parent


def lengths_(n=203, seed=0):
    return np.random.default_rng(seed).integers(3, 120, size=n).tolist()


def order(lengths, batch_size, seed):
    return length_grouped_order(lengths, batch_size, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,batch_size", [(203, 8), (1000, 4), (7, 16), (1, 1)])
def test_an_epoch_is_a_permutation_of_every_index(n, batch_size):
    lengths = lengths_(n)
    assert sorted(order(lengths, batch_size, 0)) == list(range(n))
    sampler = LengthGroupedSampler(lengths, batch_size, torch.Generator().manual_seed(0))
    assert len(sampler) == n and sorted(sampler) == list(range(n))


def test_batches_have_similar_lengths():
    lengths, bs = lengths_(1000), 8
    grouped = order(lengths, bs, 0)
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    pf_grouped = padding_fraction(lengths, order_batches(grouped, bs))
    pf_random = padding_fraction(lengths, order_batches(shuffled, bs))
    assert pf_grouped < 0.1 < 0.3 < pf_random
    # each mega-batch is sorted longest first (the first position of the first one holds the epoch's longest)
    size = mega_batch_size(1000, bs)
    assert size == 31 * bs  # ⌊1000 / (4 × 8)⌋ = 31 batches: about four mega-batches
    for start in range(0, 1000, size):
        mega = [lengths[i] for i in grouped[start:start + size]][1:]
        assert mega == sorted(mega, reverse=True)
    assert lengths[grouped[0]] == max(lengths)


def test_mega_batches_are_at_most_fifty_batches_and_about_four_on_a_small_set():
    assert mega_batch_size(100_000, 16) == 50 * 16
    assert mega_batch_size(256, 16) == 4 * 16  # the grids' 256-example subsets: 4 mega-batches
    assert mega_batch_size(10, 16) == 16


def test_deterministic_for_a_seed_different_across_seeds_and_epochs():
    lengths = lengths_()
    assert order(lengths, 8, 0) == order(lengths, 8, 0)
    assert order(lengths, 8, 0) != order(lengths, 8, 1)
    gen = torch.Generator().manual_seed(0)
    sampler = LengthGroupedSampler(lengths, 8, gen)
    state = gen.get_state()
    first, second = list(sampler), list(sampler)
    assert first != second  # a new order every epoch
    gen.set_state(state)  # what loop.fit does on resume: the epoch's start state gives the epoch's order
    assert list(sampler) == first


def test_sampler_rejects_a_bad_batch_size_or_no_generator():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler([1, 2], 0, torch.Generator())
    with pytest.raises(ValueError, match="torch.Generator"):
        LengthGroupedSampler([1, 2], 2, None)


class Rows(torch.utils.data.Dataset):
    """Examples of given lengths; each item carries its index, so the batches fit trains on can be read."""

    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return {"x": torch.full((3,), float(self.lengths[i])), "labels": torch.tensor(float(i % 2)),
                "idx": torch.tensor(i)}


@pytest.mark.parametrize("grouped", [True, False])
def test_epoch_batches_replays_the_batches_fit_trains_on(grouped):
    lengths, bs = lengths_(45), 4
    gen = torch.Generator().manual_seed(3)
    loader = train_loader(Rows(lengths), bs, None, gen, grouped)
    start = gen.get_state()
    seen = []

    def loss_fn(model, batch):
        seen.append(batch["idx"].tolist())
        return ((model(batch["x"] / 100).squeeze(-1) - batch["labels"]) ** 2).mean()

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = Run(model, Adapter(None), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), loader, gen, loss_fn,
              evaluate=lambda m: {}, trained={n for n, _ in model.named_parameters()})
    fit(run, TrainConfig(epochs=2, batch_size=bs, group_by_length=grouped), torch.device("cpu"), progress_bar=False)
    epoch1 = epoch_batches(loader, start)
    assert seen[:len(epoch1)] == epoch1 and len(seen) == 2 * len(epoch1)
    assert seen[len(epoch1):] != epoch1  # epoch 2 draws a new order
    if grouped:
        assert padding_fraction(lengths, epoch1) < padding_fraction(lengths, order_batches(range(45), bs))


def test_random_batching_is_the_loader_stored_cells_ran_with():
    """group_by_length false: the same batches as the plain shuffled loader every stored cell used."""
    data = Rows(lengths_(30))
    new = train_loader(data, 4, None, torch.Generator().manual_seed(5), False)
    old = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        assert [b["idx"].tolist() for b in new] == [b["idx"].tolist() for b in old]


# ---- the setting, and the hashes of stored cells ---------------------------------------------------

def test_semantic_omits_false_and_includes_true():
    assert TrainConfig().group_by_length is True
    assert TrainConfig().semantic()["group_by_length"] is True
    assert "group_by_length" not in TrainConfig(group_by_length=False).semantic()
    assert "group_by_length" in TrainConfig(group_by_length=False).to_dict()  # records say it in full
    assert "group_by_length" not in TrainConfig().protocol()  # an order, not a budget: see PROTOCOL_KEYS


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_a_non_boolean_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match=r"^train.group_by_length must be true or false, got") as e:
        TrainConfig.from_dict({"group_by_length": bad})
    assert "\n" not in str(e.value)


def cell(train):
    from adaptbench.tracks.finetune.grid import cell_config

    return config_hash(cell_config(method="lora", method_params={}, model="minilm", task="sst2", seed=0,
                                   train=train, data_dir=None))


def test_a_stored_cells_hash_is_unchanged_and_a_grouped_cell_is_new():
    train = {"epochs": 3, "batch_size": 16, "max_length": 64, "max_train_samples": 256}
    assert cell({**train, "group_by_length": False}) == cell_without_the_field(train)
    assert cell(train) == cell({**train, "group_by_length": True}) != cell({**train, "group_by_length": False})


def cell_without_the_field(train):
    """The hash as computed before the field existed: the semantic dict without it."""
    from adaptbench import manifest, tasks
    from adaptbench.grid import model_key

    semantic = {k: v for k, v in TrainConfig.from_dict(train).semantic().items() if k != "group_by_length"}
    return config_hash({"track": "finetune", "method": "lora", "method_params": manifest.resolve_params("lora", {}),
                        "model": model_key("minilm"), "task": "sst2", "task_version": tasks.get_task("sst2").version,
                        "seed": 0, "train": semantic, "data": None})


def stored_finetune_records():
    for path in sorted((REPO / "results" / "cells").glob("*/result.json")):
        record = json.loads(path.read_text())
        if record.get("track") == "finetune" and record.get("status") == "ok":
            yield path.parent.name, record


def test_stored_records_keep_their_hashes():
    """Every stored fine-tuning cell, recomputed from its record, gives the folder it is stored in (a
    run_info.train without group_by_length ran before the field existed: random batches)."""
    from adaptbench.tracks.finetune.grid import cell_config

    records = list(stored_finetune_records())
    if not records:
        pytest.skip("no stored fine-tuning records")
    for key, record in records:
        info = record["run_info"]
        train = TrainConfig.from_record(info["train"])
        if "group_by_length" not in info["train"]:
            assert train.group_by_length is False
        data_dir = None if info["data_dir"] is None else f"/anywhere/{info['data_dir']}"  # the folder's name is hashed
        config = cell_config(method=info["method"], method_params=info["method_params"], model=info["model"],
                             task=info["task"], seed=info["seed"], train=train.to_dict(), data_dir=data_dir)
        assert config_hash(config) == key == record["config_hash"]


# ---- evaluation in length order --------------------------------------------------------------------

def test_sorted_evaluation_returns_the_unsorted_predictions_in_the_original_order(tiny):
    from adaptbench import tasks
    from adaptbench.evaluate import predict, predict_logits

    torch.set_num_threads(1)
    spec = tasks.get_task("syn_sentiment")
    split = tasks.load_split(spec, "validation", max_samples=50)
    model, tokenizer = tiny(spec.num_labels, seed=1)
    cfg = TrainConfig(eval_batch_size=8, max_length=64)
    cpu = torch.device("cpu")
    lengths = [len(tokenizer(*t)["input_ids"]) for t in split.texts]
    assert len(set(lengths)) > 3  # lengths vary: the sorted pass batches them differently
    sorted_, plain = (predict_logits(model, tokenizer, split, spec, cfg, cpu, sort_by_length=s) for s in (True, False))
    assert sorted_.shape == plain.shape == (len(split), spec.num_labels)
    assert torch.allclose(sorted_, plain, atol=1e-5, rtol=1e-4)
    top2 = plain.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # argmax ties (within rounding) may flip
    a, b = (predict(model, tokenizer, split, spec, cfg, cpu, sort_by_length=s) for s in (True, False))
    assert clear.sum() > len(split) // 2 and (a[clear.numpy()] == b[clear.numpy()]).all()
