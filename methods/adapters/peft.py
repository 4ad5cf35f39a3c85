"""PEFT: any Hugging Face PEFT tuner as a method, so the library's own row stands beside our reimplementations.

Mangrulkar, Gugger, Debut, Belkada, Paul, Bossan (and the PEFT contributors). "PEFT: State-of-the-art
Parameter-Efficient Fine-Tuning methods". Hugging Face, 2022. https://github.com/huggingface/peft, the version
installed (``PEFT_VERSION``; every record lists it under ``run_info.packages.peft``). Each tuner's own paper is
cited in PEFT's documentation of its config class (LoraConfig → LoRA arXiv:2106.09685, ``use_dora`` → DoRA
arXiv:2402.09353, VeraConfig → arXiv:2310.11454, IA3Config → arXiv:2205.05638, OFTConfig → arXiv:2306.07280,
BOFTConfig → arXiv:2311.06243, HRAConfig → arXiv:2405.17484, PromptTuningConfig → arXiv:2104.08691,
PromptEncoderConfig (P-tuning) → arXiv:2103.10385, PrefixTuningConfig → arXiv:2101.00190).

Implements no equation of its own: ``config`` names a PEFT config class, ``args`` are its keyword arguments,
and ``peft.get_peft_model`` wraps the model exactly as a PEFT user's script would.
  apply   PEFT freezes the base model and injects its layers (LoRA, DoRA, VeRA, IA³, OFT, BOFT, HRA ...), or adds
          a prompt encoder whose virtual tokens precede the input (prompt tuning, P-tuning, prefix tuning);
  merge   ``merge_and_unload()`` folds the update into plain nn.Linear weights; prompt tuners have nothing to fold.
  extra_loss  KaSA's β·L2 + γ·L3 (``LoraConfig(kasa_config=...)``): PEFT leaves adding it to the user
          (``LoraModel._get_kasa_loss``), so we add it as its docstring says.
  init    the data-driven LoRA inits PEFT computes outside ``get_peft_model``, by PEFT's documented flows
          (``init_state`` computes, ``load_init_state`` installs, so the workflow can cache the state):
          ``init_lora_weights="eva"`` (EVA, arXiv:2410.07170): ``get_eva_state_dict`` on the PEFT model over the
          init batches, then ``initialize_lora_eva_weights(eva_state_dict=...)``;
          ``init_lora_weights="corda"`` (CorDA, arXiv:2406.05223): ``preprocess_corda`` on the plain model (its
          hook reads one sequence per forward), then ``get_peft_model``, which builds W', A, B from the eigens.

Symbols: config → the PEFT class name (``LoraConfig``), args → its fields (``r``, ``lora_alpha``, ``use_dora``,
``target_modules`` ...). Defaults: ``LoraConfig()`` with PEFT's defaults (r = 8, α = 8, dropout 0, W_q and W_v for
BERT/RoBERTa), i.e. our ``lora`` row's settings.

Deviations
  - The task head is trained by adaptbench's trainer, as for every method, not by PEFT's ``modules_to_save``:
    layer tuners get no ``task_type``; prompt tuners need ``task_type="SEQ_CLS"`` for PEFT's forward, and the
    classifier copy it adds is put back as the plain head. The trainable-parameter column ("#params", head
    excluded) is then PEFT's ``get_nb_trainable_parameters()`` minus the head, as for our methods.
  - The model handed to the trainer keeps the base model's parameter names: a layer tuner's model is PEFT's
    ``base_model.model`` (PeftModel.forward only adds hooks for special arguments such as ``adapter_names``);
    a prompt tuner's model is ``PromptLearningModel``, whose forward is PEFT's.
  - Prompt tuners are evaluated unmerged (``merge`` returns the model as trained); the record's
    ``eval_info.merged`` still reads the registry's flag (true).
  - EVA: sequence-classification labels (one per sequence) are not passed to PEFT's forward during the init, so
    its token label mask (``EvaConfig.use_label_mask``) has nothing to read and the attention mask alone drops
    padding, as in our ``eva`` and the authors' GLUE runs; token labels (the LLM track's) are passed as PEFT
    expects. EVA's convergence loop runs as long as PEFT needs (``cycle`` over the batches).
  - CorDA: the calibration set is the first ``CORDA_SAMPLES`` = 256 training sequences the init batches yield
    (App. A.2; our ``corda``'s ``num_samples`` default), each run alone without its padding, since PEFT's
    covariance hook takes one unpadded sequence per forward. Not a grid setting: ``args`` holds PEFT's fields only.
  - The grid schedules no separate init step for these rows (the method's registry flag is per class, and only
    these ``args`` make the PEFT row data-driven): the training job computes the init in process on the same
    batches an init step would see (``init_loader``), so the numbers are the same either way.
  - AdaLoRA is refused: its rank budget needs ``update_and_allocate`` at every step and its orthogonal
    regulariser is added to ``outputs.loss`` inside AdaLoraModel.forward, which adaptbench's task loss does not read.
  - ``peft_version`` is empty by default; a grid that sets it runs only under that PEFT version and the version
    enters the cell's configuration hash, so stored cells of two PEFT versions are never mixed in one table.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata

import torch
from torch import nn

import peft
from adaptbench.protocol import Adapter, freeze_all
from adaptbench.registry import Paper, register

PEFT_VERSION = metadata.version("peft")
SET_HERE = ("task_type", "peft_type", "inference_mode", "peft_version")  # adaptbench decides these (see Deviations)
REFUSED = {"AdaLoraConfig": "its budget needs update_and_allocate every step and its orthogonal regulariser lives "
                            "in AdaLoraModel.forward's loss (see the Deviations of methods/adapters/peft.py)"}
HEAD_NAMES = ("classifier", "score")  # adaptbench.models.HEAD_PREFIXES: the head the trainer always trains
DATA_INITS = ("eva", "corda")  # LoraConfig(init_lora_weights=...) values PEFT computes from data (see ``init``)
CORDA_SAMPLES = 256  # CorDA App. A.2: 256 calibration sequences (our corda's num_samples default)
EIGENS = ("S_WC", "U_WC", "V_WC")  # PEFT's CordaEigens fields: Σ, U and (V̂ᵀ C⁻¹)ᵀ of Eq. (2)–(3)


def inputs_for_eva(batches):
    """The init batches as PEFT's EVA forward sees them: one label per sequence is not a token label mask, so
    those labels stay out (the attention mask drops padding); token labels (same shape as input_ids) stay in."""
    for batch in batches:
        labels = batch.get("labels")
        if labels is not None and labels.shape != batch["input_ids"].shape:
            batch = {k: v for k, v in batch.items() if k != "labels"}
        yield batch


def sequences(batches, n: int):
    """The first ``n`` sequences of the batches, one at a time and without their padding (CorDA's hook reads
    one sequence per forward, every token of it)."""
    seen = 0
    for batch in batches:
        keep = batch["attention_mask"].bool()
        for i in range(batch["input_ids"].shape[0]):
            if seen == n:
                return
            yield {k: v[i][keep[i]].unsqueeze(0) for k, v in batch.items()
                   if k != "labels" and v.shape == batch["input_ids"].shape}
            seen += 1


def tuner_configs() -> dict[str, type]:
    """Every PEFT tuner config class of the installed version, by name (LoraConfig, VeraConfig ...)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {cls.__name__: cls for cls in PEFT_TYPE_TO_CONFIG_MAPPING.values()}


def _type_ok(value, hint) -> bool:
    """``value`` fits the field annotation ``hint``; what cannot be checked from the annotation is left to PEFT."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in params)
    if origin is typing.Literal:  # PEFT's own check decides the value ("pissa_niter_4" is not spelled out)
        return any(isinstance(value, type(p)) for p in params)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, set):
        return isinstance(value, (list, tuple)) and (not params or all(_type_ok(v, params[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint} | {m.name for m in hint} or isinstance(value, hint)
    if dataclasses.is_dataclass(hint):  # a nested config (KasaConfig, EvaConfig ...) given as a mapping
        return isinstance(value, (dict, hint))
    return not isinstance(hint, type) or isinstance(value, hint)


def _hint_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


@dataclass(frozen=True)
class PEFTConfig:
    config: str = "LoraConfig"  # a PEFT tuner config class by name (an unknown name lists the installed ones)
    args: dict = field(default_factory=dict)  # its keyword arguments; PEFT's defaults for the rest
    peft_version: str | None = None  # set: run only under this PEFT version (it then names the cell); None: any

    def __post_init__(self):
        classes = tuner_configs()
        if self.config not in classes:
            close = ([c for c in classes if c.lower() == self.config.lower()]
                     or difflib.get_close_matches(self.config, classes, n=3))
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"peft: unknown PEFT config class '{self.config}'.{hint} "
                             f"Available in PEFT {PEFT_VERSION}: {', '.join(sorted(classes))}")
        if self.config in REFUSED:
            raise ValueError(f"peft: {self.config} is not supported yet: {REFUSED[self.config]}")
        if not isinstance(self.args, dict):
            raise ValueError(f"peft: args must be a mapping of {self.config}'s arguments, got {self.args!r}")
        cls = classes[self.config]
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in SET_HERE}
        hints = typing.get_type_hints(cls)
        for key, value in self.args.items():
            if key in SET_HERE:
                raise ValueError(f"peft: args.{key} is set by adaptbench (task_type: the trainer trains the head; "
                                 f"peft_version: the method's own field); remove it from args")
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"peft: {self.config} (PEFT {PEFT_VERSION}) has no argument '{key}'.{hint} "
                                 f"Valid: {', '.join(sorted(fields))}")
            if not _type_ok(value, hints.get(key, typing.Any)):
                raise ValueError(f"peft: {self.config} argument '{key}' must be {_hint_name(hints[key])}, "
                                 f"got {value!r} ({type(value).__name__})")
        head = [m for m in self.args.get("modules_to_save") or () if m in HEAD_NAMES]
        if head:
            raise ValueError(f"peft: args.modules_to_save names the task head {head}, which the trainer always "
                             "trains; remove it")
        if self.peft_version is not None and self.peft_version != PEFT_VERSION:
            raise ValueError(f"peft: the grid pins PEFT {self.peft_version} but {PEFT_VERSION} is installed; "
                             f"install peft=={self.peft_version} or change peft_version (a new version is a new cell)")
        try:  # PEFT's own checks (ranges, incompatible options), as one line
            self.peft_config()
        except (TypeError, ValueError) as e:
            raise ValueError(f"peft: {self.config}(**args) rejected by PEFT {PEFT_VERSION}: "
                             f"{' '.join(str(e).split())}") from None

    def peft_config(self) -> peft.PeftConfig:
        """A fresh PEFT config object; prompt tuners get task_type SEQ_CLS (their forward is the task model's)."""
        cls = tuner_configs()[self.config]
        task_type = "SEQ_CLS" if issubclass(cls, peft.PromptLearningConfig) else None
        return cls(**self.args, task_type=task_type)


class PromptLearningModel(nn.Module):
    """A prompt tuner's model under the base model's parameter names: the base model's children (``bert``,
    ``classifier`` ...) and PEFT's ``prompt_encoder``; the forward pass is PEFT's, which puts the virtual tokens
    (or the prefix keys and values) before the input."""

    def __init__(self, peft_model: peft.PeftModel):
        super().__init__()
        base = peft_model.base_model
        if list(base.named_parameters(recurse=False)):
            raise ValueError(f"peft: {type(base).__name__} holds parameters outside its submodules; "
                             "prompt tuners need them inside")
        for name, child in base.named_children():
            self.add_module(name, child)
        self.prompt_encoder = peft_model.prompt_encoder
        self.__dict__["peft_model"] = peft_model  # not a submodule: its tensors are registered above
        self.config = base.config

    def forward(self, **inputs):
        return self.peft_model(**inputs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.peft_model.train(mode)  # PEFT's wrapper and the base model's own flags too
        return self

    def gradient_checkpointing_enable(self, **kwargs):
        self.peft_model.base_model.gradient_checkpointing_enable(**kwargs)


@register(
    family="adapter",
    paper=Paper(
        title="PEFT: State-of-the-art Parameter-Efficient Fine-Tuning methods",
        arxiv=None,
        year=2022,
        venue="Hugging Face library",
        authors="Mangrulkar, Gugger, Debut, Belkada, Paul, Bossan",
        code=f"https://github.com/huggingface/peft@v{PEFT_VERSION}",
    ),
    config=PEFTConfig,
    mergeable=True,
)
class PEFT(Adapter):
    TRAINABLE = ("*.lora_*",)  # the default LoraConfig; an instance derives its own from the tuner (__init__)
    LIBRARY_LAYERS = True  # its layers are PEFT's BaseTunerLayer, not methods/adapters/_layers.AdaptedLinear

    def __init__(self, cfg: PEFTConfig):
        super().__init__(cfg)
        from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

        self.peft_cfg = cfg.peft_config()
        self.prompt = self.peft_cfg.is_prompt_learning
        prefix = PEFT_TYPE_TO_PREFIX_MAPPING[self.peft_cfg.peft_type]
        patterns = ["prompt_encoder.*"] if self.prompt else [f"*.{prefix}*"]
        if getattr(self.peft_cfg, "modules_to_save", None):
            patterns.append("*.modules_to_save.*")
        if getattr(self.peft_cfg, "bias", "none") != "none":
            patterns.append("*.bias")
        self.TRAINABLE = tuple(patterns)
        self.IDENTITY_AT_INIT = not self.prompt  # virtual tokens change the output from the start
        init = getattr(self.peft_cfg, "init_lora_weights", None)
        self.data_init = init if isinstance(init, str) and init in DATA_INITS else None
        self.DATA_DRIVEN = self.data_init is not None  # EVA / CorDA: init_state from training batches
        self.peft_model = None  # PEFT's PeftModel (EVA's init reads its config and adapter switch)
        self.tuner = None  # PEFT's LoraModel / VeraModel ...: owns merge_and_unload and KaSA's loss

    def apply(self, model: nn.Module) -> nn.Module:
        if self.data_init == "corda":  # preprocess_corda reads the plain nn.Linear targets: wrapped at load
            freeze_all(model)
            return model
        peft_model = self.peft_model = peft.get_peft_model(model, self.peft_cfg)
        if self.prompt:
            base = peft_model.base_model
            for name in HEAD_NAMES:  # SEQ_CLS wrapped the head in a ModulesToSaveWrapper: the trainer trains it
                wrapped = getattr(base, name, None)
                if wrapped is not None and hasattr(wrapped, "original_module"):
                    setattr(base, name, wrapped.original_module)
            return PromptLearningModel(peft_model)
        self.tuner = peft_model.base_model
        return self.tuner.model

    def init_state(self, model: nn.Module, batches) -> dict[str, torch.Tensor]:
        """EVA: each target's top right-singular vectors at its allotted rank (PEFT's eva_state_dict, keyed by
        the PEFT model's module names). CorDA: each target's context-oriented SVD (Σ, U, V̂) from the first
        CORDA_SAMPLES sequences."""
        if self.data_init == "eva":
            from peft.tuners.lora.eva import get_eva_state_dict

            # a list: PEFT takes len(), one batch, then cycles (the init step's few batches)
            state = get_eva_state_dict(self.peft_model, list(inputs_for_eva(batches)), show_progress_bar=False)
            return {name: t.detach().cpu().contiguous() for name, t in state.items()}
        if self.data_init == "corda":
            from peft.tuners.lora.corda import preprocess_corda, target_modules

            training = model.training

            def run_model():
                for seq in sequences(batches, CORDA_SAMPLES):
                    model(**seq)

            preprocess_corda(model, self.peft_cfg, run_model=run_model)
            model.train(training)
            state = {}
            for name, module in target_modules(model, self.peft_cfg):
                state.update({f"{name}.{k}": getattr(module.eigens, k).detach().cpu().contiguous() for k in EIGENS})
                del module.eigens  # load_init_state installs them, whether computed here or read from the cache
            return state
        raise ValueError(f"peft: {self.config_name()} has no data-driven initialisation")

    def load_init_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if self.data_init == "eva":
            from peft.tuners.lora.eva import initialize_lora_eva_weights

            initialize_lora_eva_weights(self.peft_model, eva_state_dict=dict(state), show_progress_bar=False)
            return
        if self.data_init != "corda":
            raise ValueError(f"peft: {self.config_name()} has no data-driven initialisation")
        from peft.tuners.lora.corda import CordaEigens, target_modules

        trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # the task head (build_model)
        for name, module in target_modules(model, self.peft_cfg):
            missing = [k for k in EIGENS if f"{name}.{k}" not in state]
            if missing:
                raise ValueError(f"peft: CorDA init state has no '{name}.{missing[0]}'; recompute it for this "
                                 "model and config")
            device = module.weight.device
            module.eigens = CordaEigens(**{k: state[f"{name}.{k}"].to(device) for k in EIGENS})
        self.peft_model = peft.get_peft_model(model, self.peft_cfg)  # corda_init: W' = W − B A, A and B from Σ, U, V̂
        self.tuner = self.peft_model.base_model
        for n, p in model.named_parameters():  # get_peft_model froze all but the adapters; the head trains
            if n in trainable:
                p.requires_grad_(True)

    def config_name(self) -> str:
        return type(self.peft_cfg).__name__

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if self.tuner is not None and getattr(self.peft_cfg, "kasa_config", None) is not None:
            return self.tuner._get_kasa_loss()  # β·L2 + γ·L3 summed over layers, as PEFT documents its use
        return None

    def merge(self, model: nn.Module) -> nn.Module:
        """``merge_and_unload()``: the update folded into plain weights. Prompt tuners: the model unchanged."""
        if self.prompt:
            return model
        if self.tuner is None or self.tuner.model is not model:
            raise ValueError("peft: merge() takes the model that this method's apply() returned")
        return self.tuner.merge_and_unload()
