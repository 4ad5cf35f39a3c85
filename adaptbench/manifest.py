"""The torch-free summary of the registry: ``methods/manifest.json``.

Parse time (the Snakefile, grid expansion) and the CLI's first checks must not import torch, yet they
need to know each method's family, whether it is data-driven (an init step) or mergeable, and its
hyperparameters with the paper's defaults (to reject an unknown or mistyped one in a second, and to
name a cell by the hash of its resolved configuration). The manifest is generated from the registry
(``adaptbench manifest --write``); tests/test_manifest.py fails when it is stale.
"""

from __future__ import annotations

import dataclasses
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


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def generate() -> dict[str, dict]:
    """Every registered method → {family, module, data_driven, mergeable, params: {name: default}}."""
    from adaptbench import registry

    out = {}
    for name in registry.available():
        spec = registry.get_method(name)
        out[name] = {
            "family": spec.family,
            "module": spec.cls.__module__,
            "data_driven": bool(getattr(spec.cls, "DATA_DRIVEN", False)),
            "mergeable": spec.mergeable,
            "params": {f.name: _jsonable(_default(f)) for f in dataclasses.fields(spec.config)},
        }
    return out


def write() -> Path:
    from adaptbench.results import atomic_write_text

    atomic_write_text(PATH, json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    load.cache_clear()
    return PATH


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
