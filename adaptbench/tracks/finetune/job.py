"""The fine-tuning track's jobs: ``init`` (a data-driven adapter's initialisation, cached),
``train`` (one cell: build → loop → train.json, then the trained model with mergeable methods folded into
plain weights is scored → result.json, the one record of adaptbench) and ``evaluate`` (re-score a stored
cell from its checkpoint.pt: the same scoring on the rebuilt model).

Reads top to bottom: seed → data → model → method.apply → optimizer → ``loop.fit`` → checkpoint → score.
Scoring in the training process saves the second job's fixed cost (imports, model and data loading) that
a separate evaluate job pays; ``rebuild_trained`` gives the same model, so both write the same record.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from adaptbench import models, tasks
from adaptbench.batching import epoch_batches, padding_fraction, train_loader
from adaptbench.build import (build_model, build_optimizer, linear_warmup_decay, optimizer_method, peak_memory_bytes,
                              pick_device, seed_everything, trainable_state)
from adaptbench.config import TrainConfig
from adaptbench.data import Encoded, make_collate, task_loss
from adaptbench.evaluate import evaluate_splits, metric_split
from adaptbench.loop import Run, fit, steps_per_epoch
from adaptbench.metrics import HIGHER_IS_BETTER
from adaptbench.registry import get_method
from adaptbench.results import (atomic_torch_save, atomic_write_json, config_hash, folder_name, make_record, metric,
                                read_json)
from adaptbench.tracks.finetune.grid import TRACK, cell_config

RESUME_FILE = "resume.pt"


def init_loader(data, cfg: TrainConfig, collate, seed: int) -> DataLoader:
    """The batches a data-driven init sees: its own generator, so the training order is the same
    whether the init was cached by the workflow or computed in the training job."""
    return DataLoader(data, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed + 7919))


def load_init(path: str | Path, method: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init state {path} does not exist; run the init step for '{method}' first")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, zero-byte or foreign file
        raise ValueError(f"{path}: unreadable init state ({type(e).__name__}); delete it and rerun the init step") from None
    if not isinstance(saved, dict) or saved.get("method") != method:
        raise ValueError(f"{path}: initialisation was computed for '{saved.get('method') if isinstance(saved, dict) else '?'}',"
                         f" not '{method}'")
    return saved["state"]


def compute_init(*, method: str, model: str, task: str, seed: int, out_path: str | Path,
                 method_params: dict | None = None, train_params: dict | None = None,
                 data_dir: str | None = None, threads: int | None = None) -> dict:
    """The init job: a data-driven adapter's ``init_state`` from training batches, saved atomically.

    Same seed, data subset and batch order as the training job, so ``train --init`` and an uncached
    ``prepare`` give the same model."""
    spec = tasks.get_task(task)
    get_method(method).make_config(method_params)
    cfg = TrainConfig.from_dict(train_params)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    train_split = tasks.load_split(spec, "train", data_dir, cfg.max_train_samples, cfg.subset_seed)
    method_obj, net, loaded = build_model(method, method_params, model, spec, seed)
    if not method_obj.DATA_DRIVEN:
        raise ValueError(f"method '{method}' has no data-driven initialisation")
    data = Encoded(loaded.tokenizer, train_split, cfg.max_length, spec.kind == "regression")
    t0 = time.time()
    state = method_obj.init_state(net, init_loader(data, cfg, make_collate(loaded.tokenizer), seed))
    info = {"method": method, "model": model, "task": task, "seed": seed, "seconds": round(time.time() - t0, 2),
            "tensors": len(state), "bytes": sum(t.numel() * t.element_size() for t in state.values())}
    atomic_torch_save({"method": method, "state": state, "info": info}, Path(out_path))
    return info


def _data_info(split: tasks.Split) -> dict:
    return {"source": split.source, "sha256": split.sha256, "rows": len(split)}


def train(*, method: str, model: str, task: str, seed: int, out_dir: str | Path,
          method_params: dict | None = None, train_params: dict | None = None,
          data_dir: str | None = None, device: str | None = None, threads: int | None = None,
          label: str | None = None, progress: bool = True, init_path: str | Path | None = None,
          score: bool = True) -> dict:
    """Train one cell into ``out_dir``: train.json, result.json (``score``), and what ``train.keep_checkpoint``
    asks for (checkpoint.pt: the trained tensors; model.pt: the merged model). Returns the training record
    (train.json's content, with the cell's ``config``)."""
    out_dir = Path(out_dir)
    spec = tasks.get_task(task)
    method_spec = get_method(method)
    method_cfg = method_spec.make_config(method_params)  # fails fast on a bad hyperparameter
    cfg = TrainConfig.from_dict(train_params)
    config = cell_config(method=method, method_params=asdict(method_cfg), model=model, task=task, seed=seed,
                         train=cfg.to_dict(), data_dir=data_dir)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    seed_everything(seed)

    # data: the same subset for every method and seed (subset_seed), so only training randomness varies
    train_split = tasks.load_split(spec, "train", data_dir, cfg.max_train_samples, cfg.subset_seed)
    eval_splits = {s: tasks.load_split(spec, s, data_dir, cfg.max_eval_samples, cfg.subset_seed)
                   for s in spec.eval_splits}

    opt_method = optimizer_method(cfg)  # fails fast on a bad optimizer name or hyperparameter
    method_obj, net, loaded = build_model(method, method_params, model, spec, seed, opt_method)
    if cfg.gradient_checkpointing:
        net.gradient_checkpointing_enable()
    net.to(dev)
    collate = make_collate(loaded.tokenizer)
    train_data = Encoded(loaded.tokenizer, train_split, cfg.max_length, spec.kind == "regression")
    generator = torch.Generator().manual_seed(seed)
    loader = train_loader(train_data, cfg.batch_size, collate, generator, cfg.group_by_length)
    epoch1_state = generator.get_state()  # epoch 1 draws its order from here (prepare() below draws nothing)
    init_state = None
    if method_obj.DATA_DRIVEN:  # cached by the init step, or computed here on the init step's batches
        init_state = (load_init(init_path, method) if init_path is not None
                      else method_obj.init_state(net, init_loader(train_data, cfg, collate, seed)))
        method_obj.load_init_state(net, init_state)
    else:
        method_obj.prepare(net, loader)
    params = models.count_parameters(net)  # after the init: EVA's ranks are redistributed there

    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(net, cfg, opt_method)
    total_steps = cfg.epochs * steps_per_epoch(loader, cfg.grad_accum_steps)
    scheduler = linear_warmup_decay(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    run = Run(model=net, method=method_obj, optimizer=optimizer, scheduler=scheduler, loader=loader,
              generator=generator, loss_fn=task_loss(spec), trained=trained,
              evaluate=lambda m: evaluate_splits(m, loaded.tokenizer, spec, eval_splits, cfg, dev))
    done = fit(run, cfg, dev, checkpoint=out_dir / RESUME_FILE, fingerprint=config_hash(config),
               progress_bar=progress, desc=f"{method}/{task} seed {seed}")

    history, losses = done.history, done.losses
    best = max(history, key=lambda h: h["metrics"][spec.main_metric])
    if cfg.keep_checkpoint != "none":
        checkpoint = {"trainable": trainable_state(net, trained)}
        if init_state is not None:  # re-scoring needs the frozen residual / ranks the init produced
            checkpoint["init_state"] = init_state
        atomic_torch_save(checkpoint, out_dir / "checkpoint.pt")
    record = {
        "config": config,
        "run_info": {
            "method": method, "method_params": asdict(method_cfg), "model": model, "task": task, "seed": seed,
            "train": cfg.to_dict(), "data_dir": folder_name(data_dir),
            "label": label or method,
            "family": method_spec.family,
            "paper": {"title": method_spec.paper.title, "arxiv": method_spec.paper.arxiv},
            "model_info": loaded.info,
            "task_version": spec.version,
            "synthetic": spec.is_synthetic,
            "data": {"train": _data_info(train_split), **{s: _data_info(d) for s, d in eval_splits.items()}},
            "device": str(dev),
            "threads": torch.get_num_threads(),
        },
        "train_info": {
            "status": "ok",
            "steps": done.step,
            "epochs": cfg.epochs,
            "wall_seconds": round(done.wall_seconds, 2),
            "seconds_per_step": round(done.wall_seconds / max(done.step, 1), 4),
            # padded / all tokens of epoch 1's training batches (replayed exactly, so a resumed run reports the same)
            "padding_fraction": round(padding_fraction(train_data.lengths, epoch_batches(loader, epoch1_state)), 4),
            "peak_memory_bytes": peak_memory_bytes(dev),
            "optimizer_state_bytes": _optimizer_state_bytes(optimizer),
            "params": params,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_curve": [round(float(np.mean(c)), 5) for c in np.array_split(np.array(losses), min(20, len(losses)))]
            if losses else [],
            "history": history,
            "best_epoch": best["epoch"],
            "hooks": done.hooks,
        },
    }
    atomic_write_json(out_dir / "train.json", record)
    (out_dir / RESUME_FILE).unlink(missing_ok=True)  # finished: nothing left to resume
    if not score:
        return record
    merged = method_spec.mergeable
    if merged:
        net = method_obj.merge(net)
    if cfg.keep_checkpoint == "all":
        atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out_dir / "model.pt")
    score_cell(record, net, loaded.tokenizer, merged, eval_splits, dev, out_dir / "result.json")
    return record


def _optimizer_state_bytes(optimizer) -> int:
    from adaptbench.protocol import optimizer_state_bytes

    return optimizer_state_bytes(optimizer)


def rebuild_trained(train_dir: str | Path):
    """A training job's model as deployed: rebuilt from train.json (method, then the optimizer's
    re-parameterisation), the data-driven init and the trained tensors loaded, mergeable methods folded.
    Returns (record, model, tokenizer, merged)."""
    train_dir = Path(train_dir)
    record = read_json(train_dir / "train.json")
    info = record["run_info"]
    spec = tasks.get_task(info["task"])
    method_obj, model, loaded = build_model(info["method"], info["method_params"], info["model"], spec, info["seed"],
                                            optimizer_method(TrainConfig.from_record(info["train"])))
    path = train_dir / "checkpoint.pt"
    if not path.is_file():
        kept = TrainConfig.from_record(info["train"]).keep_checkpoint
        raise FileNotFoundError(f"{path} not found; " + ("the cell was trained with train.keep_checkpoint: none, so it cannot"
                                                        " be re-scored (rerun it with trainable)" if kept == "none"
                                                        else "the training job did not finish"))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, zero-byte or foreign file
        raise ValueError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete the cell's folder and rerun it") from None
    if "init_state" in checkpoint:  # data-driven adapters: the init's frozen parts and ranks first
        method_obj.load_init_state(model, checkpoint["init_state"])
    state = checkpoint["trainable"]
    missing = [k for k in state if k not in dict(model.named_parameters())]
    if missing:
        raise ValueError(f"{path}: tensors {missing[:3]} do not fit the rebuilt model")
    model.load_state_dict(state, strict=False)
    merged = get_method(info["method"]).mergeable
    if merged:
        model = method_obj.merge(model)
    return record, model, loaded.tokenizer, merged


def protocol(info: dict, cfg: TrainConfig) -> dict:
    """What makes two fine-tuning cells comparable: model weights, task and data, budget, seed."""
    model = {k: v for k, v in info["model_info"].items() if k != "model"}  # weights, not the grid's alias
    return {"track": TRACK, "model": model, "task": info["task"], "task_version": info["task_version"],
            "data": {split: d["sha256"] for split, d in info["data"].items()}, "budget": cfg.protocol(),
            "seed": info["seed"]}


def evaluate_checkpoint(train_dir: str | Path, out_path: str | Path, data_dir: str | None = None,
                        device: str | None = None, threads: int | None = None) -> dict:
    """Re-score a stored cell: rebuild the trained model from train.json + checkpoint.pt, score it."""
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    record, model, tokenizer, merged = rebuild_trained(train_dir)
    info = record["run_info"]
    spec = tasks.get_task(info["task"])
    cfg = TrainConfig.from_record(info["train"])
    model.to(dev)
    splits = {s: tasks.load_split(spec, s, data_dir, cfg.max_eval_samples, cfg.subset_seed)
              for s in spec.eval_splits}
    return score_cell(record, model, tokenizer, merged, splits, dev, out_path)


def score_cell(record: dict, model, tokenizer, merged: bool, splits: dict, dev, out_path: str | Path) -> dict:
    """Score the trained (merged) model on the dev sets → the cell's result record, written atomically."""
    info = record["run_info"]
    spec = tasks.get_task(info["task"])
    cfg = TrainConfig.from_record(info["train"])
    t0 = time.perf_counter()
    last = evaluate_splits(model, tokenizer, spec, splits, cfg, dev)
    seconds = round(time.perf_counter() - t0, 3)
    train_info = record["train_info"]
    best = next(h for h in train_info["history"] if h["epoch"] == train_info["best_epoch"])["metrics"]
    metrics = {name: metric(value, HIGHER_IS_BETTER[name.removesuffix("_mm")], metric_split(spec, name),
                            best=best.get(name))
               for name, value in last.items()}
    result = make_record(
        track=TRACK, config=record["config"], protocol=protocol(info, cfg), run_info=info, train_info=train_info,
        metrics=metrics,
        eval_info={"merged": merged, "device": str(dev), "main_metric": spec.main_metric,
                   "selection": cfg.selection, "splits": {s: len(d) for s, d in splits.items()}, "seconds": seconds})
    atomic_write_json(out_path, result)
    return result
