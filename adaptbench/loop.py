"""The training loop, read top to bottom: one optimizer step is ``before_step`` → forward under autocast
→ task loss (+ the method's regulariser) → backward (scaled for fp16, divided over accumulated
micro-batches) → clip → ``on_gradients`` → optimizer and schedule step → ``on_step``; each epoch ends
with an evaluation. Method hooks are plain calls and may return scalars, which are logged.

Preemption-safe: every ``checkpoint_every`` steps, and when SIGTERM arrives (SLURM sends it before a
time limit or a preemption), the loop saves a resumable checkpoint — trained tensors and buffers, the
optimizer, schedule and grad scaler, every RNG, the data loader's position, the loss history and the
method's own state — and a rerun of the same cell resumes from it. On CPU the resumed run's metrics are
bitwise those of an uninterrupted run (tests/test_resume.py kills a real training process to check it).
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm as tqdm_std  # not tqdm.auto: its constructor iterates eagerly

from adaptbench.config import TrainConfig
from adaptbench.results import atomic_torch_save

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the job stopped itself after saving; a rerun resumes


class Preempted(Exception):
    """SIGTERM arrived; a resumable checkpoint was saved at ``step``."""

    def __init__(self, step: int, path: Path):
        super().__init__(f"stopped by SIGTERM after step {step}; resumable checkpoint {path.name} saved, rerun to resume")
        self.step, self.path = step, path


@dataclass
class Progress:
    """Everything the loop accumulates, saved with a resumable checkpoint."""

    step: int = 0
    epoch: int = 1  # the epoch in progress
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    losses: list = field(default_factory=list)  # one per optimizer step
    history: list = field(default_factory=list)  # one per finished epoch: {epoch, step, train_loss, metrics}
    hooks: dict = field(default_factory=dict)  # hook name → scalar name → list of (step, value)
    wall_seconds: float = 0.0


def _log_hook(progress: Progress, hook: str, out: dict | None) -> None:
    for key, value in (out or {}).items():
        progress.hooks.setdefault(hook, {}).setdefault(key, []).append((progress.step, float(value)))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks after each optimizer step (never mid-step)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class Run:
    """What the loop trains: built by the track's job (``build.py``)."""

    model: torch.nn.Module
    method: object  # the adapter (its hooks), or any object with the Adapter hook signatures
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: torch.utils.data.DataLoader
    generator: torch.Generator  # the loader's shuffling generator
    loss_fn: Callable  # loss_fn(model, batch) -> scalar tensor (the task's objective)
    evaluate: Callable  # evaluate(model) -> {metric: value}, at the end of every epoch
    trained: set  # names of the parameters the run trains (taken before training)


def steps_per_epoch(loader, accum: int) -> int:
    return -(-len(loader) // accum)


def fit(run: Run, cfg: TrainConfig, device: torch.device, *, checkpoint: Path | None = None,
        fingerprint: str = "", progress_bar: bool = True, desc: str = "") -> Progress:
    model, method, optimizer, scheduler = run.model, run.method, run.optimizer, run.scheduler
    accum = cfg.grad_accum_steps
    total_steps = cfg.epochs * steps_per_epoch(run.loader, accum)
    autocast_dtype = AUTOCAST_DTYPES.get(cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    trainable = [p for p in model.parameters() if p.requires_grad]

    progress, epoch_start_gen = Progress(), None
    resumed = checkpoint is not None and checkpoint.is_file()
    if resumed:
        progress, epoch_start_gen, rng = _load_checkpoint(checkpoint, run, scaler, fingerprint)

    t0 = time.time() - progress.wall_seconds
    with _SigtermFlag() as sigterm:
        for epoch in range(progress.epoch, cfg.epochs + 1):
            progress.epoch = epoch
            if epoch_start_gen is not None:  # resuming inside this epoch: the same shuffle as before
                run.generator.set_state(epoch_start_gen)
            epoch_start_gen = run.generator.get_state()
            # The loop before Core II iterated the loader through tqdm.auto, whose constructor opens an
            # iterator it never uses: one base-seed draw from the shuffling generator per epoch. Drawn
            # here on purpose, so cells computed before and after the refactor see the same batches.
            torch.empty((), dtype=torch.int64).random_(generator=run.generator)
            batches = iter(run.loader)
            for _ in range(progress.batch_in_epoch):  # skip what the interrupted run consumed
                next(batches)
            if resumed:  # after the skip: dropout etc. continue from the saved state
                set_rng_state(rng)
                resumed = False
            model.train()
            bar = tqdm_std(batches, desc=f"{desc} epoch {epoch}/{cfg.epochs}", disable=not progress_bar, mininterval=5,
                       initial=progress.batch_in_epoch, total=len(run.loader))
            micro_losses = []
            for batch in bar:
                if progress.batch_in_epoch % accum == 0:
                    _log_hook(progress, "before_step", method.before_step(model, progress.step, total_steps))
                batch = {k: v.to(device) for k, v in batch.items()}
                with (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                      else contextlib.nullcontext()):
                    loss = run.loss_fn(model, batch)
                    extra = method.extra_loss(model)
                    if extra is not None:
                        loss = loss + extra
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {progress.step} "
                                             f"(epoch {epoch}); lower train.lr")
                scaler.scale(loss if accum == 1 else loss / accum).backward()
                micro_losses.append(loss.item())
                progress.batch_in_epoch += 1
                if progress.batch_in_epoch % accum and progress.batch_in_epoch < len(run.loader):
                    continue  # more micro-batches before this optimizer step

                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                _log_hook(progress, "on_gradients", method.on_gradients(model, progress.step, total_steps))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                _log_hook(progress, "on_step", method.on_step(model, progress.step, total_steps))
                progress.losses.append(float(np.mean(micro_losses)) if accum > 1 else micro_losses[0])
                micro_losses = []
                progress.step += 1
                bar.set_postfix(loss=f"{progress.losses[-1]:.4f}")
                due = cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0
                if checkpoint is not None and (due or sigterm.raised):
                    progress.wall_seconds = time.time() - t0
                    _save_checkpoint(checkpoint, run, scaler, progress, epoch_start_gen, fingerprint)
                    if sigterm.raised:
                        raise Preempted(progress.step, checkpoint)
            epoch_losses = progress.losses[-steps_per_epoch(run.loader, accum):]
            progress.history.append({"epoch": epoch, "step": progress.step,
                                     "train_loss": float(np.mean(epoch_losses)) if epoch_losses else None,
                                     "metrics": run.evaluate(model)})
            progress.batch_in_epoch = 0
            epoch_start_gen = None
    progress.epoch = cfg.epochs
    progress.wall_seconds = time.time() - t0
    return progress


# ---- resumable checkpoints -------------------------------------------------------------------------

def _save_checkpoint(path: Path, run: Run, scaler, progress: Progress, epoch_start_gen, fingerprint: str) -> None:
    model = run.model
    state = {
        "fingerprint": fingerprint,
        "tensors": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in run.trained},
        "buffers": {n: b.detach().cpu().clone() for n, b in model.named_buffers()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "method": run.method.state_dict(),
        "generator": epoch_start_gen,
        "rng": rng_state(),
        "progress": progress.__dict__,
    }
    atomic_torch_save(state, path)


def _load_checkpoint(path: Path, run: Run, scaler, fingerprint: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # RNG states are numpy objects
    except Exception as e:  # truncated or foreign file: name it, say how to recover
        raise ValueError(f"{path}: unreadable resumable checkpoint ({type(e).__name__}); delete it to start "
                         "the cell over") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise ValueError(f"{path}: resumable checkpoint of another configuration; delete it to start the cell over")
    model = run.model
    missing = [n for n in state["tensors"] if n not in dict(model.named_parameters())]
    if missing:
        raise ValueError(f"{path}: tensors {missing[:3]} do not fit the model; delete it to start the cell over")
    model.load_state_dict({**state["tensors"], **state["buffers"]}, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(state["requires_grad"].get(name, p.requires_grad))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    run.method.load_state_dict(state["method"])
    return Progress(**state["progress"]), state["generator"], state["rng"]
