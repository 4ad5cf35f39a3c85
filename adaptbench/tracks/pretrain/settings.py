"""Pretraining settings, torch-free (the grid expansion reads them): model sizes and ``train:`` keys."""

from __future__ import annotations

from dataclasses import dataclass, fields

@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int
    source: str


MODEL_SIZES = {
    # GaLore App. C.1 Table 5 = configs/llama_{60m,130m,350m,1b}.json (vocab 32000 there)
    "llama_60m": ModelSize(512, 1376, 8, 8, "GaLore Table 5; configs/llama_60m.json"),
    "llama_130m": ModelSize(768, 2048, 12, 12, "GaLore Table 5; configs/llama_130m.json"),
    "llama_350m": ModelSize(1024, 2736, 16, 24, "GaLore Table 5; configs/llama_350m.json"),
    "llama_1b": ModelSize(2048, 5461, 32, 24, "configs/llama_1b.json (Table 5 swaps heads and layers)"),
    # CPU sizes (ours): the 60M model's ratios (intermediate = 2.6875·hidden, head size 32-64), fewer layers
    "llama_tiny": ModelSize(128, 344, 4, 4, "adaptbench CPU size: ~0.8M non-embedding parameters"),
    "llama_mini": ModelSize(256, 688, 8, 4, "adaptbench CPU size: ~3.2M non-embedding parameters"),
}


# The budget and evaluation settings that make two pretraining cells comparable (not lr or schedule shape).
PROTOCOL_KEYS = ("steps", "batch_size", "seq_len", "eval_every", "eval_batches", "max_docs", "data_seed")


@dataclass(frozen=True)
class PretrainConfig:
    """The ``train:`` settings of a pretraining cell; defaults are GaLore's LLaMA-60M run."""

    steps: int = 10_000  # Table 5: 10K (60M), 20K (130M), 60K (350M), 100K (1B)
    batch_size: int = 512  # sequences per step: 131K tokens / 256 (App. C.1; scripts --total_batch_size 512)
    seq_len: int = 256  # App. C.1: "max sequence length of 256 for all models"
    lr: float = 1e-3  # App. C.1: tuned from {1e-2, 5e-3, 1e-3, 5e-4, 1e-4}; full-rank "usually ≤ 0.001"
    warmup_ratio: float = 0.1  # App. C.1: warmup over the first 10% of the training steps
    min_lr_ratio: float = 0.1  # App. C.1: cosine annealing to 10% of the initial learning rate
    weight_decay: float = 0.0  # scripts/benchmark_c4/*.sh: --weight_decay 0
    max_grad_norm: float = 1.0  # 0 disables clipping (GaLore's scripts: --grad_clipping 0.0)
    eval_every: int = 1000  # scripts/benchmark_c4/*.sh: --eval_every 1000
    eval_batches: int | None = None  # validation batches per evaluation; None: every validation sequence
    max_docs: int | None = None  # cap on training documents (a deterministic subset fixed by data_seed)
    data_seed: int = 0  # which documents are held out / subsampled: the same for every method and seed

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "eval_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        for name in ("eval_batches", "max_docs"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"train.{name} must be a positive integer or null, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"train.lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("train.weight_decay and train.max_grad_norm must be >= 0")

    @classmethod
    def from_dict(cls, d: dict | None) -> "PretrainConfig":
        d = dict(d or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            optimizer_keys = {"optimizer", "optimizer_params"} & set(d)
            hint = " (set the optimizer with --optimizer/--optimizer-params)" if optimizer_keys else ""
            raise ValueError(f"train: unknown setting(s) {unknown}; valid: {sorted(valid)}{hint}")
        for key in ("lr", "weight_decay", "min_lr_ratio", "warmup_ratio", "max_grad_norm"):
            if isinstance(d.get(key), str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    d[key] = float(d[key])
                except ValueError:
                    raise ValueError(f"train.{key} must be a number, got {d[key]!r}") from None
        return cls(**d)


def get_size(name: str) -> ModelSize:
    if name not in MODEL_SIZES:
        import difflib

        close = difflib.get_close_matches(name, MODEL_SIZES, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"Unknown model size '{name}'.{hint} Available: {', '.join(MODEL_SIZES)}")
    return MODEL_SIZES[name]


