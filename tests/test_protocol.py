import pytest
import torch
from torch import nn

from adaptbench.protocol import TTAMethod, optimizer_state_bytes, target_linears


class NormOnly(TTAMethod):
    def configure_model(self, model):
        return model

    def params_to_adapt(self, model):
        return [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]


def test_tta_base_reset_restores_the_source_state():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    method = NormOnly(cfg=None)
    method.attach(model)
    source = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in method.params_to_adapt(model):
            p.add_(1.0)
    method.reset()
    for k, v in model.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_reset_before_attach_is_an_error():
    with pytest.raises(RuntimeError, match="attach"):
        NormOnly(cfg=None).reset()


def test_optimizer_state_bytes_counts_adam_moments():
    w = nn.Parameter(torch.zeros(10, 3))
    opt = torch.optim.Adam([w])
    assert optimizer_state_bytes(opt) == 0  # lazily allocated
    w.grad = torch.ones_like(w)
    opt.step()
    assert optimizer_state_bytes(opt) == 2 * 30 * 4 + 4  # m, v in fp32 + the step counter


def test_target_linears_matches_suffixes_and_names_misses():
    model = nn.ModuleDict({"query": nn.Linear(2, 2), "subquery": nn.Linear(2, 2)})
    assert [n for n, _ in target_linears(model, ["query"])] == ["query"]
    with pytest.raises(ValueError, match=r"target_modules \['q_proj'\] match no nn.Linear"):
        target_linears(model, ["q_proj"])
