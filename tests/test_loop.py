"""The training loop's contract: hook order and logging, gradient accumulation, precision, and the
``on_gradients`` hook seeing gradients before the optimizer step."""

import pytest
import torch
from torch import nn

from adaptbench.config import TrainConfig
from adaptbench.loop import Run, fit, steps_per_epoch
from adaptbench.protocol import Adapter


class Recorder(Adapter):
    """Logs the order of hook calls and whether gradients exist when ``on_gradients`` runs."""

    def __init__(self):
        super().__init__(None)
        self.calls = []

    def before_step(self, model, step, total_steps):
        self.calls.append(("before_step", step))
        return {"rank": 4.0}

    def on_gradients(self, model, step, total_steps):
        self.calls.append(("on_gradients", step))
        return {"grad_norm": float(sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None))}

    def on_step(self, model, step, total_steps):
        self.calls.append(("on_step", step))
        grads = [p.grad for p in model.parameters()]
        assert all(g is None for g in grads)  # zero_grad(set_to_none) ran before on_step


def toy_run(n=12, batch_size=2, lr=0.1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1))
    x, y = torch.randn(n, 3), torch.randn(n)
    data = [{"x": x[i], "labels": y[i]} for i in range(n)]
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    method = Recorder()
    loss_fn = lambda m, b: ((m(b["x"]).squeeze(-1) - b["labels"]) ** 2).mean()  # noqa: E731
    return Run(model, method, opt, sched, loader, gen, loss_fn, evaluate=lambda m: {"acc": 0.0},
               trained={n for n, _ in model.named_parameters()}), x, y


def test_hooks_run_in_order_and_their_scalars_are_logged():
    run, _, _ = toy_run()
    progress = fit(run, TrainConfig(epochs=1, batch_size=2, lr=0.1, max_grad_norm=1e9), torch.device("cpu"),
                   progress_bar=False)
    assert progress.step == 6
    assert run.method.calls[:3] == [("before_step", 0), ("on_gradients", 0), ("on_step", 0)]
    assert [s for s, _ in progress.hooks["before_step"]["rank"]] == list(range(6))
    assert all(v > 0 for _, v in progress.hooks["on_gradients"]["grad_norm"])


def test_gradient_accumulation_equals_one_batch_of_the_union():
    """Two micro-batches of 2, loss divided by 2, give the gradient of one batch of 4 (MSE, equal sizes)."""
    acc, _, _ = toy_run(n=8, batch_size=2)
    fit(acc, TrainConfig(epochs=1, batch_size=2, grad_accum_steps=2, lr=0.1, max_grad_norm=1e9),
        torch.device("cpu"), progress_bar=False)
    whole, _, _ = toy_run(n=8, batch_size=4)
    fit(whole, TrainConfig(epochs=1, batch_size=4, lr=0.1, max_grad_norm=1e9), torch.device("cpu"),
        progress_bar=False)
    assert steps_per_epoch(acc.loader, 2) == 2
    for a, b in zip(acc.model.parameters(), whole.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_autocast_runs_on_cpu_and_keeps_fp32_weights():
    run, _, _ = toy_run()
    progress = fit(run, TrainConfig(epochs=1, batch_size=2, lr=0.1, precision="bf16"), torch.device("cpu"),
                   progress_bar=False)
    assert progress.step == 6 and all(torch.isfinite(torch.tensor(progress.losses)))
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_with_grad_scaler_on_cuda():
    run, _, _ = toy_run()
    run.model.cuda()
    progress = fit(run, TrainConfig(epochs=1, batch_size=2, lr=0.1, precision="fp16"), torch.device("cuda"),
                   progress_bar=False)
    assert progress.step == 6 and all(torch.isfinite(torch.tensor(progress.losses)))


def test_bad_precision_is_named():
    with pytest.raises(ValueError, match="train.precision must be one of"):
        TrainConfig(precision="fp8")
