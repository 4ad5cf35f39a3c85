"""``python -m adaptbench <command>``: one command per job, every input explicit.

Commands come from two tables: each track's (``adaptbench/tracks/<kind>/``: its jobs, e.g. ``train``,
``evaluate``, ``adapt``, ``pretrain``) and the shared ones below (``collate``, ``report``, ``list``,
``show``, ``manifest``). Parsing imports no torch; a command imports what it needs when it runs.

A user error (unknown name, bad value, missing or malformed file) prints one line and exits 2;
Snakemake's --keep-going then lets every other cell finish. A job stopped by SIGTERM saves a
resumable checkpoint and exits 143; rerunning it resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from adaptbench.tracks import Command, all_tracks


def json_arg(text: str, flag: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: expected a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def json_list(text: str, flag: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: expected a JSON list, got {text!r} ({e.msg})") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"{flag}: expected a non-empty JSON list, got {text!r}")
    return value


# ---- shared commands -------------------------------------------------------------------------------

def _collate_args(p):
    p.add_argument("results", nargs="*", help="result.json files or folders to search")
    p.add_argument("--index", default=None, help="a grid's index.json (results/grids/<grid>/index.json)")
    p.add_argument("--out", required=True)


def _collate(args):
    from adaptbench.collate import collate

    if not args.results and not args.index:
        raise ValueError("collate: give result files/folders or --index")
    frame = collate(args.results, args.out, index=args.index)
    print(f"{len(frame)} rows → {args.out}")


def _report_args(p):
    p.add_argument("--cells", required=True, help="tidy CSV written by collate")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--grid", help="grid YAML (report settings, paper mapping)")
    g.add_argument("--grid-json", help="the resolved grid config as JSON (what Snakemake passes)")
    p.add_argument("--claims-dir", default=None)
    p.add_argument("--unavailable", default="{}", help='JSON {"task": "reason"} of what could not run')
    p.add_argument("--out-dir", required=True)


def _report(args):
    from pathlib import Path

    import yaml

    from adaptbench.tracks import get_track

    if args.grid:
        try:
            grid = yaml.safe_load(Path(args.grid).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{args.grid}: cannot read the grid ({type(e).__name__})") from None
    else:
        grid = json_arg(args.grid_json, "--grid-json")
    track = get_track(grid.get("kind", "finetune"))
    for path in track.report(args.cells, grid, args.out_dir, args.claims_dir,
                             json_arg(args.unavailable, "--unavailable")):
        print(path)


def _list(args):
    from adaptbench import manifest, models, tasks
    from adaptbench.registry import FAMILIES
    from adaptbench.tasks.corpora import list_corpora
    from adaptbench.tracks import kinds
    from adaptbench.tracks.pretrain.settings import MODEL_SIZES

    for family in FAMILIES:
        names = manifest.names(family)
        print(f"{family}: {', '.join(names) if names else '(none yet)'}")
    print(f"tracks: {', '.join(kinds())}")
    print(f"tasks: {', '.join(tasks.list_tasks())}")
    print(f"model aliases: {', '.join(models.MODEL_ALIASES)}")
    print(f"corpora: {', '.join(list_corpora())}; pretraining sizes: {', '.join(MODEL_SIZES)}")


def _show(args):
    from adaptbench.registry import get_method

    spec = get_method(args.method)
    from dataclasses import fields

    print(f"{spec.name} ({spec.family}): {spec.paper.title} ({spec.paper.venue} {spec.paper.year}), "
          f"arXiv:{spec.paper.arxiv}" + (f", code {spec.paper.code}" if spec.paper.code else ""))
    print(f"mergeable: {spec.mergeable}")
    cfg = spec.make_config({})
    for f in fields(cfg):
        print(f"  {f.name} = {getattr(cfg, f.name)!r}")


def _manifest(args):
    from adaptbench import manifest, registry

    if args.write:
        print(registry.write_manifest())
    else:
        stale = registry.generate_manifest() != manifest.load()
        print("methods/manifest.json is " + ("STALE: run `adaptbench manifest --write`" if stale else "current"))
        return 1 if stale else 0


SHARED = (
    Command("collate", "result records → one tidy CSV (one row per cell × metric)", _collate_args, _collate),
    Command("report", "tidy CSV + claims → the track's tables and plots", _report_args, _report),
    Command("list", "registered methods, tracks, tasks, models", lambda p: None, _list),
    Command("show", "one method: its paper and default hyperparameters",
            lambda p: p.add_argument("method"), _show),
    Command("manifest", "check (or --write) methods/manifest.json, the torch-free registry summary",
            lambda p: p.add_argument("--write", action="store_true"), _manifest),
)


def commands() -> dict[str, Command]:
    table = {}
    for command in [c for t in all_tracks() for c in t.commands] + list(SHARED):
        if command.name in table:
            raise ValueError(f"command '{command.name}' is defined twice")
        table[command.name] = command
    return table


def build_parser(table: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    table = table or commands()
    p = argparse.ArgumentParser(prog="adaptbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    for name, command in table.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    return p


USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FloatingPointError)


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep job logs to our own lines
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    table = commands()
    args = build_parser(table).parse_args(argv)
    try:
        code = table[args.stage].run(args)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"adaptbench {args.stage}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `adaptbench list | head`
        sys.stderr.close()
        return 0
    except Exception as e:
        from adaptbench.loop import PREEMPTED_EXIT_CODE, Preempted

        if isinstance(e, Preempted):
            print(f"adaptbench {args.stage}: {e}", file=sys.stderr)
            return PREEMPTED_EXIT_CODE
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
