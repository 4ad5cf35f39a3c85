"""The LLM track's job: one cell = fine-tune a causal LM with one method on an instruction set, fold the
update into plain weights where the method allows, and score the in-memory model with lm-eval →
result.json, lm-eval's results (lm_eval_results.json) and per-sample log (lm_eval_samples.jsonl).

Training and scoring share one process: a 7B model (or the minute-long GGUF de-quantisation of
SmolLM2) is loaded once. The zero-shot cell skips training. Reads top to bottom: seed → data → model →
method.apply → optimizer → ``loop.fit`` (response-only causal loss) → merge → lm-eval → record.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from adaptbench import models
from adaptbench.build import build_optimizer, linear_warmup_decay, optimizer_method, peak_memory_bytes, pick_device, seed_everything
from adaptbench.config import TrainConfig
from adaptbench.loop import Run, fit, steps_per_epoch
from adaptbench.registry import get_method
from adaptbench.results import atomic_write_json, atomic_write_text, config_hash, folder_name, make_record, metric
from adaptbench.tracks.llm import lmeval, sets
from adaptbench.tracks.llm.data import Encoded, causal_lm_loss, make_collate
from adaptbench.tracks.llm.grid import TRACK, ZERO_SHOT, cell_config, eval_settings, train_config, user_task_versions
from adaptbench.tracks.llm.models import load_causal_lm

RESUME_FILE = "resume.pt"


def run_cell(*, method: str, model: str, task: str, seed: int, out_dir: str | Path, method_params: dict | None = None,
             train_params: dict | None = None, evaluation: dict | None = None, data_dir: str | None = None,
             device: str | None = None, threads: int | None = None, label: str | None = None,
             progress: bool = False) -> dict:
    out_dir = Path(out_dir)
    method_params = dict(method_params or {})
    cfg = train_config(train_params)
    ev = eval_settings({"eval": evaluation or {}})
    if ev.get("include_path"):  # called with the grid's eval settings as written (a job gets user_tasks instead)
        lmeval.use_include_path(ev["include_path"])
    ev.pop("include_path", None)
    for t in ev["tasks"]:
        reason = lmeval.unavailable_reason(t, data_dir)
        if reason:
            raise FileNotFoundError(f"evaluation task '{t}': {reason}")
    found = user_task_versions(ev["tasks"])
    planned = ev.setdefault("user_tasks", found) if found or "user_tasks" in ev else {}
    if found != planned:  # the researcher's task YAML or data changed since the grid was planned
        name = sorted(set(found.items()) ^ set(planned.items()))[0][0]
        raise ValueError(f"evaluation task '{name}': its YAML or data is not the version this cell names "
                         f"({planned.get(name)} planned, {found.get(name)} now); rerun snakemake to plan it again")
    spec = get_method(method) if method != ZERO_SHOT else None
    method_cfg = spec.make_config(method_params) if spec else None  # fails fast on a bad hyperparameter
    config = cell_config(method=method, method_params=asdict(method_cfg) if method_cfg else {}, model=model, task=task,
                         seed=seed, train=cfg.to_dict(), data_dir=data_dir, evaluation=ev)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    seed_everything(seed)

    data = sets.load_instructions(task, data_dir, cfg.max_train_samples, cfg.subset_seed)
    loaded = load_causal_lm(model, seed=seed)
    net, tokenizer = loaded.model, loaded.tokenizer
    train_info = {"steps": 0, "epochs": 0, "wall_seconds": 0.0, "params": None}
    merged = False
    if spec is not None:
        opt_method = optimizer_method(cfg)
        method_obj = spec.build(method_params)
        torch.manual_seed(seed)
        net = method_obj.apply(net)
        if opt_method is not None:
            net = opt_method.prepare_model(net)
        if cfg.gradient_checkpointing:
            net.gradient_checkpointing_enable()
        net.to(dev)
        encoded = Encoded(tokenizer, data, cfg.max_length)
        if not len(encoded):
            raise ValueError(f"train.max_length {cfg.max_length}: every one of the {len(data)} prompts fills it, so no "
                             "response token is left to train on; raise train.max_length")
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(encoded, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                            collate_fn=make_collate(tokenizer.pad_token_id))
        method_obj.prepare(net, loader)
        params = models.count_parameters(net)
        trained = {n for n, p in net.named_parameters() if p.requires_grad}
        optimizer = build_optimizer(net, cfg, opt_method)
        total = cfg.epochs * steps_per_epoch(loader, cfg.grad_accum_steps)
        scheduler = linear_warmup_decay(optimizer, math.ceil(cfg.warmup_ratio * total), total)
        run = Run(model=net, method=method_obj, optimizer=optimizer, scheduler=scheduler, loader=loader,
                  generator=generator, loss_fn=causal_lm_loss, trained=trained, evaluate=lambda m: {})
        done = fit(run, cfg, dev, checkpoint=out_dir / RESUME_FILE, fingerprint=config_hash(config),
                   progress_bar=progress, desc=f"{method}/{model}/{task} seed {seed}")
        losses = done.losses
        train_info = {
            "steps": done.step, "epochs": cfg.epochs, "wall_seconds": round(done.wall_seconds, 2),
            "seconds_per_step": round(done.wall_seconds / max(done.step, 1), 4),
            "peak_memory_bytes": peak_memory_bytes(dev),
            "optimizer_state_bytes": _state_bytes(optimizer), "params": params,
            "examples": len(encoded), "dropped_examples": encoded.dropped, "truncated_examples": encoded.truncated,
            "max_length": cfg.max_length, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "loss_curve": [round(float(np.mean(c)), 5) for c in np.array_split(np.array(losses), min(20, len(losses)))]
            if losses else [],
            "history": done.history, "hooks": done.hooks,
        }
        if spec.mergeable:
            net, merged = method_obj.merge(net), True
    net.to(dev).eval()

    t0 = time.time()
    scores, raw = lmeval.evaluate(net, tokenizer, ev["tasks"], data_dir, out_dir / "lm_eval_tasks", limit=ev["limit"],
                                  batch_size=ev["batch_size"], bootstrap_iters=ev["bootstrap_iters"],
                                  num_fewshot=ev["num_fewshot"], max_gen_toks=ev["max_gen_toks"],
                                  task_limit=ev["task_limit"])
    eval_seconds = round(time.time() - t0, 2)
    bad = [name for name, s in scores.items() if not math.isfinite(s["value"])]
    if bad:
        raise FloatingPointError(f"non-finite lm-eval scores {bad}")
    atomic_write_json(out_dir / "lm_eval_results.json", {"results": raw["results"]})
    atomic_write_text(out_dir / "lm_eval_samples.jsonl",
                      "".join(json.dumps({"task": t, **s}, default=str) + "\n"
                              for t, samples in raw["samples"].items() for s in samples))
    import lm_eval

    protocol = {"track": TRACK, "model": {k: v for k, v in loaded.info.items() if k != "model"},
                "train_set": {"name": task, "sha256": data.sha256, "rows": len(data)},
                "budget": cfg.protocol(), "eval": ev, "lm_eval": getattr(lm_eval, "__version__", None), "seed": seed}
    record = make_record(
        track=TRACK, config=config, protocol=protocol,
        run_info={"method": method, "method_params": asdict(method_cfg) if method_cfg else {}, "model": model,
                  "task": task, "seed": seed, "train": cfg.to_dict(), "data_dir": folder_name(data_dir),
                  "label": label or method, "family": spec.family if spec else "baseline",
                  "paper": {"title": spec.paper.title, "arxiv": spec.paper.arxiv} if spec else None,
                  "model_info": loaded.info, "synthetic": data.synthetic or ev["tasks"] == ["syn_category"],
                  "data": {"train": {"source": data.source, "sha256": data.sha256, "rows": len(data)}},
                  "device": str(dev), "threads": torch.get_num_threads()},
        train_info=train_info,
        metrics={name: metric(s["value"], True, name.split("/")[0], s["stderr"]) for name, s in scores.items()},
        eval_info={"merged": merged, "eval_seconds": eval_seconds, "tasks": ev["tasks"], "limit": ev["limit"],
                   "batch_size": raw.get("batch_size")},
    )
    atomic_write_json(out_dir / "result.json", record)
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return record


def _state_bytes(optimizer) -> int:
    from adaptbench.protocol import optimizer_state_bytes

    return optimizer_state_bytes(optimizer)
