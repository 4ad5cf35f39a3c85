"""Test-time adaptation track (kind: tta): a trained source model meets streams of shifted test batches
and a method adapts online; online error per shift × severity. Jobs: ``tta-source`` (train a source
model, shared by every cell that meets it) and ``adapt`` (one cell); rules in workflows/rules/tta.smk;
report: the TTA papers' layout (adaptbench/tta/report.py). The science (shift suites, streams, sources)
lives in adaptbench/tta/."""

from __future__ import annotations

import json

from adaptbench.tracks import Command, Track


def _plan(config):
    from adaptbench.tta.grid import plan

    return plan(config)


def _source_args(p):
    p.add_argument("--source", required=True, help="JSON source entry of a TTA grid")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)


def _run_source(args):
    from adaptbench.jsonargs import json_arg
    from adaptbench.tta.streams import train_source_job

    print(json.dumps(train_source_job(json_arg(args.source, "--source"), args.out, args.threads), default=str))


def _adapt_args(p):
    p.add_argument("--method", required=True)
    p.add_argument("--label", default=None)
    p.add_argument("--method-params", default="{}")
    p.add_argument("--source", required=True, help="JSON source entry")
    p.add_argument("--source-dir", required=True, help="folder written by tta-source")
    p.add_argument("--scenario", required=True, help="JSON scenario entry")
    p.add_argument("--shifts", required=True, help="JSON list of shift names")
    p.add_argument("--severities", default="[5]", help="JSON list of severities")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)


def _run_adapt(args):
    from adaptbench import manifest
    from adaptbench.jsonargs import json_arg, json_list

    params = json_arg(args.method_params, "--method-params")
    if manifest.load().get(args.method, {}).get("family", "tta") != "tta":
        raise manifest.unknown_method(args.method, "tta", "--method")
    manifest.check_params(args.method, params, "--method-params")
    from adaptbench.tta.runner import adapt

    res = adapt(method=args.method, method_params=params, source_dir=args.source_dir,
                source=json_arg(args.source, "--source"), scenario=json_arg(args.scenario, "--scenario"),
                shifts=json_list(args.shifts, "--shifts"), severities=json_list(args.severities, "--severities"),
                seed=args.seed, out_path=args.out, label=args.label, threads=args.threads)
    print(json.dumps({"error_mean": res["metrics"]["error_mean"]["value"]}))


def _report(*args, **kw):
    from adaptbench.tta.report import write_tta_report

    return write_tta_report(*args, **kw)


TRACK = Track(
    kind="tta",
    description="online test-time adaptation over shifted streams; online error",
    plan=_plan,
    report=_report,
    commands=(
        Command("tta-source", "train a TTA source model (image classifier or fine-tuned encoder)", _source_args,
                _run_source),
        Command("adapt", "one TTA cell: a method adapts online over a scenario's stream", _adapt_args, _run_adapt),
    ),
)
