"""Padding and step time of length-grouped training batches (``train.group_by_length``) against random ones.

On the real SST-2 and MRPC training sets (a GLUE-format folder, default ../shared/data/glue; a task whose
files are absent prints an 'unavailable' line and is skipped, never replaced by other data), tokenised by
MiniLM's tokenizer at each ``--max-lengths``, for each ``--batch-sizes``:

  * padding fraction: padded / all tokens of one whole epoch's batches, each padded to its longest example
    (as the training collate pads), random order (``shuffle=True``) vs length-grouped (adaptbench/batching.py),
    both drawn from a generator seeded 0;
  * step time: ``--steps`` training steps of MiniLM LoRA (paper defaults: r 8, W_q W_v, and the head; AdamW,
    clipping, the task's loss: the loop's step) on CPU with ``--threads`` threads, for each ordering. The
    batches are ``--steps`` full batches drawn uniformly from that ordering's epoch (the first batches of a
    grouped epoch are its longest by design, so the first N steps would not stand for the epoch), random and
    grouped steps interleaved so machine load hits both alike, after ``--warmup`` untimed steps of each. The
    ratio is total grouped time / total random time.

    python benchmarks/padding.py [--data-dir ../shared/data/glue] [--tasks sst2 mrpc] [--batch-sizes 16 32]
                                 [--max-lengths 64 128] [--steps 8] [--threads 1]

One line per setting, then the ratios; ``--json PATH`` also writes the figures there. The default run (8 timed
steps per ordering and setting, 128 in all) takes about 3 minutes on one free core; ``--steps 24`` narrows the
ratios' spread (which batches were drawn) at three times the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def epoch_orders(lengths, batch_size: int, seed: int = 0) -> dict[str, list[int]]:
    import torch

    from adaptbench.batching import length_grouped_order

    n = len(lengths)
    return {"random": torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist(),
            "grouped": length_grouped_order(lengths, batch_size, torch.Generator().manual_seed(seed))}


def timed_steps(model, loss_fn, collate, data, batches: dict[str, list[list[int]]], warmup: int) -> dict[str, float]:
    """Seconds of the loop's training step on each ordering's batches, the orderings interleaved."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    model.train()

    def step(idx):
        batch = collate([data[i] for i in idx])
        t0 = time.perf_counter()
        loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    names = list(batches)
    for i in range(warmup):
        for name in names:
            step(batches[name][i % len(batches[name])])
    total = dict.fromkeys(names, 0.0)
    for i in range(max(len(b) for b in batches.values())):
        for name in names:
            if i < len(batches[name]):
                total[name] += step(batches[name][i])
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--tasks", nargs="*", default=["sst2", "mrpc"])
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[16, 32])
    parser.add_argument("--max-lengths", nargs="*", type=int, default=[64, 128])
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per ordering and setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per ordering before timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import transformers

    from adaptbench import tasks
    from adaptbench.batching import order_batches, padding_fraction
    from adaptbench.build import build_model
    from adaptbench.data import Encoded, make_collate, task_loss

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    report = {"data_dir": Path(args.data_dir).name, "threads": args.threads, "steps": args.steps, "settings": [],
              "unavailable": {}}
    print(f"# MiniLM LoRA on CPU, {args.threads} thread(s); padding over one whole epoch; "
          f"time of {args.steps} steps per ordering")
    print(f"{'task':<6} {'bs':>3} {'max_len':>7} {'rows':>6} {'pad random':>10} {'pad grouped':>11} "
          f"{'s random':>9} {'s grouped':>9} {'grouped/random':>14}")
    for task in args.tasks:
        spec = tasks.get_task(task)
        reason = tasks.unavailable_reason(spec, args.data_dir)
        if reason:
            print(f"{task}: unavailable ({reason})")
            report["unavailable"][task] = reason
            continue
        split = tasks.load_split(spec, "train", args.data_dir)
        _, model, loaded = build_model("lora", {}, "minilm", spec, seed=0)
        collate, loss_fn = make_collate(loaded.tokenizer), task_loss(spec)
        for max_length in args.max_lengths:
            data = Encoded(loaded.tokenizer, split, max_length, spec.kind == "regression")
            for bs in args.batch_sizes:
                orders = epoch_orders(data.lengths, bs)
                epochs = {name: order_batches(o, bs) for name, o in orders.items()}
                pads = {name: padding_fraction(data.lengths, b) for name, b in epochs.items()}
                pick = np.random.default_rng(0)
                sample = {}
                for name, batches in epochs.items():
                    full = [b for b in batches if len(b) == bs]
                    sample[name] = [full[i] for i in pick.choice(len(full), min(args.steps, len(full)), replace=False)]
                seconds = timed_steps(model, loss_fn, collate, data, sample, args.warmup)
                ratio = seconds["grouped"] / seconds["random"]
                row = {"task": task, "batch_size": bs, "max_length": max_length, "rows": len(data),
                       "padding_random": pads["random"], "padding_grouped": pads["grouped"],
                       "seconds_random": seconds["random"], "seconds_grouped": seconds["grouped"],
                       "time_ratio_grouped_over_random": ratio,
                       "sampled_padding_random": padding_fraction(data.lengths, sample["random"]),
                       "sampled_padding_grouped": padding_fraction(data.lengths, sample["grouped"])}
                report["settings"].append(row)
                print(f"{task:<6} {bs:>3} {max_length:>7} {len(data):>6} {pads['random']:>10.3f} "
                      f"{pads['grouped']:>11.3f} {seconds['random']:>9.2f} {seconds['grouped']:>9.2f} {ratio:>14.2f}",
                      flush=True)
    if report["settings"]:
        ratios = [r["time_ratio_grouped_over_random"] for r in report["settings"]]
        print(f"step-time ratio grouped/random: median {float(np.median(ratios)):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} settings")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load report for the new classifier head
    main()
