"""The leaderboard's commands, a table the CLI adds to its own (``adaptbench.cli``):

  leaderboard    every stored record, one table per protocol (md, csv or html)
  report-all     every grid's report and the leaderboard page from the stored records; trains nothing
  check-method   a method file (or registered name) through its family's contract, PASS/FAIL in words
  compare        a method file against a stored grid, training only its own cells

Parsing imports nothing heavy; each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from adaptbench.jsonargs import json_arg
from adaptbench.tracks import Command


def _leaderboard_args(p) -> None:
    p.add_argument("--results", default="results", help="the results folder (cells/ and grids/)")
    p.add_argument("--grid", default=None, help="only this grid's cells, with its labels")
    p.add_argument("--track", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--format", default="md", choices=("md", "csv", "html"))
    p.add_argument("--claims-dir", default=None)
    p.add_argument("--out", default=None, help="write to this file instead of stdout")


def _leaderboard(args):
    from adaptbench.results import atomic_write_text

    if args.format == "html":
        from adaptbench.html_report import leaderboard_html

        text, _, boards = leaderboard_html(args.results, args.grid, args.track, args.model, args.task, args.claims_dir)
    else:
        from adaptbench.leaderboard import leaderboard

        text, _, boards = leaderboard(args.results, args.grid, args.track, args.model, args.task, args.format,
                                      args.claims_dir)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"{len(boards)} table(s) → {args.out}")
    else:
        print(text)


def _report_all_args(p) -> None:
    p.add_argument("--results", default="results")
    p.add_argument("--reports", default="reports")
    p.add_argument("--claims-dir", default=None)


def _report_all(args):
    from adaptbench.html_report import report_all

    t0 = time.perf_counter()
    done = report_all(args.results, args.reports, args.claims_dir)
    for d in done:
        detail = f"{d['paths'][0]}" if d["status"] == "ok" else d["reason"]
        print(f"{d['grid']}: {d['status']} in {d['seconds']:.2f} s: {detail}")
    print(f"{sum(d['status'] == 'ok' for d in done) - 1} grid report(s) and the leaderboard in "
          f"{time.perf_counter() - t0:.2f} s, nothing trained")


def _method_args(p) -> None:
    p.add_argument("target", help="a method file (my_lora_variant.py) or a registered method name")
    p.add_argument("--method", default=None, help="which method, when the file registers several")
    p.add_argument("--methods-path", action="append", default=[],
                   help="further method files or folders to load first (repeatable)")


def _load_extra(args) -> None:
    from adaptbench.user_methods import load_methods_path

    load_methods_path(args.methods_path)


def _check_method_args(p) -> None:
    _method_args(p)
    p.add_argument("--seed", type=int, default=0)


def _check_method(args):
    from adaptbench.registry import get_method
    from adaptbench.user_methods import check_method, resolve_method

    _load_extra(args)
    name = resolve_method(args.target, args.method)
    spec = get_method(name)
    print(f"{name} ({spec.family}, from {Path(sys.modules[spec.cls.__module__].__file__).name}): "
          f"{spec.paper.title}")
    t0 = time.perf_counter()
    checks = check_method(name, args.seed)
    for check in checks:
        print(check.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{'FAILED' if failed else 'PASSED'}: {len(checks) - failed} of {len(checks)} checks passed or skipped "
          f"({time.perf_counter() - t0:.1f} s)")
    return 1 if failed else 0


def _compare_args(p) -> None:
    _method_args(p)
    p.add_argument("--against", required=True, help="a stored grid (results/grids/<grid>/index.json)")
    p.add_argument("--results", default="results")
    p.add_argument("--like", default=None, help="the stored row whose cells (and training settings) the new "
                                                "method copies (default: lora, full for an optimizer, tent for TTA, "
                                                "where the grid has it)")
    p.add_argument("--method-params", default="{}", help="JSON object of the new method's hyperparameters")
    p.add_argument("--train-params", default="{}", help="JSON object of training settings outside the protocol "
                                                        "(e.g. lr); budget changes are refused as another protocol")
    p.add_argument("--data-dir", default=None, help="the data folder the grid read (GLUE tasks; a TTA source's "
                                                     "data folder or the folder holding it)")
    p.add_argument("--model-source", default=None, help="where to load the model from, when the stored name is a "
                                                        "folder of another machine")
    p.add_argument("--threads", type=int, default=None)


def _compare(args):
    from adaptbench.compare import compare

    _load_extra(args)
    result = compare(args.target, args.against, args.results, args.method, args.like,
                     json_arg(args.method_params, "--method-params"), json_arg(args.train_params, "--train-params"),
                     args.data_dir, args.model_source, args.threads)
    print(result.text())


COMMANDS = (
    Command("leaderboard", "every stored result, one table per protocol, one row per method (md, csv, html)",
            _leaderboard_args, _leaderboard),
    Command("report-all", "regenerate every grid's report and the leaderboard from stored results (no training)",
            _report_all_args, _report_all),
    Command("check-method", "run a method file's family contract on tiny models: PASS/FAIL in plain words",
            _check_method_args, _check_method),
    Command("compare", "train only a new method's cells under a stored grid's protocol and place it",
            _compare_args, _compare),
)
