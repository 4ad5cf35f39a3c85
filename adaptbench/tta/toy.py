"""The tiny model and stream every TTA method's contract runs on (tests/methods/tta/test_tta_contract.py and
``adaptbench check-method``): BatchNorm and LayerNorm layers, so normalisation-based methods have something to
adapt, and inputs shifted from the source batches."""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 3


class ToyNet(nn.Module):
    """Linear → BatchNorm1d → ReLU → Linear → LayerNorm → ReLU, then a linear classifier."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                  nn.Linear(8, 8), nn.LayerNorm(8), nn.ReLU())
        self.classifier = nn.Linear(8, CLASSES)
        with torch.no_grad():
            self.body[1].running_mean.uniform_(-1, 1)
            self.classifier.weight.mul_(4.0)  # confident enough for the entropy filters to keep samples

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def stream(seed: int, batches: int = 3, size: int = 16) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 6, generator=gen) + 0.5 for _ in range(batches)]  # shifted inputs


def source_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Clean labelled source batches, as the stream runner hands them to prepare_source / prepare_fisher."""
    return [(x, torch.arange(len(x)) % CLASSES) for x in stream(7, batches=2)]


def run(method, xs):
    """The method's outputs on ``xs`` and its model's state after them; sampling methods replay the same draws."""
    torch.manual_seed(1)
    outputs = [method.forward_and_adapt(x) for x in xs]
    return outputs, {k: v.detach().clone() for k, v in method.model.state_dict().items()}
