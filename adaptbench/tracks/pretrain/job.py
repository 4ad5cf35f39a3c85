"""Pretrain a Llama-style causal LM from scratch and report validation perplexity: the ``pretrain`` job.

The GaLore family (GaLore arXiv:2403.03507, SLTrain arXiv:2406.02214, Natural GaLore) compares optimizers
by the C4 validation perplexity of small LLaMA models trained from scratch. This job runs that setting
at any scale: seed → corpus (train/validation documents) → tokeniser → packed sequences → model (an
optimizer method may re-parameterise it, e.g. SLTrain) → optimizer → steps with linear warmup and
cosine decay, evaluating ``ppl = exp(mean token NLL)`` on the held-out documents at step 0, every
``eval_every`` steps and at the end → ``result.json`` (adaptbench's one record, ``results.make_record``).

Setting (GaLore App. C.1 and Table 5; reference github.com/jiaweizzhao/GaLore@8460814, torchrun_main.py,
configs/llama_*.json, scripts/benchmark_c4/*.sh):
  - LLaMA with RMSNorm (eps 1e-6) and SwiGLU, untied input/output embeddings, init std 0.02;
    60M: 512/1376/8 heads/8 layers, 10K steps; 130M: 768/2048/12/12, 20K; 350M: 1024/2736/16/24, 60K;
    1B: 2048/5461/32 heads/24 layers, 100K (Table 5 prints "24 heads, 32 layers" for 1B, which cannot
    be: 2048/24 is not an integer head size; configs/llama_1b.json has 32 heads and 24 layers).
  - Sequence length 256, 131K tokens per step (= 512 sequences), warmup over the first 10% of the steps,
    cosine decay to 10% of the peak lr. Learning rate tuned per method from {1e-2, 5e-3, 1e-3, 5e-4, 1e-4}
    (App. C.1: "the full-rank baseline usually uses a learning rate ≤ 0.001"); Adam β = (0.9, 0.999),
    ε = 1e-8 (§5.1); weight decay 0 (scripts). T5 tokenizer (vocab 32000 in the configs), C4 "en".

Deviations
  - Documents are packed into one token stream (each ends with eos) cut into ``seq_len`` windows, every
    token after the first predicted exactly once; GaLore truncates each document to 256 tokens and pads.
    Packing wastes no compute on padding and keeps short sentences (the synthetic corpus) usable.
  - Validation perplexity is exp(token-weighted mean NLL) over the held-out documents; GaLore averages
    per-batch mean losses over ~10M streamed tokens (torchrun_main.py evaluate_model).
  - Gradients are clipped to ``max_grad_norm`` = 1.0 by default (LLaMA's setting); GaLore's scripts do not
    clip (--grad_clipping 0.0). Set max_grad_norm: 0 to match them.
  - fp32 instead of BF16; the warmup starts at lr·1/W, not 0 (no wasted first step, as train.py).
  - The model's vocabulary is the tokeniser's (T5: 32100 with its 100 sentinel ids; the configs say
    32000). The embedded default corpus is synthetic (word tokeniser), never comparable with C4 numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, fields
from pathlib import Path

from adaptbench.config import TrainConfig
from adaptbench.results import atomic_write_json, folder_name, make_record, metric
from adaptbench.tasks import corpora
from adaptbench.tracks.pretrain.grid import TRACK, cell_config
from adaptbench.tracks.pretrain.settings import MODEL_SIZES, PROTOCOL_KEYS, PretrainConfig, get_size

ADAMW_PAPER = {"title": "Decoupled Weight Decay Regularization", "arxiv": "1711.05101"}


def llama_config(size: str, vocab_size: int, seq_len: int = 256, eos_id: int | None = None):
    """``transformers.LlamaConfig`` of a named size (GaLore configs: RMSNorm eps 1e-6, init std 0.02,
    untied embeddings, SwiGLU, RoPE)."""
    from transformers import LlamaConfig

    s = get_size(size)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                       num_attention_heads=s.num_attention_heads, num_hidden_layers=s.num_hidden_layers,
                       max_position_embeddings=seq_len, rms_norm_eps=1e-6, initializer_range=0.02,
                       tie_word_embeddings=False, hidden_act="silu", use_cache=False,
                       bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=None)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """App. C.1: linear warmup over ``warmup_steps``, then cosine annealing to ``min_lr_ratio``·lr:
    f = (t+1)/W for t < W, else m + (1 − m)·½(1 + cos(π·(t − W)/(T − W)))."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pack_tokens(docs_ids: list[list[int]], eos_id: int, seq_len: int):
    """Documents → one stream (each followed by eos) → (inputs, targets), both LongTensor (N, seq_len).

    Window i reads stream[i·L : (i+1)·L] and predicts stream[i·L+1 : (i+1)·L+1], so every token after
    the first is a target exactly once. The last window is padded (input eos, target −100, ignored)."""
    import numpy as np
    import torch

    lengths = np.fromiter((len(d) + 1 for d in docs_ids), dtype=np.int64, count=len(docs_ids))
    stream = np.full(int(lengths.sum()), eos_id, dtype=np.int64)
    ends = np.cumsum(lengths)
    for doc, end in zip(docs_ids, ends):
        stream[end - 1 - len(doc):end - 1] = doc
    n = max(1, math.ceil((len(stream) - 1) / seq_len))
    inputs = np.full(n * seq_len, eos_id, dtype=np.int64)
    targets = np.full(n * seq_len, -100, dtype=np.int64)
    inputs[: len(stream) - 1] = stream[:-1]
    targets[: len(stream) - 1] = stream[1:]
    return torch.from_numpy(inputs.reshape(n, seq_len)), torch.from_numpy(targets.reshape(n, seq_len))


def evaluate_ppl(model, inputs, targets, batch_size: int, max_batches: int | None = None, device="cpu") -> dict:
    """Validation loss = Σ NLL / #target tokens over the windows, ppl = exp(loss)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    n = len(inputs) if max_batches is None else min(len(inputs), max_batches * batch_size)
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x, y = inputs[start:start + batch_size].to(device), targets[start:start + batch_size].to(device)
            logits = model(input_ids=x).logits
            nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                                   ignore_index=-100, reduction="sum").item()
            count += int((y != -100).sum())
    model.train()
    loss = nll / count
    return {"loss": loss, "ppl": math.exp(loss), "tokens": count}


def batch_indices(n: int, batch_size: int, seed: int):
    """Endless batches of window indices: a fresh seeded permutation per pass over the data."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=g)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def pretrain(*, model_size: str, corpus: str, seed: int, out_dir: str | Path, train_params: dict | None = None,
             optimizer: str = "adamw", optimizer_params: dict | None = None, data_dir: str | None = None,
             tokenizer: str | None = None, device: str | None = None, threads: int | None = None,
             label: str | None = None, progress: bool = False) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from adaptbench import models
    from adaptbench.protocol import optimizer_state_bytes
    from adaptbench.registry import get_method
    from adaptbench.build import build_optimizer, optimizer_method, peak_memory_bytes, pick_device, seed_everything

    t_start = time.time()
    out_dir = Path(out_dir)
    cfg = PretrainConfig.from_dict(train_params)
    get_size(model_size)  # fail fast on a bad name, before any data is read
    spec = corpora.get_corpus(corpus)
    opt_cfg = TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=optimizer,
                          optimizer_params=dict(optimizer_params or {}))
    opt_method = optimizer_method(opt_cfg)  # fails fast on a bad optimizer name or hyperparameter
    if opt_method is None and opt_cfg.optimizer_params:
        raise ValueError(f"optimizer_params {sorted(opt_cfg.optimizer_params)} given for adamw, which takes none; "
                         "set them through train params (lr, weight_decay) or choose a registered optimizer")
    opt_params = asdict(opt_method.cfg) if opt_method is not None else {}
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    seed_everything(seed)

    # data: the same documents, tokeniser and windows for every method and seed (data_seed)
    train_docs, val_docs, source = corpora.load_corpus_with_source(corpus, data_dir, cfg.max_docs, cfg.data_seed)
    tok = corpora.load_tokenizer(tokenizer or spec.tokenizer, train_docs)
    train_x, train_y = pack_tokens(tok.encode_batch(train_docs), tok.eos_id, cfg.seq_len)
    val_ids = tok.encode_batch(val_docs)
    val_x, val_y = pack_tokens(val_ids, tok.eos_id, cfg.seq_len)
    unk = sum(i == tok.unk_id for d in val_ids for i in d) if tok.unk_id is not None else 0

    # model: random init fixed by the seed, then the optimizer's re-parameterisation (SLTrain), if any
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(model_size, tok.vocab_size, cfg.seq_len, tok.eos_id))
    if opt_method is not None:
        model = opt_method.prepare_model(model)
    model.to(dev).train()
    params = models.count_parameters(model)
    optim = build_optimizer(model, opt_cfg, opt_method)
    warmup = math.ceil(cfg.warmup_ratio * cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda t: warmup_cosine_factor(t, warmup, cfg.steps, cfg.min_lr_ratio))
    trainable = [p for p in model.parameters() if p.requires_grad]

    def evaluate(step: int, tokens: int) -> dict:
        scores = evaluate_ppl(model, val_x, val_y, cfg.batch_size, cfg.eval_batches, dev)
        return {"step": step, "tokens": tokens, "loss": round(scores["loss"], 6), "ppl": round(scores["ppl"], 4),
                "eval_tokens": scores["tokens"], "lr": optim.param_groups[0]["lr"]}

    history = [evaluate(0, 0)]  # the initial perplexity (about the vocabulary size at random init)
    losses, tokens, eval_seconds, t0 = [], 0, 0.0, time.time()
    batches = batch_indices(len(train_x), cfg.batch_size, seed)
    bar = tqdm(range(cfg.steps), desc=f"{optimizer}/{model_size}/{corpus} seed {seed}", disable=not progress,
               mininterval=5)
    for step in bar:
        idx = next(batches)
        x, y = train_x[idx].to(dev), train_y[idx].to(dev)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; lower train.lr")
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optim.step()
        scheduler.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int((y != -100).sum())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            t_eval = time.time()
            history.append(evaluate(step + 1, tokens))
            eval_seconds += time.time() - t_eval
    train_seconds = time.time() - t0 - eval_seconds  # optimisation steps only: tokens/s compares optimizers

    last, best = history[-1], min(history, key=lambda h: h["ppl"])
    config = cell_config(optimizer=optimizer, optimizer_params=opt_params, size=model_size, corpus=corpus, seed=seed,
                         train=asdict(cfg), data_dir=data_dir, tokenizer=tokenizer)
    paper = ADAMW_PAPER if opt_method is None else {"title": get_method(optimizer).paper.title,
                                                     "arxiv": get_method(optimizer).paper.arxiv}
    data = {"source": source,
            "train": {"docs": len(train_docs), "sha256": corpora.docs_sha256(train_docs),
                      "tokens": int((train_y != -100).sum()), "windows": len(train_x)},
            "validation": {"docs": len(val_docs), "sha256": corpora.docs_sha256(val_docs),
                           "tokens": int((val_y != -100).sum()), "windows": len(val_x),
                           "unk_fraction": round(unk / max(1, sum(map(len, val_ids))), 6)}}
    protocol = {"track": TRACK, "model": model_size, "task": corpus, "task_version": spec.version,
                "data": {k: data[k]["sha256"] for k in ("train", "validation")}, "tokenizer": tok.info,
                "budget": {k: v for k, v in asdict(cfg).items() if k in PROTOCOL_KEYS}, "seed": seed}
    higher = dict(spec.higher_is_better)
    result = make_record(
        track=TRACK, config=config, protocol=protocol,
        run_info={
            "method": optimizer, "method_params": opt_params, "model": model_size, "task": corpus, "seed": seed,
            "train": asdict(cfg), "data_dir": folder_name(data_dir), "tokenizer": tokenizer or spec.tokenizer,
            "label": label or optimizer,
            "family": "optimizer",
            "paper": paper,
            "model_info": {"model": model_size, "source": "scratch:llama", "weights": f"random init, seed {seed}",
                           "size_source": get_size(model_size).source,
                           "config": {k: v for k, v in model.config.to_dict().items()
                                      if k in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                                               "num_hidden_layers", "max_position_embeddings", "rms_norm_eps")}},
            "task_version": spec.version,
            "synthetic": spec.is_synthetic,
            "data": data,
            "tokenizer_info": tok.info,
            "device": str(dev),
            "threads": torch.get_num_threads(),
        },
        metrics={name: metric(last[name], higher.get(name, False), "validation", best=best[name])
                 for name in ("ppl", "loss")},
        train_info={
            "steps": cfg.steps,
            "epochs": round(tokens / max(1, int((train_y != -100).sum())), 4),  # passes over the training tokens
            "tokens_seen": tokens,
            "wall_seconds": round(time.time() - t_start, 2),  # the whole job: data, tokeniser, evaluations
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "seconds_per_step": round(train_seconds / cfg.steps, 4),
            "tokens_per_second": round(tokens / max(train_seconds, 1e-9), 1),
            "peak_memory_bytes": peak_memory_bytes(dev),
            "optimizer_state_bytes": optimizer_state_bytes(optim),
            "params": params,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "loss_curve": [round(float(np.mean(c)), 5) for c in np.array_split(np.array(losses), min(20, len(losses)))],
            "history": history,
            "best_step": best["step"],
            "best_epoch": None,  # pretraining selects by step (best_step)
        },
        eval_info={"main_metric": spec.main_metric, "selection": "last", "split": "validation",
                   "eval_tokens": last["eval_tokens"]},
    )
    atomic_write_json(out_dir / "result.json", result)
    return result


# ---- command line: ``python -m adaptbench pretrain`` (the track's command table) ------------------

def add_arguments(p) -> None:
    p.add_argument("--optimizer", default="adamw", help="adamw, or a registered optimizer method (e.g. lion)")
    p.add_argument("--optimizer-params", default="{}", help="JSON object of the optimizer method's hyperparameters")
    p.add_argument("--model-size", required=True, help=f"one of {', '.join(MODEL_SIZES)}")
    p.add_argument("--corpus", required=True, help=f"one of {', '.join(corpora.list_corpora())}")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--train-params", default="{}",
                   help="JSON object: " + ", ".join(f.name for f in fields(PretrainConfig)))
    p.add_argument("--data-dir", default=None, help="folder (or file) of documents for corpus local_text")
    p.add_argument("--tokenizer", default=None, help="word, byte, a local tokenizer folder or a hub id "
                                                     "(default: the corpus's)")
    p.add_argument("--out", required=True, help="cell folder for result.json")
    p.add_argument("--label", default=None, help="the grid's name for this method entry (default: --optimizer)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args) -> dict:
    import json

    from adaptbench.jsonargs import json_arg

    result = pretrain(model_size=args.model_size, corpus=args.corpus, seed=args.seed, out_dir=args.out,
                      train_params=json_arg(args.train_params, "--train-params"), optimizer=args.optimizer,
                      optimizer_params=json_arg(args.optimizer_params, "--optimizer-params"),
                      data_dir=args.data_dir, tokenizer=args.tokenizer, device=args.device, threads=args.threads,
                      label=args.label, progress=args.progress)
    print(json.dumps({k: v["value"] for k, v in result["metrics"].items()}))
    return result
