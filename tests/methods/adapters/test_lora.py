"""LoRA's mechanism (arXiv:2106.09685) and agreement with PEFT's LoRA."""

import math

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.adapters.lora import LoRALinear


def lora(**params):
    return get_method("lora").build(params)


def test_init_follows_loralib_kaiming_uniform_and_zero_b():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(384, 384), r=8, alpha=8, dropout=0.0, init_a="kaiming_uniform")
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(384)  # kaiming_uniform_(a=√5): gain √(2/6), bound = gain·√(3/fan_in)
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.9 * bound  # actually spread over the interval


def test_update_is_scaled_b_a_on_query_and_value_only(tiny):
    model, _ = tiny()
    lora(r=4, alpha=12).apply(model)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(n.endswith(("query", "value")) for n in wrapped)
    layer = model.get_submodule(wrapped[0])
    with torch.no_grad():
        layer.lora_B.normal_()
        x = torch.randn(5, layer.base.in_features)
        expected = layer.base(x) + (12 / 4) * x @ (layer.lora_B @ layer.lora_A).T
        torch.testing.assert_close(layer(x), expected)


def test_merge_then_unmerge_restores_w0():
    layer = LoRALinear(nn.Linear(16, 12), r=4, alpha=8, dropout=0.0, init_a="kaiming_uniform")
    with torch.no_grad():
        layer.lora_B.normal_()
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(3, 16)
    y = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), y)
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, w0)
    torch.testing.assert_close(layer(x), y)


def test_roberta_base_count_matches_the_paper():
    """Table 2 prints 0.3M for RoBERTa-base: r = 8 on W_q, W_v of 12 layers = 12·2·8·(768+768)."""
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    with torch.device("meta"):  # the shapes of roberta-base, no weights, no download
        model = AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2))
        lora().apply(model)
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert n == 12 * 2 * 8 * (768 + 768) == 294_912


def test_bad_hyperparameters_fail_with_the_field_name():
    with pytest.raises(ValueError, match="lora: r must be a positive integer"):
        lora(r=0)
    with pytest.raises(ValueError, match="lora: alpha"):
        lora(alpha=-1)


@pytest.mark.parametrize("target", [("query", "value"), ("query", "key", "value", "dense")])
def test_agrees_with_peft_forward_and_gradients(tiny, batch, target):
    """Same A and B in both: identical logits and identical gradients of every A and B."""
    from peft import LoraConfig, get_peft_model

    ours, _ = tiny(seed=0)
    theirs, _ = tiny(seed=0)
    lora(r=4, alpha=8, target_modules=target).apply(ours)
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(target)))
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules()
                   if hasattr(m, "lora_A") and isinstance(m.lora_A, nn.ModuleDict)}
    our_layers = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    assert peft_layers.keys() == our_layers.keys()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, mine in our_layers.items():
            p = peft_layers[name]
            p.lora_B["default"].weight.normal_(std=0.1)  # B = 0 would make the comparison trivial
            mine.lora_A.copy_(p.lora_A["default"].weight)
            mine.lora_B.copy_(p.lora_B["default"].weight)
            assert mine.scaling == p.scaling["default"]
    ours.eval(), theirs.eval()
    out_ours, out_theirs = ours(**batch), theirs(**batch)
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, rtol=1e-5, atol=1e-6)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    for name, mine in our_layers.items():
        p = peft_layers[name]
        torch.testing.assert_close(mine.lora_A.grad, p.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mine.lora_B.grad, p.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-7)


def test_init_scheme_matches_peft():
    """PEFT's default init (init_lora_weights=True) is Kaiming-uniform(a=√5) for A and zeros for B, as ours:
    same shapes, B = 0, and A filling the same interval ±1/√fan_in."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    wrapped = get_peft_model(nn.Sequential(nn.Linear(256, 48)), LoraConfig(r=8, lora_alpha=8, target_modules=["0"]))
    theirs = wrapped.base_model.model[0]
    ours = LoRALinear(nn.Linear(256, 48), r=8, alpha=8, dropout=0.0, init_a="kaiming_uniform")
    a_theirs, a_ours = theirs.lora_A["default"].weight, ours.lora_A
    assert a_theirs.shape == a_ours.shape
    assert torch.count_nonzero(theirs.lora_B["default"].weight) == 0 == torch.count_nonzero(ours.lora_B)
    bound = 1 / math.sqrt(256)
    for a in (a_theirs, a_ours):
        assert bound * 0.9 < a.abs().max() <= bound
        assert abs(a.std().item() - bound / math.sqrt(3)) < 0.1 * bound  # uniform(−b, b) has std b/√3
