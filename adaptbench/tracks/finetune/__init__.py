"""Fine-tuning track (kind: finetune): encoders adapted by one method per cell, scored on GLUE-style
tasks. Jobs: ``init`` (data-driven adapters), ``train`` (trains and scores a cell), ``evaluate``
(re-scores a stored checkpoint); rules in
workflows/rules/finetune.smk; report: papers' tables with claims beside ours."""

from __future__ import annotations

import json

from adaptbench.tracks import Command, Track
from adaptbench.tracks.finetune.grid import plan


def _cell_args(p, *, out_help: str) -> None:
    p.add_argument("--method", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--method-params", default="{}", help="JSON object of method hyperparameters")
    p.add_argument("--train-params", default="{}", help="JSON object of training settings")
    p.add_argument("--data-dir", default=None, help="local GLUE-format folder (default: hub or synthetic)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--threads", type=int, default=None)


def _train_args(p) -> None:
    _cell_args(p, out_help="cell folder for train.json, result.json and the kept checkpoint")
    p.add_argument("--label", default=None, help="the grid's name for this method entry (default: --method)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--init", default=None, help="init.pt written by `adaptbench init` (data-driven adapters)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="save a resumable checkpoint every N steps (run control: not part of the cell's hash)")
    p.add_argument("--keep-checkpoint", choices=("none", "trainable", "all"), default=None,
                   help="what the finished cell keeps: none, trainable (checkpoint.pt, default) or all (+ model.pt)")
    p.add_argument("--no-score", action="store_true", help="train only: write no result.json (score later with evaluate)")


def _check_cell(args) -> tuple[dict, dict]:
    """Torch-free checks of a cell's inputs: a bad name or hyperparameter fails in a second."""
    from adaptbench import manifest, tasks
    from adaptbench.jsonargs import json_arg
    from adaptbench.config import TrainConfig

    method_params = json_arg(args.method_params, "--method-params")
    train_params = json_arg(args.train_params, "--train-params")
    if manifest.load().get(args.method, {}).get("family") != "adapter":
        raise manifest.unknown_method(args.method, "adapter", "--method")
    manifest.check_params(args.method, method_params, "--method-params")
    tasks.get_task(args.task)
    TrainConfig.from_dict(train_params)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    return method_params, train_params


def _run_train(args):
    method_params, train_params = _check_cell(args)
    if args.checkpoint_every is not None:
        train_params["checkpoint_every"] = args.checkpoint_every
    if args.keep_checkpoint is not None:
        train_params["keep_checkpoint"] = args.keep_checkpoint
    from adaptbench.tracks.finetune.job import train

    train(method=args.method, model=args.model, task=args.task, seed=args.seed, method_params=method_params,
          train_params=train_params, data_dir=args.data_dir, out_dir=args.out, label=args.label,
          device=args.device, threads=args.threads, progress=not args.no_progress, init_path=args.init,
          score=not args.no_score)


def _run_init(args):
    method_params, train_params = _check_cell(args)
    from adaptbench.tracks.finetune.job import compute_init

    print(json.dumps(compute_init(method=args.method, model=args.model, task=args.task, seed=args.seed,
                                  out_path=args.out, method_params=method_params, train_params=train_params,
                                  data_dir=args.data_dir, threads=args.threads)))


def _evaluate_args(p) -> None:
    p.add_argument("--train-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=None, help="the data folder the cell was trained on (GLUE tasks)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)


def _run_evaluate(args):
    from adaptbench.tracks.finetune.job import evaluate_checkpoint

    res = evaluate_checkpoint(args.train_dir, args.out, data_dir=args.data_dir, device=args.device,
                              threads=args.threads)
    print(json.dumps({k: v["value"] for k, v in res["metrics"].items()}))


def _report(*args, **kw):
    from adaptbench.report import write_report

    return write_report(*args, **kw)


TRACK = Track(
    kind="finetune",
    description="adapt a pretrained encoder with one method per cell; GLUE-style metrics",
    plan=plan,
    report=_report,
    commands=(
        Command("train", "fine-tune and score one method × model × task × seed", _train_args, _run_train),
        Command("init", "compute a data-driven adapter initialisation for one cell",
                lambda p: _cell_args(p, out_help="init.pt path"), _run_init),
        Command("evaluate", "re-score a stored cell from its checkpoint.pt → result.json", _evaluate_args,
                _run_evaluate),
    ),
)
