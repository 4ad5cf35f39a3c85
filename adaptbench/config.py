"""Training settings shared by every method: the grid's ``train:`` section, per task where a paper's
table varies them (LoRA's Table 9 sets learning rate, batch size and epochs per task)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


PRECISIONS = ("fp32", "bf16", "fp16")
# Settings that change how a run is executed, not what it computes: left out of the cell's hash, so
# changing them reruns nothing.
RUN_CONTROL = ("checkpoint_every", "keep_checkpoint")
# What a finished cell keeps beside its records: nothing, the trained tensors `adaptbench evaluate` re-scores
# from (checkpoint.pt), or those and the whole deployable model with the update merged (model.pt).
KEEP_CHECKPOINT = ("none", "trainable", "all")
# Semantic settings added after cells were stored, with the value every stored cell ran with. ``semantic()``
# leaves a setting out while it has this value, so the stored cells keep their hashes; and a stored record's
# ``run_info.train`` that lacks the setting ran with it (read such records with ``from_record``).
SINCE_STORED = {"group_by_length": False}  # cells before it: uniformly random batches


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06  # LoRA Table 9 / RoBERTa: linear warmup over 6% of the steps
    max_grad_norm: float = 1.0
    max_length: int = 128
    max_train_samples: int | None = None  # deterministic subset, identical for every method and seed
    max_eval_samples: int | None = None
    subset_seed: int = 0
    selection: str = "best"  # which epoch a table reports: "best" (the papers' dev protocol) or "last"
    optimizer: str = "adamw"  # "adamw", or a registered optimizer method (methods/optimizers/)
    optimizer_params: dict = field(default_factory=dict)  # that method's hyperparameters
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype (fp16 adds a GradScaler); weights stay fp32
    grad_accum_steps: int = 1  # micro-batches per optimizer step: effective batch = batch_size × this
    gradient_checkpointing: bool = False  # recompute activations in backward (HF models): memory for time
    # batches of similar length (Hugging Face's group_by_length; adaptbench/batching.py): far less padding,
    # the data order still random. false: uniformly random batches, as every cell stored before it
    group_by_length: bool = True
    checkpoint_every: int = 0  # save a resumable checkpoint every N optimizer steps (0: only on SIGTERM)
    keep_checkpoint: str = "trainable"  # none | trainable | all (KEEP_CHECKPOINT); records never depend on it

    def __post_init__(self):
        positive = ("epochs", "batch_size", "eval_batch_size", "max_length", "grad_accum_steps")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"train.lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "max_grad_norm", "warmup_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"train.{name} must be a number, got {value!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("train.weight_decay must be >= 0 and train.max_grad_norm > 0")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"train.{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.optimizer, str) or not isinstance(self.optimizer_params, dict):
            raise ValueError("train.optimizer must be a name and train.optimizer_params a mapping")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"train.gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if not isinstance(self.group_by_length, bool):
            raise ValueError(f"train.group_by_length must be true or false, got {self.group_by_length!r}")
        if not (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0):
            raise ValueError(f"train.checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if self.keep_checkpoint not in KEEP_CHECKPOINT:
            raise ValueError(f"train.keep_checkpoint must be one of {KEEP_CHECKPOINT}, got {self.keep_checkpoint!r}")
        if self.selection not in ("best", "last"):
            raise ValueError(f"train.selection must be 'best' or 'last', got {self.selection!r}")

    @classmethod
    def from_dict(cls, d: dict | None, defaults: dict | None = None) -> "TrainConfig":
        """A grid's ``train:`` settings; ``defaults``: a track's own defaults beneath them (the LLM track's
        loader does not group by length: ``{"group_by_length": False}``)."""
        d = {**(defaults or {}), **(d or {})}
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"train: unknown setting(s) {unknown}; valid: {sorted(valid)}")
        if isinstance(d.get("lr"), str):  # YAML 1.1 reads "5e-4" as a string
            try:
                d["lr"] = float(d["lr"])
            except ValueError:
                raise ValueError(f"train.lr must be a number, got {d['lr']!r}") from None
        return cls(**d)

    @classmethod
    def from_record(cls, d: dict | None) -> "TrainConfig":
        """A stored record's ``run_info.train``: a setting it lacks (``SINCE_STORED``) was not there yet when
        it ran, so it ran with that setting's old value, not today's default."""
        return cls.from_dict(d, defaults=SINCE_STORED)

    def to_dict(self) -> dict:
        return asdict(self)

    def semantic(self) -> dict:
        """The settings that decide what a cell computes (everything but ``RUN_CONTROL``), less those of
        ``SINCE_STORED`` at their old value: a cell computed as before the setting existed keeps its hash."""
        return {k: v for k, v in asdict(self).items()
                if k not in RUN_CONTROL and not (k in SINCE_STORED and v == SINCE_STORED[k])}

    # What decides whether two cells are comparable, whatever the method: the data budget and the
    # evaluation protocol. Learning rate, weight decay, warmup and the optimizer are the method's.
    # group_by_length is not here: it changes the order the same examples are seen in (like the shuffling
    # seed or the warmup), not the budget (examples, epochs, batch size, steps) or the evaluation. Two
    # cells that differ in it are two rows (the cell hash and the leaderboard's variant differ), not two
    # protocols; records stored before it existed keep their protocol hash.
    PROTOCOL_KEYS = ("epochs", "batch_size", "grad_accum_steps", "max_length", "max_train_samples",
                     "max_eval_samples", "subset_seed", "selection", "precision")

    def protocol(self) -> dict:
        return {k: getattr(self, k) for k in self.PROTOCOL_KEYS}
