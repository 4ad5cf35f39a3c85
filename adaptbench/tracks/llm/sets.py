"""Training sets of the LLM track (``tasks`` of an LLM grid), as data; torch-free (parse time reads it).

  - LLM-Adapters' local JSON files (../shared/data/llm_adapters: the boolq, ARC-Easy, ARC-Challenge and
    OpenBookQA train files, math_data.json), records ``{instruction, input, output}``;
  - GSM8K train (jsonl ``{question, answer}``; the answer with its worked solution is the response);
  - ``syn_category``: a SYNTHETIC instruction set adaptbench generates (the embedded default);
  - hub-only sets (commonsense_170k, math_10k, MetaMathQA): reported unavailable here, never substituted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from adaptbench.results import portable_source
from adaptbench.tracks.llm import synthetic

LLM_ADAPTERS_RAW = "https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/main/ft-training_set/"
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

# name → where the rows come from; ``path`` is relative to the grid's data_dir
TRAIN_SETS = {
    "boolq": {"kind": "llm_adapters", "path": "llm_adapters/boolq/train.json"},
    "arc_easy": {"kind": "llm_adapters", "path": "llm_adapters/ARC-Easy/train.json"},
    "arc_challenge": {"kind": "llm_adapters", "path": "llm_adapters/ARC-Challenge/train.json"},
    "openbookqa": {"kind": "llm_adapters", "path": "llm_adapters/openbookqa/train.json"},
    "math_data": {"kind": "llm_adapters", "path": "llm_adapters/math_data.json"},
    "gsm8k": {"kind": "gsm8k", "path": "gsm8k/train.jsonl"},
    "commonsense_mix": {"kind": "mix", "parts": ["boolq", "arc_easy", "arc_challenge", "openbookqa"]},
    "syn_category": {"kind": "synthetic"},
    # LLM-Adapters' training sets live in its GitHub repository (ft-training_set/), MetaMathQA on the hub
    "commonsense_170k": {"kind": "hub", "hub": "json", "data_files": LLM_ADAPTERS_RAW + "commonsense_170k.json"},
    "math_10k": {"kind": "hub", "hub": "json", "data_files": LLM_ADAPTERS_RAW + "math_10k.json"},
    "metamathqa": {"kind": "hub", "hub": "meta-math/MetaMathQA",
                   "fields": {"instruction": "query", "output": "response"}},
}


@dataclass
class Instructions:
    rows: list[dict]  # {instruction, input, output}
    source: str
    sha256: str
    synthetic: bool = False

    def __len__(self):
        return len(self.rows)


def unavailable_reason(name: str, data_dir: str | None) -> str | None:
    """Why a training set cannot be read here (None when it can); torch-free."""
    entry = TRAIN_SETS.get(name)
    if entry is None:
        return f"unknown training set '{name}'"
    if entry["kind"] == "hub":
        if any(os.environ.get(flag) == "1" for flag in OFFLINE_FLAGS):
            where = entry.get("data_files", entry["hub"])
            return f"{where} must be downloaded; not available offline (never substituted)"
        return None
    if entry["kind"] == "mix":
        reasons = [r for r in (unavailable_reason(p, data_dir) for p in entry["parts"]) if r]
        return "; ".join(reasons) or None
    if entry["kind"] == "synthetic":
        return None
    if data_dir is None:
        return f"needs data_dir (a folder with {entry['path']})"
    path = Path(data_dir) / entry["path"]
    return None if path.is_file() else f"data unavailable: {path} not found"


def _rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _read_rows(name: str, data_dir: str | None) -> tuple[list[dict], str]:
    entry = TRAIN_SETS[name]
    if entry["kind"] == "synthetic":
        return synthetic.instructions("train"), "synthetic:syn_category:train"
    if entry["kind"] == "mix":
        rows, sources = [], []
        for part in entry["parts"]:
            part_rows, source = _read_rows(part, data_dir)
            rows += part_rows
            sources.append(source)
        return rows, " + ".join(sources)
    if entry["kind"] == "hub":
        return _read_hub(entry)
    path = Path(data_dir) / entry["path"]
    try:
        if entry["kind"] == "gsm8k":
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in records]
        else:
            rows = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
                    for r in json.loads(path.read_text(encoding="utf-8"))]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file of instruction records ({type(e).__name__})") from None
    except KeyError as e:
        raise ValueError(f"{path}: records need field {e.args[0]!r}") from None
    return rows, portable_source(path, data_dir)


def _read_hub(entry: dict) -> tuple[list[dict], str]:
    import datasets  # only jobs that read the hub pay for it

    kwargs = {"data_files": entry["data_files"]} if "data_files" in entry else {}
    try:
        ds = datasets.load_dataset(entry["hub"], split="train", **kwargs)
    except Exception as e:  # offline or unreachable: one line, never a substitute
        raise FileNotFoundError(f"{entry.get('data_files', entry['hub'])} could not be loaded "
                                f"({type(e).__name__}); the hub is needed for this training set") from None
    fields = {"instruction": "instruction", "input": "input", "output": "output", **entry.get("fields", {})}
    rows = [{"instruction": r[fields["instruction"]], "input": r.get(fields["input"], "") or "",
             "output": r[fields["output"]]} for r in ds]
    return rows, f"hub:{entry.get('data_files', entry['hub'])}"


def load_instructions(name: str, data_dir: str | None, max_samples: int | None = None,
                      subset_seed: int = 0) -> Instructions:
    """Rows of a training set; ``max_samples`` takes a deterministic subset, the same for every method."""
    reason = unavailable_reason(name, data_dir)
    if reason:
        raise FileNotFoundError(f"training set '{name}': {reason}")
    rows, source = _read_rows(name, data_dir)
    digest = _rows_hash(rows)
    if max_samples is not None and max_samples < len(rows):
        keep = sorted(random.Random(f"subset/{name}/{subset_seed}").sample(range(len(rows)), max_samples))
        rows = [rows[i] for i in keep]
        source += f" (subset {max_samples}, subset_seed {subset_seed})"
    return Instructions(rows, source, digest, synthetic=TRAIN_SETS[name]["kind"] == "synthetic")
