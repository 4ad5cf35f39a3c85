"""AdaNPC: Exploring Non-Parametric Classifier for Test-Time Adaptation.

Zhang, Wang, Jin, Yuan, Zhang, Wang, Jin, Tan. ICML 2023. arXiv:2304.12566.
Reference implementation: https://github.com/yfzhang114/AdaNPC@29fe27a (domainbed/knn.py MomentumQueue,
domainbed/adapt_algorithms.py AdaNPC, domainbed/scripts/unsupervised_adaptation.py).

Implements (§3; the paper's equation numbers were not re-checked, the reference code was)
  memory        M = {(z_j / ‖z_j‖, y_j)}: source features with their true labels (prepare_source / prepare_memory)
  kNN vote      s_ij = ⟨z_i/‖z_i‖, m_j⟩;  N_k(i) = top-k of s_i·;  w_ij = softmax_{j∈N_k(i)}(s_ij / τ)
                p_i(c) = min(1, Σ_{j∈N_k(i)} w_ij·[y_j = c] + ε)
  confidence    conf_i = max_c softmax(p_i)_c   (the reference's softmax over the vote scores)
  memory update M ← M ∪ {(z_i/‖z_i‖, argmax_c p_i(c)) : conf_i ≥ β}; no gradient step, the model is frozen.
  The logits returned are log p_i, so softmax(logits) is the normalised vote and argmax is the kNN prediction.

Symbols: k → k, τ → temperature, β → beta, ε → vote_floor, M → memory_z / memory_y.

Runner hook: ``prepare_source(model, source_batches)`` (or ``prepare_memory(features, labels)``) before
``attach(model)`` with labelled source batches, each ``(inputs, labels)`` or a dict with a ``labels`` key;
``reset()`` returns to that source memory.

Deviations
  - Without a source memory (prepare_source never called) the method predicts with the model's own classifier and
    appends nothing: AdaNPC degenerates to the frozen source model (last_stats["fallback"] = 1).
  - The reference memory starts with one random vector labelled 0 before the source features; we omit it.
  - k is capped at the memory size; the ε-ball variant (eps_ball ≤ 1) and AdaNPC-BN are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaptbench.protocol import TTAMethod
from adaptbench.registry import Paper, register


@dataclass(frozen=True)
class AdaNPCConfig:
    k: int = 100  # unsupervised_adaptation.py adapt_hparams; sweep {1, 5, 10, 25, 50, 75, 100, 150, 200}
    temperature: float = 0.1  # τ, idem; sweep {0.01, 0.1, 0.25, 0.5}
    beta: float = 0.1  # β confidence threshold, idem; sweep {0.0, 0.25, 0.75, 1.1} (1.1 = never append)
    vote_floor: float = 1e-5  # ε, knn.py: (pred_scores + 1e-5).clamp(max=1.0)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"adanpc: k must be >= 1, got {self.k!r}")
        if not self.temperature > 0:
            raise ValueError(f"adanpc: temperature must be > 0, got {self.temperature!r}")
        if self.beta < 0:
            raise ValueError(f"adanpc: beta must be >= 0 (values > 1 disable appending), got {self.beta!r}")
        if not self.vote_floor > 0:
            raise ValueError(f"adanpc: vote_floor must be > 0 (it keeps log-votes finite), got {self.vote_floor!r}")


def cosine_similarity(z: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """s_ij = ⟨z_i/‖z_i‖, m_j⟩ with the memory already normalised; (B, D), (M, D) -> (B, M)."""
    return F.normalize(z, dim=1) @ memory.T


def knn_votes(sim: torch.Tensor, memory_y: torch.Tensor, num_classes: int, k: int, temperature: float,
              vote_floor: float) -> torch.Tensor:
    """kNN vote: p_i(c) = min(1, Σ_{j∈N_k(i)} softmax(s_ij/τ)·[y_j = c] + ε); (B, M) -> (B, C)."""
    top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)  # (B, k)
    weights = (top_sim / temperature).softmax(dim=1)  # (B, k)
    votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=sim.dtype)
    votes.scatter_add_(1, memory_y[top_idx], weights)
    return (votes + vote_floor).clamp(max=1.0)


def vote_confidence(votes: torch.Tensor) -> torch.Tensor:
    """conf_i = max_c softmax(p_i)_c, the reference's confidence (a softmax over the vote scores); -> (B,)."""
    return votes.softmax(dim=1).max(dim=1).values


def split_batch(batch):
    """A labelled source batch: ``(inputs, labels)`` or a dict of model inputs holding ``labels``."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch["labels"]
    inputs, labels = batch
    return inputs, labels


@register(
    family="tta",
    paper=Paper(
        title="AdaNPC: Exploring Non-Parametric Classifier for Test-Time Adaptation",
        arxiv="2304.12566",
        year=2023,
        venue="ICML",
        authors="Zhang, Wang, Jin, Yuan, Zhang, Wang, Jin, Tan",
        code="https://github.com/yfzhang114/AdaNPC@29fe27a",
    ),
    config=AdaNPCConfig,
)
class AdaNPC(TTAMethod):
    """kNN vote over a memory of source features that grows with confidently predicted test features."""

    def __init__(self, cfg: AdaNPCConfig):
        super().__init__(cfg)
        self._source_z, self._source_y = torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        self.memory_z, self.memory_y = self._source_z, self._source_y

    def prepare_memory(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The source memory: features (N, D) of labelled source samples and their labels (N,)."""
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(f"adanpc: prepare_memory needs features (N, D) and labels (N,), "
                             f"got {tuple(features.shape)} and {tuple(labels.shape)}")
        self._source_z = F.normalize(features.detach(), dim=1)
        self._source_y = labels.detach().long()
        self.reset_state()

    @torch.no_grad()
    def prepare_source(self, model: nn.Module, source_batches) -> None:
        """Source memory from labelled source batches, with the features the frozen model computes at test time."""
        model.eval()
        pairs = [split_batch(b) for b in source_batches]
        if not pairs:
            raise ValueError("adanpc: prepare_source got no batches; pass labelled source batches (inputs, labels)")
        self.prepare_memory(torch.cat([model.features(x) for x, _ in pairs]), torch.cat([y for _, y in pairs]))

    def reset_state(self) -> None:
        self.memory_z, self.memory_y = self._source_z.clone(), self._source_y.clone()

    def configure_model(self, model: nn.Module) -> nn.Module:
        model.eval()
        return model.requires_grad_(False)

    def params_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        return []  # no backprop

    @torch.no_grad()
    def forward_and_adapt(self, inputs) -> torch.Tensor:
        z = self.model.features(inputs)  # (B, D)
        if self.memory_z.shape[0] == 0:
            self.last_stats = {"fallback": 1.0, "memory_size": 0.0, "appended": 0.0}
            return self.model.classifier(z)
        cfg = self.cfg
        num_classes = self.model.classifier(z[:1]).shape[1]
        self.memory_z, self.memory_y = self.memory_z.to(z.device, z.dtype), self.memory_y.to(z.device)
        votes = knn_votes(cosine_similarity(z, self.memory_z), self.memory_y, num_classes, cfg.k,
                          cfg.temperature, cfg.vote_floor)
        confidence = vote_confidence(votes)
        keep = confidence >= cfg.beta
        self.memory_z = torch.cat([self.memory_z, F.normalize(z[keep], dim=1)])
        self.memory_y = torch.cat([self.memory_y, votes[keep].argmax(dim=1)])
        self.last_stats = {"fallback": 0.0, "memory_size": float(self.memory_z.shape[0]),
                           "appended": float(keep.sum()), "confidence": float(confidence.mean())}
        return votes.log()
