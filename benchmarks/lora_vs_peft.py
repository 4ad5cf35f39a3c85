"""Our LoRA against PEFT's LoRA on MiniLM: training-step time and peak memory, as ratios in one run.

Same model, same batch, same config (r = 8, alpha = 8 on query and value, dropout 0, AdamW over the
LoRA factors and the classifier). Both variants train the same tensors: the 12 LoRA factor pairs and the
classifier (PEFT's SEQ_CLS ``modules_to_save``); the pooler and the embeddings stay frozen in both, and the
run stops if the trainable counts differ. Each variant runs in its own subprocess so peak memory is its own;
the variants alternate over repeats so that machine load hits both alike.

Step time, two ways: wall clock (``time.perf_counter``) and the process's CPU time (``time.process_time``).
On a shared machine whose other jobs take cores away, wall time swings by tens of per cent between runs
while CPU time stays within a few; with BENCH_THREADS=1 (one compute thread) CPU time is the steadier
measure of the work a step does. Both medians and both ratios are printed.

    python benchmarks/lora_vs_peft.py [--steps 20] [--repeats 3] [--batch-size 32] [--seq-len 128]

Memory, two ways: (1) deterministic training-state bytes = tensors autograd saves for backward in one
step (unique storages, via saved_tensors_hooks) + gradients + optimizer state; (2) on CUDA
torch.cuda.max_memory_allocated, on CPU the growth of the peak resident set over the steps (noisy: the
CPU allocator caches, so treat it as a sanity check, not a ratio to trust).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(variant: str, steps: int, batch_size: int, seq_len: int, device: str) -> dict:
    import resource

    import torch

    from adaptbench.models import HEAD_PREFIXES, load_for_classification
    from adaptbench.registry import get_method

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    loaded = load_for_classification("minilm", 2)
    model = loaded.model
    if variant == "ours":
        get_method("lora").build({"r": 8, "alpha": 8, "target_modules": ("query", "value")}).apply(model)
        for n, p in model.named_parameters():
            if n.startswith(HEAD_PREFIXES):
                p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"],
                                                 task_type="SEQ_CLS"))
    model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    text = "the acting was wonderful , but the plot was not nearly as clever as i expected it to be ."
    batch = loaded.tokenizer([text * 8] * batch_size, truncation=True, max_length=seq_len, padding="max_length",
                             return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["labels"] = torch.randint(0, 2, (batch_size,), generator=torch.Generator().manual_seed(0)).to(device)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: allocator, optimizer state
        step()
    saved = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt.zero_grad(set_to_none=True)
    from adaptbench.protocol import optimizer_state_bytes

    state_bytes = sum(saved.values()) + grad_bytes + optimizer_state_bytes(opt)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = current_rss_bytes()
    times, cpu_times = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"variant": variant, "step_seconds": statistics.median(times),
            "step_cpu_seconds": statistics.median(cpu_times), "peak_bytes": max(peak, 0),
            "training_state_bytes": state_bytes, "trainable": trainable}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--device", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.worker:
        print(json.dumps(worker(a.worker, a.steps, a.batch_size, a.seq_len, device)))
        return
    runs = []
    for r in range(a.repeats):
        for variant in ("ours", "peft") if r % 2 == 0 else ("peft", "ours"):
            proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(a.steps),
                                   "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--device", device],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"})
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {}
    for variant in ("ours", "peft"):
        mine = [x for x in runs if x["variant"] == variant]
        summary[variant] = {"step_seconds": statistics.median(x["step_seconds"] for x in mine),
                            "step_cpu_seconds": statistics.median(x["step_cpu_seconds"] for x in mine),
                            "peak_bytes": statistics.median(x["peak_bytes"] for x in mine),
                            "training_state_bytes": statistics.median(x["training_state_bytes"] for x in mine),
                            "trainable": mine[0]["trainable"]}
    if summary["ours"]["trainable"] != summary["peft"]["trainable"]:
        raise SystemExit(f"trainable parameters differ: ours {summary['ours']['trainable']:,}, "
                         f"peft {summary['peft']['trainable']:,}; the step times would not compare like with like")
    result = {
        "setting": {"model": "minilm", "r": 8, "alpha": 8, "targets": ["query", "value"], "batch_size": a.batch_size,
                    "seq_len": a.seq_len, "steps": a.steps, "repeats": a.repeats, "device": device,
                    "threads": int(os.environ.get("BENCH_THREADS", "1"))},
        "ours": summary["ours"], "peft": summary["peft"],
        "ratio_step_time_ours_over_peft": summary["ours"]["step_seconds"] / summary["peft"]["step_seconds"],
        "ratio_step_cpu_time_ours_over_peft": summary["ours"]["step_cpu_seconds"] / summary["peft"]["step_cpu_seconds"],
        "ratio_training_state_ours_over_peft": (summary["ours"]["training_state_bytes"]
                                                / summary["peft"]["training_state_bytes"]),
        "ratio_peak_memory_ours_over_peft": (summary["ours"]["peak_bytes"] / summary["peft"]["peak_bytes"]
                                             if summary["peft"]["peak_bytes"] else None),
        "runs": runs,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "lora_vs_peft.json").write_text(json.dumps(result, indent=2))
    print(f"LoRA on MiniLM, batch {a.batch_size} × {a.seq_len} tokens, {device}, median of {a.repeats} × {a.steps} steps")
    for v in ("ours", "peft"):
        s = summary[v]
        print(f"  {v:5s} step {s['step_seconds'] * 1e3:8.1f} ms (CPU {s['step_cpu_seconds'] * 1e3:8.1f} ms)   training state {s['training_state_bytes'] / 2**20:8.1f} MiB"
              f"   peak RSS +{s['peak_bytes'] / 2**20:7.1f} MiB   trainable {s['trainable']:,}")
    print(f"  ratio ours/peft: step time {result['ratio_step_time_ours_over_peft']:.3f} "
          f"(CPU time {result['ratio_step_cpu_time_ours_over_peft']:.3f}), "
          f"training state {result['ratio_training_state_ours_over_peft']:.3f}, "
          f"peak RSS {result['ratio_peak_memory_ours_over_peft']:.3f} (noisy on CPU)")


if __name__ == "__main__":
    main()
