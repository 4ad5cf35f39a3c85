"""``python -m adaptbench <command>``: one command per job, every input explicit.

Commands come from two tables: each track's (``adaptbench/tracks/<kind>/``: its jobs, e.g. ``train``,
``evaluate``, ``adapt``, ``pretrain``) and the shared ones below (``check``, ``running``, ``collate``,
``report``, ``list``, ``show``, ``manifest``). Parsing imports no torch; a command imports what it needs
when it runs.

A user error (unknown name, bad value, missing or malformed file, a diverged run's FloatingPointError)
prints one line and exits 2; a job also leaves ``failure.json`` (the reason) in its output folder, which
collate turns into the cell's row. Snakemake's --keep-going then lets every other cell finish. A job
stopped by SIGTERM saves a resumable checkpoint and exits 143; rerunning it resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from adaptbench.jsonargs import json_arg, json_list  # noqa: F401  (re-exported: adaptbench.cli.json_arg)
from adaptbench.leaderboard_commands import COMMANDS as LEADERBOARD
from adaptbench.tracks import Command, all_tracks


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
    p.add_argument("--results", default=None,
                   help="the results folder: also write <out-dir>/index.html, the grid's page from its stored records")


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
    if args.results is not None and grid.get("grid"):
        from adaptbench.html_report import grid_page

        print(grid_page(args.results, grid["grid"], args.out_dir, args.claims_dir))


def _list(args):
    """Every method with its family and paper (``adaptbench show <name>``: its default hyperparameters),
    then tracks, tasks, models and corpora."""
    from adaptbench import models, tasks
    from adaptbench.registry import FAMILIES, available, get_method
    from adaptbench.tasks.corpora import list_corpora
    from adaptbench.tracks import kinds
    from adaptbench.tracks.pretrain.settings import MODEL_SIZES

    for family in FAMILIES:
        names = available(family)
        print(f"{family} methods ({len(names)}):" if names else f"{family} methods: (none yet)")
        width = max(map(len, names), default=0)
        for name in names:
            paper = get_method(name).paper
            print(f"  {name:<{width}}  {paper.title}" + (f" (arXiv:{paper.arxiv})" if paper.arxiv else ""))
    print("  (adaptbench show <method>: its paper, defaults and whether it merges)")
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


def _check_args(p):
    p.add_argument("grids", nargs="+", help="grid YAML file(s), as given to snakemake --configfile")


def _check(args):
    """What the Snakefile checks before it builds the DAG, plus what Snakemake reads before it: the file
    exists and is YAML. One line either way."""
    from adaptbench import grid as gridlib

    config = {}
    for path in args.grids:
        config = gridlib.merge_config(config, gridlib.read_grid_file(path))
    track, plan = gridlib.load_plan(config, args.grids)
    for warning in plan.warnings:
        print(f"adaptbench check: warning: {warning}", file=sys.stderr)
    unavailable = f"; not runnable here: {', '.join(plan.unavailable)}" if plan.unavailable else ""
    print(f"{' + '.join(args.grids)}: ok, {track.kind} grid '{config['grid']}' with {len(plan.cells)} cells{unavailable}")


def _is_run(argv: list[str]) -> bool:
    """A Snakemake process, or an adaptbench job (what a killed Snakemake leaves running)."""
    names = [Path(a).name for a in argv[:2]]
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return "snakemake" in names or "adaptbench" in names or module in ("snakemake", "adaptbench")


def _processes():
    """(pid, argv, cwd) of this user's processes: /proc where there is one, else ps + lsof."""
    import subprocess

    if Path("/proc/self/cwd").exists():
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
                yield int(proc.name), argv, os.readlink(proc / "cwd")
            except OSError:  # gone, or another user's
                continue
        return
    listing = subprocess.run(["ps", "-axo", "pid=,command="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        pid, _, command = line.strip().partition(" ")
        if _is_run(command.split()):
            cwd = subprocess.run(["lsof", "-a", "-p", pid, "-d", "cwd", "-Fn"], capture_output=True, text=True).stdout
            yield int(pid), command.split(), next((x[1:] for x in cwd.splitlines() if x.startswith("n")), "")


def live_runs(folder) -> list[tuple[int, str]]:
    """Snakemake processes and adaptbench jobs working in ``folder`` (other than this one)."""
    folder, mine = os.path.realpath(folder), {os.getpid(), os.getppid()}
    return [(pid, " ".join(argv)) for pid, argv, cwd in _processes()
            if pid not in mine and os.path.realpath(cwd) == folder and _is_run(argv)]


def _running(args):
    """Exit 1 while a run of this folder is alive: `snakemake --unlock` is safe only when none is."""
    runs = live_runs(args.dir)
    for pid, command in runs:
        print(f"running in {os.path.realpath(args.dir)}: pid {pid}: {command[:150]}")
    if runs:
        print(f"adaptbench running: {len(runs)} process(es) of a run are alive here; wait for them or stop them "
              "(kill PID) before `snakemake --unlock`", file=sys.stderr)
        return 1
    print(f"no snakemake or adaptbench job is running in {os.path.realpath(args.dir)}")
    return 0


SHARED = (
    Command("running", "list live snakemake runs and jobs in a folder; exit 1 if any (check before --unlock)",
            lambda p: p.add_argument("dir", nargs="?", default="."), _running),
    Command("check", "check grid YAML(s) as the Snakefile would, in one line", _check_args, _check),
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
    for command in [c for t in all_tracks() for c in t.commands] + list(SHARED) + list(LEADERBOARD):
        if command.name in table:
            raise ValueError(f"command '{command.name}' is defined twice")
        table[command.name] = command
    return table


def job_tracks() -> dict[str, str]:
    """Job command → its track's kind: the commands that compute a cell (and leave a failure record)."""
    return {c.name: t.kind for t in all_tracks() for c in t.commands}


def build_parser(table: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    table = table or commands()
    p = argparse.ArgumentParser(prog="adaptbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    for name, command in table.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    return p


USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FloatingPointError)
FAILURE_FILE = "failure.json"


def one_line(e: BaseException) -> str:
    """An exception as the one line a user reads: a KeyError's message without its quotes."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(msg).split()) or type(e).__name__


def job_folder(args) -> Path | None:
    """Where a job writes: its ``--out`` folder, or the folder of an ``--out`` file (``result.json``,
    ``init.pt``). A path with a suffix is a file."""
    out = getattr(args, "out", None)
    if not out:
        return None
    out = Path(out)
    return out.parent if out.suffix else out


def _cell_names(args) -> dict:
    """The readable names a job was given (collate replaces them with the grid index's)."""
    names = {"label": getattr(args, "label", None), "method": getattr(args, "method", None)
             or getattr(args, "optimizer", None), "model": getattr(args, "model", None)
             or getattr(args, "model_size", None), "task": getattr(args, "task", None)
             or getattr(args, "corpus", None), "seed": getattr(args, "seed", None)}
    return {k: v for k, v in names.items() if v is not None}


def write_failure(args, track: str, reason: str) -> Path | None:
    """The failure record of a job (``results.failure_record``) beside its absent result: collate
    turns it into the cell's row, with this reason. Never raises: the job's own error comes first."""
    from adaptbench.results import atomic_write_json, failure_record

    folder = job_folder(args)
    if folder is None:
        return None
    command = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    try:
        atomic_write_json(folder / FAILURE_FILE, failure_record(
            track=track, config={"command": command}, reason=reason,
            run_info={**_cell_names(args), "command": args.stage}))
    except OSError:
        return None
    return folder / FAILURE_FILE


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep job logs to our own lines
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from adaptbench import forkserver

    code = forkserver.maybe_run(list(sys.argv[1:] if argv is None else argv))
    if code is not None:  # the job ran as a fork of the warm server (ADAPTBENCH_FORKSERVER=1)
        return code
    table = commands()
    args = build_parser(table).parse_args(argv)
    track = job_tracks().get(args.stage)
    if track and job_folder(args) is not None:  # a rerun starts clean: an old failure is not this run's
        (job_folder(args) / FAILURE_FILE).unlink(missing_ok=True)
    try:
        from adaptbench.user_methods import load_from_env

        load_from_env()  # a grid's methods_path: its jobs import the researcher's method files
        code = table[args.stage].run(args)
    except USER_ERRORS as e:
        msg = one_line(e)
        if track:
            write_failure(args, track, msg)
        print(f"adaptbench {args.stage}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `adaptbench list | head`: the reader left; say nothing more, and flush nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        from adaptbench.loop import PREEMPTED_EXIT_CODE, Preempted

        if isinstance(e, Preempted):  # resumable: no failure record, the rerun continues
            print(f"adaptbench {args.stage}: {e}", file=sys.stderr)
            return PREEMPTED_EXIT_CODE
        if track:  # a crash is still a row with its reason; the traceback stays in the job's log
            write_failure(args, track, f"{type(e).__name__}: {one_line(e)} (traceback in the job's log)")
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
