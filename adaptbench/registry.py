"""One registry of named methods. A method's registry name equals its file stem in methods/<family>/."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

from adaptbench import manifest

METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"
FAMILY_DIRS = {"adapter": "adapters", "optimizer": "optimizers", "tta": "tta", "continual": "continual"}

FAMILIES = tuple(FAMILY_DIRS)


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str | None
    year: int
    venue: str = ""
    authors: str = ""
    code: str = ""  # reference implementation, URL@commit where known


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str
    paper: Paper
    config: type  # frozen dataclass of the paper's hyperparameters
    cls: type
    mergeable: bool = False
    extras: dict = field(default_factory=dict)

    def make_config(self, overrides: dict | None = None):
        """Paper defaults with grid overrides; unknown keys fail with the valid ones listed."""
        overrides = dict(overrides or {})
        valid = set(self.config.__dataclass_fields__)
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(
                f"method '{self.name}': unknown hyperparameter(s) {unknown}; valid: {sorted(valid)}"
            )
        for key, value in overrides.items():  # YAML gives lists where configs hold tuples
            if isinstance(value, list):
                overrides[key] = tuple(value)
        return self.config(**overrides)

    def build(self, overrides: dict | None = None):
        return self.cls(self.make_config(overrides))


_REGISTRY: dict[str, MethodSpec] = {}


def register(*, family: str, paper: Paper, config: type, name: str | None = None, mergeable: bool = False):
    """Class decorator: ``@register(family="adapter", paper=Paper(...), config=LoRAConfig)``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family '{family}'; choose one of {FAMILIES}")

    def wrap(cls):
        key = name or cls.__module__.rsplit(".", 1)[-1]
        if key in _REGISTRY:
            raise ValueError(f"method '{key}' is registered twice ({_REGISTRY[key].cls.__module__} and {cls.__module__})")
        _REGISTRY[key] = MethodSpec(key, family, paper, config, cls, mergeable)
        cls.spec_name = key
        return cls

    return wrap


def _import_module(qualified: str) -> None:
    importlib.import_module(qualified)


def _discover(name: str | None = None) -> None:
    """Import method files: the one named (its family from the torch-free manifest), else all of them.
    By module name, so the registry and the methods it finds form no import cycle."""
    global _DISCOVERED_ALL
    if name is not None:
        entry = manifest.load().get(name)
        if entry is not None:
            _import_module(entry["module"])
            return
    if _DISCOVERED_ALL:
        return
    for family_dir in FAMILY_DIRS.values():
        for mod in pkgutil.iter_modules([str(METHODS_DIR / family_dir)]):
            if not mod.name.startswith("_"):
                _import_module(f"methods.{family_dir}.{mod.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="adaptbench.methods"):  # installed plug-ins (see adaptbench/user_methods.py)
        ep.load()
    _DISCOVERED_ALL = True


_DISCOVERED_ALL = False


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        _discover(name)
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown method '{name}'.{hint} Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available(family: str | None = None) -> list[str]:
    _discover()
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


# ---- the torch-free manifest (methods/manifest.json) ------------------------------------------------

def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def generate_manifest() -> dict[str, dict]:
    """Every registered method → {family, module, data_driven, mergeable, params: {name: default}}."""
    out = {}
    for name in available():
        spec = get_method(name)
        out[name] = {
            "family": spec.family,
            "module": spec.cls.__module__,
            "data_driven": bool(getattr(spec.cls, "DATA_DRIVEN", False)),
            "mergeable": spec.mergeable,
            "params": {f.name: _jsonable(_default(f)) for f in dataclasses.fields(spec.config)},
        }
    return out


def write_manifest() -> Path:
    from adaptbench.results import atomic_write_text

    atomic_write_text(manifest.PATH, json.dumps(generate_manifest(), indent=1, sort_keys=True) + "\n")
    manifest.load.cache_clear()
    return manifest.PATH
