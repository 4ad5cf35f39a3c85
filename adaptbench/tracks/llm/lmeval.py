"""Scoring through lm-evaluation-harness's Python API, offline, on local data.

Every evaluation task is an lm-eval task YAML written at job time into the cell's folder
(``TaskManager(include_path=..., include_defaults=False)``), over a JSONL of documents we prepare from
the local files, so lm-eval never touches the network. Two families of formats:

  lm-eval's own formats (multiple choice by log-likelihood; ``acc`` and ``acc_norm``):
    arc_easy, arc_challenge, boolq, piqa, social_iqa, openbookqa, winogrande — ``Question: …\\nAnswer:``
    with each choice's text as the continuation (lm-eval's arc/obqa/piqa/siqa prompt shape; the questions
    and choices are parsed from LLM-Adapters' test files, which carry them inside an instruction);
    mmlu — lm-eval's mmlu prompt (question, A–D, ``Answer:``), 5-shot from each subject's dev split,
    pooled over the 57 subjects (micro average; lm-eval's group reports the subject macro average);
    gsm8k — ``Question: …\\nAnswer:`` generate_until, ``strict-match`` (``#### N``) and
    ``flexible-extract`` (last number), exact match.
  the papers' generative protocols (LLM-Adapters commonsense_evaluate.py / evaluate.py):
    la_<dataset> — the Alpaca prompt, greedy generation, the first answer word of the dataset's format
    (``acc``); la_gsm8k — the last number of the generation, correct within 1e-3 (``acc``).
  syn_category — SYNTHETIC multiple choice (the embedded default's held-out words).
And the researcher's own tasks: lm-eval task YAMLs in the folders of a grid's ``eval.include_path``, passed to
lm-eval as written (beside the generated folder); their YAML and local data files, hashed, version the cell.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from adaptbench.tracks.llm import synthetic
from adaptbench.tracks.llm.prompts import prompt

LA = "llm_adapters"
MC_SOURCES = {  # task → LLM-Adapters test file
    "arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "boolq": "boolq", "piqa": "piqa",
    "social_iqa": "social_i_qa", "openbookqa": "openbookqa", "winogrande": "winogrande",
}
GENERATIVE = {f"la_{k}": v for k, v in MC_SOURCES.items()}
TASKS = (*MC_SOURCES, "mmlu", "gsm8k", *GENERATIVE, "la_gsm8k", "syn_category")
_CHOICE = re.compile(r"(?:Answer|Solution|Option|Ending)(\d+):\s*(.*?)(?=\s*(?:Answer|Solution|Option|Ending)\d+:|"
                     r"\s*Answer format:|$)", re.S)


INCLUDE_ENV = "ADAPTBENCH_LM_EVAL_DIRS"  # the grid's eval.include_path, for this process and the jobs it starts


def use_include_path(dirs) -> None:
    """Make the researcher's lm-eval task folders (a grid's ``eval.include_path``) known here and in the jobs
    this run starts, as ``tasks.use_task_dirs`` does for fine-tuning tasks. A missing folder is a one-line error."""
    from adaptbench.tasks import add_env_folders

    add_env_folders(INCLUDE_ENV, dirs, "eval.include_path", "lm-eval task YAMLs")


def include_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if d]


class _Tolerant(yaml.SafeLoader):
    """Reads lm-eval task YAMLs without lm-eval: ``!function`` and other tags load as their plain text."""


_Tolerant.add_multi_constructor("!", lambda loader, suffix, node: getattr(loader, "construct_" + (
    "mapping" if isinstance(node, yaml.MappingNode) else "sequence" if isinstance(node, yaml.SequenceNode)
    else "scalar"))(node))


def user_tasks() -> dict[str, Path]:
    """Task name → its YAML, over the include folders (recursively, as lm-eval scans them). A name the package
    generates itself is an error, not a shadow."""
    found: dict[str, Path] = {}
    for folder in include_dirs():
        for path in sorted(folder.rglob("*.yaml")):
            try:
                raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Tolerant)
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise ValueError(f"{path}: not a readable lm-eval task YAML ({type(e).__name__})") from None
            name = raw.get("task") if isinstance(raw, dict) else None
            if not isinstance(name, str):
                continue  # a group, a template others include, or not a task
            if name in TASKS:
                raise ValueError(f"{path}: task '{name}' is one adaptbench generates; rename it")
            if name in found and found[name] != path:
                raise ValueError(f"{path}: task '{name}' is also defined in {found[name]}; rename one")
            found[name] = path
    return found


def _data_files(path: Path) -> list[tuple[str, Path]]:
    """(field, file) for each local file the task reads (dataset_kwargs.data_files, strings or lists or a mapping)."""
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Tolerant)
    files = ((raw.get("dataset_kwargs") or {}) if isinstance(raw.get("dataset_kwargs"), dict) else {}).get("data_files")
    items = files.items() if isinstance(files, dict) else [("", files)]
    out = []
    for key, value in items:
        for f in [value] if isinstance(value, str) else (value or []):
            out.append((f"dataset_kwargs.data_files{'.' + key if key else ''}", Path(f).expanduser()))
    return out


def user_task_digest(path: Path) -> str:
    """The task's version: sha256 of its YAML and every local data file it reads."""
    h = hashlib.sha256(path.read_bytes())
    for _, f in _data_files(path):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def unavailable_reason(task: str, data_dir: str | None) -> str | None:
    if task not in TASKS:
        yaml_file = user_tasks().get(task)
        if yaml_file is None:
            return (f"unknown evaluation task '{task}'; known: {', '.join(TASKS)}, or a task YAML in a folder of "
                    "eval.include_path")
        missing = [(key, f) for key, f in _data_files(yaml_file) if not f.is_file()]
        return f"data unavailable: {missing[0][1]} not found ({yaml_file}: {missing[0][0]})" if missing else None
    if task == "syn_category":
        return None
    if data_dir is None:
        return "needs data_dir (../shared/data layout: llm_adapters/, gsm8k/, mmlu/)"
    path = Path(data_dir) / _source_path(task)
    return None if path.exists() else f"data unavailable: {path} not found"


def _source_path(task: str) -> str:
    if task in MC_SOURCES or task in GENERATIVE:
        return f"{LA}/{(MC_SOURCES | GENERATIVE)[task]}/test.json"
    return {"mmlu": "mmlu/test", "gsm8k": "gsm8k/test.jsonl", "la_gsm8k": "gsm8k/test.jsonl"}[task]


def parse_mc(record: dict) -> dict:
    """An LLM-Adapters multiple-choice record → {question, choices, gold}."""
    text = record["instruction"]
    head = text.split("\n\n")[0]
    question = head.split(": ", 1)[1] if ": " in head else head
    if record["answer"] in ("true", "false"):  # boolq: the instruction has no passage, only the question
        question = question.removeprefix("question: ").strip()
        return {"question": question, "choices": ["true", "false"], "gold": ["true", "false"].index(record["answer"])}
    found = sorted((int(i), c.strip()) for i, c in _CHOICE.findall(text))
    if not found:
        raise ValueError(f"no choices found in: {text[:80]!r}")
    gold = int(re.sub(r"\D", "", record["answer"])) - 1
    return {"question": question.strip(), "choices": [c for _, c in found], "gold": gold}


def _docs(task: str, data_dir: str | None) -> tuple[list[dict], list[dict] | None]:
    """(test docs, few-shot docs) with uniform fields for the YAML templates."""
    if task == "syn_category":
        return [{"query": prompt(d["instruction"]), "choices": d["choices"], "gold": d["gold"]}
                for d in synthetic.mc_docs("test")], None
    path = Path(data_dir) / _source_path(task)
    if task in MC_SOURCES:
        docs = [parse_mc(r) for r in json.loads(path.read_text(encoding="utf-8"))]
        return [{"query": f"Question: {d['question']}\nAnswer:", **d} for d in docs], None
    if task in GENERATIVE:
        records = json.loads(path.read_text(encoding="utf-8"))
        return [{"query": prompt(r["instruction"], r.get("input", "")), "target": r["answer"],
                 "dataset": GENERATIVE[task]} for r in records], None
    if task in ("gsm8k", "la_gsm8k"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if task == "gsm8k":
            return [{"query": f"Question: {r['question']}\nAnswer:", "target": r["answer"]} for r in rows], None
        return [{"query": prompt(r["question"]), "target": r["answer"]} for r in rows], None
    # mmlu: one pooled task over the 57 subjects, dev rows of the same subject as few-shot examples
    test, dev = [], []
    for split, out in (("test", test), ("dev", dev)):
        for f in sorted((Path(data_dir) / "mmlu" / split).glob(f"*_{split}.csv")):
            subject = f.name.removesuffix(f"_{split}.csv")
            with open(f, newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    q, *choices, answer = row
                    out.append({"subject": subject, "query": _mmlu_query(subject, q, choices),
                                "choices": ["A", "B", "C", "D"], "gold": "ABCD".index(answer.strip())})
    return test, dev


def _mmlu_query(subject: str, question: str, choices: list[str]) -> str:
    lines = [question.strip()] + [f"{letter}. {c}" for letter, c in zip("ABCD", choices)] + ["Answer:"]
    return "\n".join(lines)


def _yaml(task: str, doc_file: Path, fewshot_file: Path | None) -> str:
    files = {"test": str(doc_file)} | ({"train": str(fewshot_file)} if fewshot_file else {})
    head = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files: {json.dumps(files)}\n"
            f"test_split: test\n" + ("fewshot_split: train\n" if fewshot_file else "") + "doc_to_text: \"{{query}}\"\n")
    if task in MC_SOURCES or task in ("mmlu", "syn_category"):
        return head + ("output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: gold\n"
                       "target_delimiter: \" \"\nmetric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
                       "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\nmetadata: {version: 1}\n")
    if task == "gsm8k":  # lm-eval's gsm8k.yaml filters and stop sequences
        return head + ("output_type: generate_until\ndoc_to_target: \"{{target}}\"\n"
                       "generation_kwargs: {until: [\"Question:\", \"</s>\", \"<|im_end|>\"], do_sample: false}\n"
                       "metric_list:\n  - {metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true,"
                       " ignore_punctuation: false, regexes_to_ignore: [\",\", \"\\\\$\", \"(?s).*#### \", \"\\\\.$\"]}\n"
                       "filter_list:\n  - name: strict-match\n    filter:\n"
                       "      - {function: regex, regex_pattern: \"#### (\\\\-?[0-9\\\\.\\\\,]+)\"}\n"
                       "      - {function: take_first}\n"
                       "  - name: flexible-extract\n    filter:\n"
                       "      - {function: regex, group_select: -1, regex_pattern: \"(-?[$0-9.,]{2,})|(-?[0-9]+)\"}\n"
                       "      - {function: take_first}\nmetadata: {version: 3}\n")
    fn = "commonsense_results" if task in GENERATIVE else "math_results"
    return head + ("output_type: generate_until\ndoc_to_target: \"{{target}}\"\n"
                   "generation_kwargs: {until: [\"</s>\", \"<|im_end|>\", \"### Instruction\"], do_sample: false}\n"
                   f"process_results: !function utils.{fn}\n"
                   "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\nmetadata: {version: 1}\n")


UTILS = '''"""Generated by adaptbench: the papers' answer extraction, for lm-eval's process_results."""
from adaptbench.tracks.llm.prompts import extract_choice, extract_number, gsm8k_label, number_correct


def commonsense_results(doc, results):
    return {"acc": float(extract_choice(doc["dataset"], results[0]) == doc["target"])}


def math_results(doc, results):
    return {"acc": float(number_correct(extract_number(results[0]), gsm8k_label(doc["target"])))}
'''


def write_tasks(tasks: list[str], data_dir: str | None, folder: Path) -> Path:
    """Documents + YAML per task (+ utils.py) in ``folder``: lm-eval's include_path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "utils.py").write_text(UTILS)
    for task in tasks:
        reason = unavailable_reason(task, data_dir)
        if reason:
            raise FileNotFoundError(f"evaluation task '{task}': {reason}")
        docs, fewshot = _docs(task, data_dir)
        doc_file = folder / f"{task}.jsonl"
        doc_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
        shot_file = None
        if fewshot:
            shot_file = folder / f"{task}.fewshot.jsonl"
            shot_file.write_text("".join(json.dumps(d) + "\n" for d in fewshot))
        (folder / f"{task}.yaml").write_text(_yaml(task, doc_file.resolve(), shot_file.resolve() if shot_file else None))
    return folder


DEFAULT_FEWSHOT = {"mmlu": 5}  # MMLU is reported 5-shot (Hendrycks et al.; lm-eval's mmlu default)


def evaluate(model, tokenizer, tasks: list[str], data_dir: str | None, folder: Path, *, limit: int | None,
             batch_size: int | str = 16, bootstrap_iters: int = 100, num_fewshot: dict | None = None,
             max_gen_toks: int = 256, seed: int = 1234, task_limit: dict | None = None) -> tuple[dict, dict]:
    """lm-eval over the in-memory model → ({task/metric: {value, stderr}}, lm-eval's results dict)."""
    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")  # lm-eval must never wait on the network
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    ours = user_tasks()
    include = [str(write_tasks([t for t in tasks if t not in ours], data_dir, Path(folder)))]
    include += sorted({str(ours[t].parent) for t in tasks if t in ours})  # the researcher's YAMLs, as written
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=getattr(
        model.config, "max_position_embeddings", 2048), max_gen_toks=max_gen_toks)
    manager = TaskManager(include_path=include, include_defaults=False)
    shots = {**DEFAULT_FEWSHOT, **(num_fewshot or {})}
    metrics, raw = {}, {"results": {}, "samples": {}}
    for group in _groups(tasks, shots, limit, task_limit or {}):
        out = lm_eval.simple_evaluate(model=lm, tasks=group["tasks"], num_fewshot=group["shots"], limit=group["limit"],
                                      bootstrap_iters=bootstrap_iters, task_manager=manager, log_samples=True,
                                      random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                      fewshot_random_seed=seed)
        raw["results"].update(out["results"])
        raw["samples"].update(out.get("samples", {}))
    for task, values in raw["results"].items():
        for key, value in values.items():
            name, _, filt = key.partition(",")
            if name.endswith("_stderr") or not isinstance(value, (int, float)) or name in ("alias", "sample_len"):
                continue
            stderr = values.get(f"{name}_stderr,{filt}")
            label = f"{task}/{name}" + ("" if filt in ("none", "") else f"/{filt}")
            metrics[label] = {"value": float(value),
                              "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    # the batch size lm-eval ran with: as given, or what it measured for batch_size: auto
    raw["batch_size"] = {"requested": batch_size,
                         "detected": {str(k): v for k, v in (getattr(lm, "batch_sizes", None) or {}).items()} or None}
    return metrics, raw


def _groups(tasks: list[str], shots: dict, limit: int | None, task_limit: dict) -> list[dict]:
    """lm-eval takes one few-shot count and one limit per call: one call per distinct pair."""
    groups: dict = {}
    for task in tasks:
        groups.setdefault((shots.get(task), task_limit.get(task, limit)), []).append(task)
    return [{"shots": k, "limit": n, "tasks": v} for (k, n), v in groups.items()]
