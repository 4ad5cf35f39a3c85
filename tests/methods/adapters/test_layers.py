"""The shared wrapped-Linear layer (methods/adapters/_layers.py) and the rule that keeps paper files apart:
a method file imports the protocol layer and underscore helpers, never another paper's file."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from adaptbench import registry
from methods.adapters._layers import AdaptedLinear, LowRankLinear, check_rank, wrapped_layers

REPO = Path(__file__).resolve().parents[3]
ADAPTERS = REPO / "methods" / "adapters"
PROTOCOL_LAYER = ("adaptbench.protocol", "adaptbench.registry")


def trained_layer(d_out=12, d_in=16, r=4, alpha=8.0, seed=0) -> LowRankLinear:
    """A LowRankLinear with B ≠ 0, i.e. as after some training."""
    torch.manual_seed(seed)
    layer = LowRankLinear(nn.Linear(d_in, d_out), r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def test_delta_weight_is_scaled_b_times_a():
    layer = trained_layer(r=4, alpha=8.0)
    expected = (8.0 / 4) * layer.lora_B.detach() @ layer.lora_A.detach()  # s = α/r, ΔW = s·B A
    torch.testing.assert_close(layer.delta_weight().detach(), expected, rtol=0, atol=0)


def test_forward_is_base_plus_the_update_applied_to_x():
    layer = trained_layer()
    x = torch.randn(5, 16)
    with torch.no_grad():
        expected = x @ (layer.base.weight + layer.delta_weight()).T + layer.base.bias
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_merge_then_unmerge_restores_the_weight_and_the_outputs():
    layer = trained_layer()
    w0 = layer.base.weight.detach().clone()
    x = torch.randn(3, 16)
    with torch.no_grad():
        y = layer(x)
        layer.merge()
        assert layer.merged
        torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight())
        torch.testing.assert_close(layer(x), y)  # merged: the update path is skipped, W + ΔW computes it
        layer.merge()  # idempotent
        torch.testing.assert_close(layer.base.weight, w0 + layer.delta_weight())
        layer.unmerge()
        assert not layer.merged
        torch.testing.assert_close(layer.base.weight, w0)
        torch.testing.assert_close(layer(x), y)


def test_merged_linear_is_a_plain_linear_with_the_same_outputs():
    layer = trained_layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        y = layer(x)
        merged = layer.merged_linear()
        assert type(merged) is nn.Linear
        torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-6)


def test_init_none_draws_nothing_and_starts_at_zero():
    torch.manual_seed(0)
    layer = LowRankLinear(nn.Linear(16, 12), r=4, alpha=4.0, init_a=None)
    after_layer = torch.get_rng_state()
    torch.manual_seed(0)
    nn.Linear(16, 12)  # the base layer's own draws only
    assert torch.equal(after_layer, torch.get_rng_state())
    assert torch.count_nonzero(layer.lora_A) == 0 and torch.count_nonzero(layer.lora_B) == 0
    with pytest.raises(ValueError, match="init_a must be one of"):
        LowRankLinear(nn.Linear(16, 12), r=4, alpha=4.0, init_a="orthogonal")


def test_wrapped_layers_lists_names_and_layers_in_module_order():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    model[0] = LowRankLinear(model[0], r=2, alpha=2.0)
    model[2] = LowRankLinear(model[2], r=2, alpha=2.0)
    assert [(n, m) for n, m in wrapped_layers(model)] == [("0", model[0]), ("2", model[2])]
    assert wrapped_layers(model, LowRankLinear) == wrapped_layers(model, AdaptedLinear)
    assert wrapped_layers(model, nn.ReLU) == [("1", model[1])]


def test_check_rank_names_the_layer_and_the_fix():
    check_rank("pissa", 8, "q", nn.Linear(16, 8))
    with pytest.raises(ValueError, match=r"pissa: r = 9 exceeds min\(in, out\) = 8 of 'q'; lower r"):
        check_rank("pissa", 9, "q", nn.Linear(16, 8))


WRAPPING = [n for n in registry.available("adapter")
            if n != "full" and not registry.get_method(n).cls.LIBRARY_LAYERS]  # PEFT's own layers: test_peft.py


@pytest.mark.parametrize("name", WRAPPING)
def test_every_adapter_layer_is_an_adapted_linear_whose_delta_forward_matches_delta_weight(tiny, name):
    """Every family member's layer: ΔW x computed through the factors equals ΔW formed densely, and
    merge / unmerge / merged_linear agree with the unmerged forward (after the factors moved)."""
    model, _ = tiny(seed=0)
    registry.get_method(name).build().apply(model)  # data-driven inits are not run: perturbed below anyway
    layers = wrapped_layers(model)
    assert layers, f"{name} wrapped no layer in an AdaptedLinear"
    torch.manual_seed(1)
    for _, layer in layers:
        with torch.no_grad():
            for p in layer.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn_like(p))
            x = torch.randn(3, layer.base.in_features)
            torch.testing.assert_close(layer.delta_forward(x), x @ layer.delta_weight().T, rtol=1e-4, atol=1e-5)
            y, w0 = layer(x), layer.base.weight.clone()
            layer.merge()
            torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-5)
            layer.unmerge()
            size = float(w0.abs().max() + layer.delta_weight().abs().max())  # rounding of W + ΔW − ΔW scales with it
            torch.testing.assert_close(layer.base.weight, w0, rtol=0, atol=1e-6 * max(1.0, size))
            torch.testing.assert_close(layer.merged_linear()(x), y, rtol=1e-5, atol=1e-5)


def local_imports(source: str, package: str = "methods.adapters") -> list[str]:
    """The repository modules (methods.*, adaptbench.*) a file imports; ``from P import n`` counts as P.n,
    since n may be a module. Relative imports resolve against ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return [m for m in found if m.split(".")[0] in ("methods", "adaptbench")]


def violations(source: str) -> list[str]:
    """Imports outside the protocol layer and methods/adapters' underscore helpers."""
    bad = []
    for module in local_imports(source):
        if module in ("methods", "methods.adapters", "adaptbench"):
            continue  # the packages themselves; what is taken from them is checked as package.name
        if module.startswith("methods."):
            if not module.startswith("methods.adapters._"):
                bad.append(module)
        elif not any(module == p or module.startswith(p + ".") for p in PROTOCOL_LAYER):
            bad.append(module)
    return bad


@pytest.mark.parametrize("source, bad", [
    ("from methods.adapters.lora import LoRALinear", ["methods.adapters.lora", "methods.adapters.lora.LoRALinear"]),
    ("import methods.adapters.pissa", ["methods.adapters.pissa"]),
    ("from methods.adapters import corda", ["methods.adapters.corda"]),
    ("from . import slora", ["methods.adapters.slora"]),
    ("from .nlora import apply_nystrom", ["methods.adapters.nlora", "methods.adapters.nlora.apply_nystrom"]),
    ("from methods.optimizers.galore_adamw import GaLore", ["methods.optimizers.galore_adamw",
                                                            "methods.optimizers.galore_adamw.GaLore"]),
    ("from adaptbench.train import build_model", ["adaptbench.train", "adaptbench.train.build_model"]),
    ("from methods.adapters._layers import LowRankLinear\nfrom ._svd_math import svd\n"
     "from adaptbench.protocol import Adapter\nfrom adaptbench import registry\nimport torch", []),
])
def test_the_import_checker_flags_paper_files_and_passes_helpers(source, bad):
    assert violations(source) == bad


@pytest.mark.parametrize("path", sorted(ADAPTERS.glob("*.py")), ids=lambda p: p.name)
def test_no_file_imports_another_papers_file(path):
    """A method file (registry name == file stem) and every shared helper import only adaptbench.protocol,
    adaptbench.registry and methods/adapters/_*.py: what two papers share lives in an underscore file."""
    assert violations(path.read_text()) == [], (
        f"{path.name} imports {violations(path.read_text())}; move what is shared into methods/adapters/_*.py")


def test_the_walk_sees_every_method_file():
    stems = {p.stem for p in ADAPTERS.glob("*.py") if not p.stem.startswith("_")}
    assert stems == set(registry.available("adapter"))
