"""Tracks as plug-ins. A track is a folder ``adaptbench/tracks/<kind>/`` whose ``__init__`` defines
``TRACK``: its grid schema and rule file, the expansion of its grids into cells (torch-free), the job
commands it adds to the ``adaptbench`` CLI, and its report. ``workflows/rules/<kind>.smk`` holds its
Snakemake rules. The Snakefile includes the rule file of the grid's ``kind``; the CLI builds its
sub-commands from every track's table. Adding a track is adding a folder and a rule file.

A track's ``__init__`` imports no torch: the Snakefile and the CLI's argument parsing read it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Command:
    """One ``adaptbench <name>`` sub-command: ``add_arguments(parser)``, then ``run(args)`` (which may
    import torch: only the command that runs pays for it)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], object]


@dataclass(frozen=True)
class Track:
    kind: str
    description: str
    plan: Callable  # grid config -> adaptbench.grid.Plan
    report: Callable  # (tidy frame, grid config, out_dir, claims_dir, unavailable) -> [paths]
    commands: tuple[Command, ...] = field(default_factory=tuple)

    @property
    def schema(self) -> Path:
        return REPO / "workflows" / "schemas" / f"{self.kind}.schema.yaml"

    @property
    def rules(self) -> Path:
        return REPO / "workflows" / "rules" / f"{self.kind}.smk"


def kinds() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))


def get_track(kind: str) -> Track:
    if kind not in kinds():
        close = difflib.get_close_matches(str(kind), kinds(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"grid: kind '{kind}' is not a track.{hint} Available: {', '.join(kinds())}")
    return importlib.import_module(f"{__name__}.{kind}").TRACK


def all_tracks() -> list[Track]:
    return [get_track(k) for k in kinds()]
