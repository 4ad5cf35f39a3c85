"""Training-step time of every adapter relative to LoRA, on MiniLM, in one run.

Each method trains its paper-default configuration (plus the classifier head) with AdamW for
``--steps`` steps on the same batch; the first ``--warmup`` steps are not timed. Methods run in their
own subprocesses, interleaved with LoRA over ``--repeats`` rounds, so that machine load hits them
alike; the ratio is median(method) / median(LoRA). When the ``peft`` method runs too (it does by
default: PEFT's LoRA at its LoraConfig defaults, r = 8, α = 8 on W_q and W_v, our ``lora`` row's setting),
every method's step is also given relative to it (÷ PEFT). Each ratio is printed for wall-clock time and for
the process's CPU time; on a shared machine whose other jobs take cores away, the CPU-time ratios are the
steadier ones (BENCH_THREADS=1: one compute thread). Data-driven adapters (EVA, CorDA) are initialised
from the batch before timing (their init cost is reported separately, as ``init_seconds``).

    python benchmarks/adapter_step_time.py [--methods pissa kasa ...] [--steps 8] [--repeats 2]
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


def worker(method: str, steps: int, warmup: int, batch_size: int, seq_len: int) -> dict:
    import torch

    from adaptbench import tasks
    from adaptbench.build import build_model

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    spec = tasks.get_task("syn_sentiment")
    method_obj, model, loaded = build_model(method, {}, "minilm", spec, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (batch_size, seq_len), generator=g),
             "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch_size,), generator=g)}
    t0 = time.perf_counter()
    method_obj.prepare(model, [batch])
    init_seconds = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times, cpu_times = [], []
    for step in range(warmup + steps):
        c0, t0 = time.process_time(), time.perf_counter()
        loss = model(**batch).loss
        extra = method_obj.extra_loss(model)
        if extra is not None:
            loss = loss + extra
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method_obj.on_step(model, step, warmup + steps)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    return {"step_seconds": statistics.median(times), "step_cpu_seconds": statistics.median(cpu_times),
            "init_seconds": init_seconds,
            "trainable": sum(p.numel() for p in params)}


def run_worker(method: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered adapter")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.batch_size, args.seq_len)))
        return
    from adaptbench.registry import available

    methods = args.methods or [m for m in available("adapter") if m != "lora"]
    runs: dict[str, list[dict]] = {m: [] for m in ["lora", *methods]}
    for _ in range(args.repeats):
        for m in methods:  # LoRA re-measured next to every method: ratios see the same load
            runs["lora"].append(run_worker("lora", args))
            runs[m].append(run_worker(m, args))

    def med(m, key):
        return statistics.median(r[key] for r in runs[m])

    lora, lora_cpu = med("lora", "step_seconds"), med("lora", "step_cpu_seconds")
    peft = (med("peft", "step_seconds"), med("peft", "step_cpu_seconds")) if "peft" in runs else None
    report = {"lora_step_seconds": lora, "lora_step_cpu_seconds": lora_cpu, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "threads": int(os.environ.get("BENCH_THREADS", "1")), "methods": {}}
    vs_peft = peft is not None
    print(f"{'method':<12} {'trainable':>10} {'step s':>8} {'CPU s':>8} {'÷ LoRA':>7} {'CPU÷LoRA':>8}"
          + (f" {'÷ PEFT':>7} {'CPU÷PEFT':>8}" if vs_peft else "") + f" {'init s':>7}")

    def row(m, step, cpu, init):
        line = f"{m:<12} {runs[m][0]['trainable']:>10} {step:>8.3f} {cpu:>8.3f} {step / lora:>7.2f} {cpu / lora_cpu:>8.2f}"
        if vs_peft:
            line += f" {step / peft[0]:>7.2f} {cpu / peft[1]:>8.2f}"
        print(line + (f" {init:>7.2f}" if init is not None else f" {'':>7}"))

    row("lora", lora, lora_cpu, None)
    if vs_peft:
        report["lora_ratio_to_peft"], report["lora_cpu_ratio_to_peft"] = lora / peft[0], lora_cpu / peft[1]
    for m in methods:
        step, cpu, init = med(m, "step_seconds"), med(m, "step_cpu_seconds"), med(m, "init_seconds")
        report["methods"][m] = {"step_seconds": step, "step_cpu_seconds": cpu, "ratio_to_lora": step / lora,
                                "cpu_ratio_to_lora": cpu / lora_cpu, "init_seconds": init,
                                "trainable": runs[m][0]["trainable"]}
        if vs_peft:
            report["methods"][m] |= {"ratio_to_peft": step / peft[0], "cpu_ratio_to_peft": cpu / peft[1]}
        row(m, step, cpu, init)
    OUT.mkdir(exist_ok=True)
    (OUT / "adapter_step_time.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
