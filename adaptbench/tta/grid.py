"""A TTA grid → cells (method × source × scenario × seed). Parse-time safe: no torch.

Sources are trained once per grid by the ``train_source`` rule and shared by every cell that meets them;
shifts default to the whole suite of the source's kind; scenarios are data (see runner.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adaptbench import manifest
from adaptbench.grid import Cell, Plan, _excluded, check_name, method_files, named_entries
from adaptbench.results import config_hash, folder_name

TRACK = "tta"

IMAGE_ARCHS = ("cnn_bn", "cnn_gn", "mlp_ln", "wrn28_10")


@dataclass(frozen=True)
class TTACell(Cell):
    """A TTA cell: ``model`` is the source's name, ``task`` the scenario's."""

    shifts: tuple = field(default=(), compare=False)

    @property
    def source(self) -> str:
        return self.model

    @property
    def scenario(self) -> str:
        return self.task


def portable(entry: dict) -> dict:
    """A source entry as its hash sees it: a data folder by name, not by this machine's path."""
    return {k: (folder_name(v) if k in ("data_dir", "checkpoint") and v else v) for k, v in entry.items()}


def source_key(source: dict) -> str:
    return config_hash({"track": TRACK, "source": portable(source)})


def cell_config(*, method: str, method_params: dict, source: dict, scenario: dict, shifts, severities, seed: int) -> dict:
    return {"track": TRACK, "method": method, "method_params": manifest.resolve_params(method, method_params),
            "source": portable(source), "scenario": scenario, "shifts": list(shifts),
            "severities": list(severities), "seed": seed}


def method_entries(config: dict) -> dict[str, dict]:
    tta = {name for name, family in method_files().items() if family == "tta"}
    return named_entries(config["methods"], "method", tta, "TTA method")


def sources(config: dict) -> dict[str, dict]:
    out = {}
    for src in config["sources"]:
        kind = src.get("kind", "image")
        if kind == "image" and src.get("arch", "cnn_bn") not in IMAGE_ARCHS:
            raise ValueError(f"grid: source '{src['name']}': arch must be one of {IMAGE_ARCHS}, got {src.get('arch')!r}")
        if kind == "text" and "task" not in src:
            raise ValueError(f"grid: source '{src['name']}': a text source needs a sentence task (e.g. sst2)")
        check_name("source", src["name"])
        if src["name"] in out:
            raise ValueError(f"grid: source '{src['name']}' appears twice")
        src = {"kind": kind, **src}
        if src.get("data_dir") is None and config.get("data_dir"):  # the grid's data root serves every source
            root = Path(config["data_dir"])
            src["data_dir"] = str(root / "glue" if kind == "text" and (root / "glue").is_dir() else root)
        out[src["name"]] = src
    return out


def scenarios(config: dict) -> dict[str, dict]:
    names = [check_name("scenario", s["name"]) for s in config["scenarios"]]
    if len(set(names)) != len(names):
        raise ValueError(f"grid: scenario names must be distinct, got {names}")
    return {s["name"]: s for s in config["scenarios"]}


def unavailable_sources(config: dict) -> dict[str, str]:
    """Sources whose data is not on this machine, with the reason; their cells are skipped and the
    report says so (never another dataset in their place). Read without numpy or torch."""
    from adaptbench.tta.data import MNIST_FILES, cifar10c_unavailable_reason

    out = {}
    for name, src in sources(config).items():
        dataset, root = src.get("dataset"), src.get("data_dir")
        if src["kind"] != "image" or dataset in (None, "digits"):
            continue
        if dataset == "cifar10c":
            reason = cifar10c_unavailable_reason(root)
            if not reason and src.get("checkpoint") and not Path(src["checkpoint"]).is_file():
                reason = f"source checkpoint {src['checkpoint']} not found"
        else:
            found = root is not None and any((Path(root) / sub / MNIST_FILES["images"]).is_file() for sub in ("", "mnist"))
            reason = None if found else f"MNIST files ({MNIST_FILES['images']}) not found under data_dir {root}"
        if reason:
            out[name] = reason
    return out


def shifts_for(config: dict, source: dict) -> list[str]:
    """The grid's shifts for this source's kind; all of the suite when the grid names none."""
    chosen = (config.get("shifts") or {}).get(source.get("dataset") if source.get("dataset") == "cifar10c"
                                              else source["kind"])
    if chosen:
        return list(chosen)
    if source.get("dataset") == "cifar10c":
        from adaptbench.tta.data import CIFAR10C_SHIFTS
        return list(CIFAR10C_SHIFTS)
    if source["kind"] == "image":
        from adaptbench.tta.image_shift import IMAGE_SHIFTS
        return list(IMAGE_SHIFTS)
    from adaptbench.tta.text_shift import TEXT_SHIFTS
    return list(TEXT_SHIFTS)


def plan(config: dict) -> Plan:
    methods, srcs, scens = method_entries(config), sources(config), scenarios(config)
    unavailable = unavailable_sources(config)
    severities = config.get("severities", [5])
    cells = []
    for label, entry in methods.items():
        params = dict(entry.get("params") or {})
        manifest.check_params(entry["method"], params, f"grid: method '{label}'")
        for src in [s for s in srcs if s not in unavailable]:
            shifts = tuple(shifts_for(config, srcs[src]))
            for scen in scens:
                for seed in config["seeds"]:
                    if _excluded({"method": label, "source": src, "scenario": scen, "seed": seed},
                                 config.get("exclude") or []):
                        continue
                    cfg = cell_config(method=entry["method"], method_params=params, source=srcs[src],
                                      scenario=scens[scen], shifts=shifts, severities=severities, seed=int(seed))
                    cells.append(TTACell(TRACK, label, entry["method"], src, src, scen, int(seed), params, {}, cfg,
                                         shifts))
    if not cells and not unavailable:
        raise ValueError("grid: no cells to run (everything excluded)")
    return Plan(cells, unavailable)


def expand(config: dict) -> list[TTACell]:
    return plan(config).cells
