"""Source models for the TTA track, each satisfying the TTA model interface of ``adaptbench.protocol``:
``model(x) == model.classifier(model.features(x))`` with ``features(x) -> (B, D)``.

Image sources (``ARCHS``), trained here on clean source-train data by ``train_source``:
  cnn_bn  DigitCNN(norm="bn"): four 3×3 conv layers with BatchNorm (the BN-statistics methods:
          Tent-BN, test-time normalisation, AdaB2N, SAR/EATA on a BN net);
  cnn_gn  the same network with GroupNorm (SAR's observation that GN/LN nets adapt more stably);
  mlp_ln  DigitMLP: a two-layer LayerNorm MLP (the LN setting of the transformer papers, in small).
Text source: ``TextClassifier`` wraps a fine-tuned Hugging Face sequence classifier (the fine-tuning
job of the adapter track trains it); ``load_text_source`` rebuilds it from that job's folder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaptbench.results import atomic_torch_save, atomic_write_json, package_versions, read_json
from adaptbench.tta.data import load_images

TRAIN_DEFAULTS = {"batch_size": 64, "lr": 1e-3}  # Adam, constant rate (our choice: converges in seconds)
DEFAULT_EPOCHS = {"digits": 20, "mnist": 20, "cifar10c": 30}  # 17 and 79 steps per epoch


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """Images arrive as (B, H, W) or (B, 1, H, W)."""
    return x.unsqueeze(1) if x.dim() == 3 else x


class DigitCNN(nn.Module):
    """conv(1→w) → conv(w→2w, stride 2) → conv(2w→2w) → conv(2w→4w, stride 2), each followed by the
    norm and ReLU; global average pooling gives the (B, 4w) features, so any image size works."""

    def __init__(self, num_classes: int = 10, norm: str = "bn", width: int = 16, groups: int = 8,
                 in_channels: int = 1):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"DigitCNN: norm must be 'bn' or 'gn', got {norm!r}")
        chans = [(in_channels, width, 1), (width, 2 * width, 2), (2 * width, 2 * width, 1), (2 * width, 4 * width, 2)]
        layers = []
        for cin, cout, stride in chans:
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cout) if norm == "bn" else nn.GroupNorm(groups, cout), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(_nchw(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitMLP(nn.Module):
    """Flattened pixels → Linear → LayerNorm → GELU, twice; features (B, hidden)."""

    def __init__(self, image_size: int = 8, num_classes: int = 10, hidden: int = 128):
        super().__init__()
        self.image_size = image_size
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(image_size * image_size, 2 * hidden),
                                  nn.LayerNorm(2 * hidden), nn.GELU(),
                                  nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.GELU())
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = _nchw(x)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"DigitMLP was built for {self.image_size}x{self.image_size} images, "
                             f"got {tuple(x.shape[-2:])}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class WideBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis 2016); attribute names follow
    RobustBench's WideResNet so its checkpoints load as they are."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        return y + (x if self.equal else self.convShortcut(o))


class WideGroup(nn.Module):
    """n wide blocks, the first changing width and stride (RobustBench's NetworkBlock)."""

    def __init__(self, cin: int, cout: int, stride: int, n: int):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k (28-10 is the CIFAR-10-C source of Tent, EATA, CoTTA: RobustBench 'Standard')."""

    def __init__(self, num_classes: int = 10, depth: int = 28, widen: int = 10, in_channels: int = 3):
        super().__init__()
        n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, stride=1, padding=1, bias=False)

        self.block1, self.block2, self.block3 = (WideGroup(w[0], w[1], 1, n), WideGroup(w[1], w[2], 2, n),
                                                 WideGroup(w[2], w[3], 2, n))
        self.bn1, self.relu = nn.BatchNorm2d(w[3]), nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        self.classifier = self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.relu(self.bn1(h)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


ARCHS = {"cnn_bn": (DigitCNN, {"norm": "bn"}), "cnn_gn": (DigitCNN, {"norm": "gn"}), "mlp_ln": (DigitMLP, {}),
         "wrn28_10": (WideResNet, {"depth": 28, "widen": 10})}


def build_arch(arch: str, num_classes: int, image_size: int, channels: int = 1) -> nn.Module:
    if arch not in ARCHS:
        raise KeyError(f"Unknown source arch '{arch}'. Available: {', '.join(ARCHS)}")
    cls, kwargs = ARCHS[arch]
    if cls is DigitMLP:
        if channels != 1:
            raise ValueError("mlp_ln is built for single-channel images")
        kwargs = {**kwargs, "image_size": image_size}
    else:
        kwargs = {**kwargs, "in_channels": channels}
    return cls(num_classes=num_classes, **kwargs)


def load_checkpoint_into(model: nn.Module, path: str | Path) -> None:
    """A published source model's state dict (e.g. RobustBench's CIFAR-10 'Standard' WRN-28-10),
    optionally nested under 'state_dict' / 'model' and prefixed 'module.'; keys must match exactly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    problems = model.load_state_dict(state, strict=False)
    if problems.missing_keys or problems.unexpected_keys:
        raise ValueError(f"{path}: does not fit the architecture (missing {problems.missing_keys[:3]}, "
                         f"unexpected {problems.unexpected_keys[:3]})")


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    model.eval()
    preds = [model(torch.from_numpy(x[i:i + batch_size])).argmax(-1).numpy() for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(preds) == y))


def train_source(arch: str, dataset: str, seed: int, out_dir: str | Path, data_dir: str | Path | None = None,
                 epochs: int | None = None, batch_size: int = TRAIN_DEFAULTS["batch_size"],
                 lr: float = TRAIN_DEFAULTS["lr"], threads: int | None = None,
                 checkpoint: str | Path | None = None) -> dict:
    """Train an image source on clean source-train data (Adam, cross-entropy); write
    ``out_dir/source.pt`` (state dict, arch, num_classes, image size) and ``out_dir/source.json``
    (clean accuracy on the clean test stream, train time, parameters). Returns the json record."""
    if arch not in ARCHS:
        raise KeyError(f"Unknown source arch '{arch}'. Available: {', '.join(ARCHS)}")
    epochs = DEFAULT_EPOCHS.get(dataset, 10) if epochs is None else epochs
    if not (isinstance(epochs, int) and epochs >= 1 and batch_size >= 1 and lr > 0):
        raise ValueError(f"train_source: epochs and batch_size must be >= 1 and lr > 0, "
                         f"got {epochs}, {batch_size}, {lr}")
    if threads:
        torch.set_num_threads(threads)
    data = load_images(dataset, data_dir)
    torch.manual_seed(seed)
    model = build_arch(arch, data.num_classes, data.image_size, data.channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    order = torch.Generator().manual_seed(seed)
    t0, cpu0, losses = time.time(), time.process_time(), []
    if checkpoint is not None:  # the papers' published source model instead of training one
        load_checkpoint_into(model, checkpoint)
        epochs, losses = 0, [float("nan")]
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=order).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    model.eval()
    out_dir = Path(out_dir)
    atomic_torch_save({"state_dict": model.state_dict(), "arch": arch, "num_classes": data.num_classes,
                       "image_size": data.image_size, "channels": data.channels, "dataset": dataset,
                       "checkpoint": None if checkpoint is None else str(checkpoint)}, out_dir / "source.pt")
    record = {"arch": arch, "dataset": dataset, "seed": seed, "data_source": data.source,
              "image_size": data.image_size, "num_classes": data.num_classes,
              "rows": {"train": len(data.train_y), "test": len(data.test_y)},
              "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "adam",
                        "steps": len(losses), "loss_last": losses[-1]},
              "clean_acc": accuracy(model, data.test_x, data.test_y),
              "train_acc": accuracy(model, data.train_x, data.train_y),
              "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
              "params": sum(p.numel() for p in model.parameters()),
              "threads": torch.get_num_threads(), "packages": package_versions()}
    atomic_write_json(out_dir / "source.json", record)
    return record


def load_source(path: str | Path) -> nn.Module:
    """The image source saved by ``train_source`` (``source.pt`` or its folder), in eval mode."""
    path = Path(path)
    path = path / "source.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"source model {path} not found; run train_source first")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_arch(saved["arch"], saved["num_classes"], saved["image_size"], saved.get("channels", 1))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier split into ``features`` and a linear ``classifier``.

    BERT family (BERT, MiniLM): features = dropout(pooler output), classifier = the HF ``classifier``.
    RoBERTa: features = dropout(tanh(dense(dropout(h_CLS)))), classifier = the head's ``out_proj``.
    Either way ``model(inputs)`` equals the HF model's logits; dropout is the identity in eval mode.
    ``inputs`` is the tokenizer's dict (input_ids, attention_mask, token_type_ids; other keys ignored)."""

    ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        base = getattr(hf_model, getattr(hf_model, "base_model_prefix", ""), None)
        head = getattr(hf_model, "classifier", None)
        if isinstance(head, nn.Linear) and getattr(base, "pooler", None) is not None:
            self.style, self.head_dropout, self.classifier = "pooled", hf_model.dropout, head
        elif head is not None and isinstance(getattr(head, "out_proj", None), nn.Linear):
            self.style, self.head_dropout, self.head_dense = "cls", head.dropout, head.dense
            self.classifier = head.out_proj
        else:
            raise TypeError(f"TextClassifier supports BERT-family (pooler + linear classifier) and RoBERTa "
                            f"sequence classifiers, got {type(hf_model).__name__}")
        self.encoder = base
        self.config = hf_model.config

    def features(self, inputs: Mapping) -> torch.Tensor:
        out = self.encoder(**{k: v for k, v in inputs.items() if k in self.ENCODER_KEYS})
        if self.style == "pooled":
            return self.head_dropout(out.pooler_output)
        h = self.head_dropout(out.last_hidden_state[:, 0, :])
        return self.head_dropout(torch.tanh(self.head_dense(h)))

    def forward(self, inputs: Mapping) -> torch.Tensor:
        return self.classifier(self.features(inputs))


def load_text_source(train_dir: str | Path):
    """(TextClassifier in eval mode, tokenizer) from a fine-tuning job's folder, rebuilt exactly as the
    evaluate job rebuilds it (``adaptbench.evaluate.rebuild_trained``)."""
    from adaptbench import tasks
    from adaptbench.tracks.finetune.job import rebuild_trained

    train_dir = Path(train_dir)
    task = read_json(train_dir / "train.json")["run_info"]["task"]
    if tasks.get_task(task).kind != "classification":
        raise ValueError(f"{train_dir}: task '{task}' is {tasks.get_task(task).kind}; a TTA source must be a classifier")
    _, model, tokenizer, _ = rebuild_trained(train_dir)
    return TextClassifier(model).eval(), tokenizer
