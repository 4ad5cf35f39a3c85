"""The torch-free summary of the registry: ``methods/manifest.json``.

Parse time (the Snakefile, grid expansion) and the CLI's first checks must not import torch, yet they
need to know each method's family, whether it is data-driven (an init step) or mergeable, and its
hyperparameters with the paper's defaults (to reject an unknown or mistyped one in a second, and to
name a cell by the hash of its resolved configuration). The manifest is generated from the registry
(``adaptbench manifest --write``, by ``registry.generate_manifest``); tests/test_manifest.py fails
when it is stale.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "methods" / "manifest.json"


@lru_cache(maxsize=1)
def load() -> dict[str, dict]:
    try:
        return json.loads(PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def names(family: str | None = None) -> list[str]:
    return sorted(n for n, e in load().items() if family is None or e["family"] == family)


def unknown_method(name: str, family: str | None, where: str) -> ValueError:
    """``<where>: unknown <family> method 'x'. Did you mean: y? Available: ...`` within one family."""
    valid = names(family)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    kind = f"{family} method" if family else "method"
    return ValueError(f"{where}: unknown {kind} '{name}'.{hint} Available: {', '.join(valid)}")


def _type_ok(value, default) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_params(name: str, params: dict, where: str) -> None:
    """Unknown or mistyped hyperparameters, in one line, before torch is imported."""
    entry = load().get(name)
    if entry is None:
        return  # a method outside the manifest (a user's file): its config dataclass checks it
    valid = entry["params"]
    for key, value in params.items():
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"{where}: method '{name}' has no hyperparameter '{key}'.{hint} Valid: {sorted(valid)}")
        if not _type_ok(value, valid[key]):
            raise ValueError(f"{where}: method '{name}': {key} must be a {type(valid[key]).__name__} "
                             f"like its default {valid[key]!r}, got {value!r}")


def resolve_params(name: str, params: dict) -> dict:
    """The paper's defaults overridden by the grid's params, as the job's config dataclass resolves them."""
    entry = load().get(name)
    resolved = {**(entry["params"] if entry else {}), **params}
    return _jsonable(resolved)
