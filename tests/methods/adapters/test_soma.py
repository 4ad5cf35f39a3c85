"""SoMA's mechanism (arXiv:2412.04077): the r smallest singular components train, the principal part is frozen."""

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.lora import LoRALinear


def soma(**params):
    return get_method("soma").build(params)


def one_block(seed=0):
    """A model with one block holding one Linear, named like a ViT's: blocks.0.fc1."""
    torch.manual_seed(seed)
    block = nn.Module()
    block.fc1 = nn.Linear(24, 16)
    model = nn.Module()
    model.blocks = nn.ModuleList([block])
    return model


@pytest.mark.parametrize("r, alpha", [(4, 4.0), (4, 12.0)])
def test_adapter_spans_the_bottom_r_singular_subspace(r, alpha):
    model = one_block()
    W = model.blocks[0].fc1.weight.detach().clone()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    soma(r=r, alpha=alpha).apply(model)
    layer = model.blocks[0].fc1
    A, B, s = layer.lora_A.detach(), layer.lora_B.detach(), alpha / r
    torch.testing.assert_close(layer.base.weight + s * B @ A, W, atol=1e-6, rtol=1e-5)  # residual + adapter == W
    torch.testing.assert_close(s * B @ A, U[:, -r:] @ torch.diag(S[-r:]) @ Vh[-r:], atol=1e-6, rtol=1e-5)
    # column space of B and row space of A are the minor left / right singular subspaces
    P_left, P_right = U[:, -r:] @ U[:, -r:].T, Vh[-r:].T @ Vh[-r:]
    torch.testing.assert_close(P_left @ B, B, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A @ P_right, A, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.linalg.svdvals(B), (S[-r:] / s).sqrt(), atol=1e-5, rtol=1e-5)
    # the frozen part is the principal one: its singular values are the largest ones of W
    torch.testing.assert_close(torch.linalg.svdvals(layer.base.weight)[: len(S) - r], S[:-r], atol=1e-5, rtol=1e-5)


def test_gradients_reach_only_the_intended_parameters(tiny, batch):
    model, _ = tiny(seed=0)
    soma(start_block=1).apply(model)
    model.classifier.requires_grad_(True)  # the trainer does this after apply
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(n.startswith("bert.encoder.layer.1.") for n in wrapped)  # block 0 and pooler frozen
    assert len(wrapped) == 6  # query, key, value, attention.output.dense, intermediate.dense, output.dense
    expected = {f"{n}.{p}" for n in wrapped for p in ("lora_A", "lora_B", "base.bias")}
    assert trainable == expected | {"classifier.weight", "classifier.bias"}
    model(**batch).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable


def test_train_bias_off_leaves_only_the_adapter():
    model = one_block()
    method = soma(r=2, train_bias=False)
    method.apply(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"blocks.0.fc1.lora_A", "blocks.0.fc1.lora_B"}
    assert method.TRAINABLE == ("*.lora_A", "*.lora_B")


def test_merge_gives_identical_outputs_and_restores_w_at_init(tiny, batch):
    model, _ = tiny(seed=0)
    reference, _ = tiny(seed=0)
    method = soma()
    method.apply(model)
    merged = method.merge(model)
    for (n, p), (_, q) in zip(merged.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=n)
    model, _ = tiny(seed=0)
    method.apply(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_A.add_(0.05 * torch.randn_like(m.lora_A))
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = method.merge(model)
        torch.testing.assert_close(merged(**batch).logits, before, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())


def test_bad_hyperparameters_fail_with_the_field_name(tiny):
    with pytest.raises(ValueError, match="soma: r must be a positive integer"):
        soma(r=1.5)
    with pytest.raises(ValueError, match="soma: start_block"):
        soma(start_block=-1)
    with pytest.raises(ValueError, match="soma: no target layer in a block >= start_block = 5"):
        soma(start_block=5).apply(tiny(seed=0)[0])
