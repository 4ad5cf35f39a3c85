"""Pretraining track (kind: pretrain): a Llama-style model from scratch per optimizer × size × corpus ×
seed, scored by validation perplexity. Job: ``pretrain``; rules in workflows/rules/pretrain.smk; report:
the fine-tuning report's tables (perplexity printed unscaled)."""

from __future__ import annotations

from adaptbench.tracks import Command, Track
from adaptbench.tracks.pretrain.grid import plan


def _add(p):
    from adaptbench.tracks.pretrain.job import add_arguments

    add_arguments(p)


def _run(args):
    from adaptbench.tracks.pretrain.job import run

    return run(args)


def _report(*args, **kw):
    from adaptbench.report import write_report

    return write_report(*args, **kw)


TRACK = Track(
    kind="pretrain",
    description="train a small Llama from scratch per optimizer; validation perplexity",
    plan=plan,
    report=_report,
    commands=(Command("pretrain", "pretrain a Llama-style LM from scratch and report validation ppl", _add, _run),),
)
