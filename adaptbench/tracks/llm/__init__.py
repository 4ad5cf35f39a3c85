"""LLM track (kind: llm): causal LMs instruction-tuned with any registered adapter and optimizer, scored
by lm-evaluation-harness on local data (commonsense MC, MMLU, GSM8K, and the papers' generative
protocols). Job: ``llm`` (train + score in one process); rules in workflows/rules/llm.smk; report: the
papers' tables with lm-eval's stderr."""

from __future__ import annotations

import json

from adaptbench.tracks import Command, Track


def _plan(config):
    from adaptbench.tracks.llm.grid import plan

    return plan(config)


def _args(p):
    p.add_argument("--method", required=True, help="a registered adapter, or zero_shot (the base model)")
    p.add_argument("--model", required=True, help="smollm2-135m, tiny-llama, stories260k, a hub id or a folder")
    p.add_argument("--task", required=True, help="training set (adaptbench/tracks/llm/sets.py)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--method-params", default="{}")
    p.add_argument("--train-params", default="{}")
    p.add_argument("--eval", default="{}", help="JSON: tasks, limit, num_fewshot, batch_size, bootstrap_iters, max_gen_toks")
    p.add_argument("--data-dir", default=None, help="folder in the ../shared/data layout")
    p.add_argument("--out", required=True)
    p.add_argument("--label", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)


def _run(args):
    from adaptbench import manifest
    from adaptbench.jsonargs import json_arg
    from adaptbench.tracks.llm.grid import ZERO_SHOT, eval_settings, train_config

    params, train = json_arg(args.method_params, "--method-params"), json_arg(args.train_params, "--train-params")
    if args.method != ZERO_SHOT:
        if manifest.load().get(args.method, {}).get("family") != "adapter":
            raise manifest.unknown_method(args.method, "adapter", "--method")
        manifest.check_params(args.method, params, "--method-params")
    if args.checkpoint_every is not None:
        train["checkpoint_every"] = args.checkpoint_every
    train_config(train)
    evaluation = eval_settings({"eval": json_arg(args.eval, "--eval")})
    from adaptbench.tracks.llm.job import run_cell

    record = run_cell(method=args.method, model=args.model, task=args.task, seed=args.seed, out_dir=args.out,
                      method_params=params, train_params=train, evaluation=evaluation, data_dir=args.data_dir,
                      device=args.device, threads=args.threads, label=args.label)
    print(json.dumps({k: v["value"] for k, v in record["metrics"].items()}))


def _report(*args, **kw):
    from adaptbench.tracks.llm.report import write_llm_report

    return write_llm_report(*args, **kw)


TRACK = Track(
    kind="llm",
    description="instruction-tune a causal LM per method; lm-evaluation-harness scores",
    plan=_plan,
    report=_report,
    commands=(Command("llm", "fine-tune a causal LM on an instruction set and score it with lm-eval", _args, _run),),
)
