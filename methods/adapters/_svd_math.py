"""SVD helpers shared by the adapters that initialise a LowRankLinear from singular triplets: PiSSA (the r largest),
SoMA (the r smallest) and CorDA (the context-oriented SVD's chosen components). No paper of its own.

The factorisation is PiSSA's (Meng, Wang, Zhang; arXiv:2404.02948, §3), written for nn.Linear's layout
(weight = out × in, y = x weightᵀ): for weight = U diag(S) Vh and r chosen triplets (U_r, S_r, Vh_r),

    lora_A = (S_r/s)^{1/2} Vh_r  (r × in),   lora_B = U_r (S_r/s)^{1/2}  (out × r),   s·lora_B lora_A = U_r diag(S_r) Vh_r,

with s = α/r (LoRA's scaling; PEFT divides S_r by it the same way), and the frozen weight becomes the residual
W − s·lora_B lora_A, so the adapted layer starts equal to W.
"""

from __future__ import annotations

import torch

from methods.adapters._layers import LowRankLinear


def svd(weight: torch.Tensor, q: int, niter: int | None = None):
    """PiSSA §3: weight = U diag(S) Vh in float32, singular values in descending order.

    niter=None: exact thin SVD, all min(out, in) triplets. niter=k: randomized SVD (PiSSA's fast-SVD section)
    with k subspace iterations, the top q triplets only. Shapes: U (out, ·), S (·,), Vh (·, in)."""
    w = weight.detach().to(torch.float32)
    if niter is None:
        return torch.linalg.svd(w, full_matrices=False)
    U, S, V = torch.svd_lowrank(w, q=q, niter=niter)
    return U, S, V.T


def factors(U_r: torch.Tensor, S_r: torch.Tensor, Vh_r: torch.Tensor, scaling: float):
    """PiSSA §3 (and CorDA Eq. (4)–(5)): lora_A = (S_r/s)^{1/2} Vh_r (r, in);  lora_B = U_r (S_r/s)^{1/2} (out, r);
    s = α/r, so that s·lora_B lora_A = U_r diag(S_r) Vh_r."""
    root = (S_r / scaling).sqrt()
    return root[:, None] * Vh_r, U_r * root[None, :]


@torch.no_grad()
def init_from_svd_(layer: LowRankLinear, U_r: torch.Tensor, S_r: torch.Tensor, Vh_r: torch.Tensor) -> None:
    """PiSSA §3: put the r chosen singular triplets into (lora_A, lora_B) and W^res = W − s·B A into base.weight."""
    weight = layer.base.weight
    lora_A, lora_B = factors(U_r, S_r, Vh_r, layer.scaling)
    residual = weight.to(torch.float32) - layer.scaling * (lora_B @ lora_A)
    layer.lora_A.copy_(lora_A.to(weight.dtype))
    layer.lora_B.copy_(lora_B.to(weight.dtype))
    weight.copy_(residual.to(weight.dtype))
