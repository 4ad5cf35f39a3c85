"""CoTTA (arXiv:2203.13591): EMA teacher (Eq. 3), gated augmentation average (Eq. 4–5), soft-CE student step
(Eq. 2), stochastic restore (Eq. 6–7), and reset of model, teacher and optimizer."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from adaptbench.registry import get_method
from methods.tta.cotta import CoTTA, CoTTAConfig, augment, augment_tensor, drop_tokens, stochastic_restore_


class ToyNet(nn.Module):
    """Linear → BatchNorm1d → ReLU → Linear, with features/classifier."""

    def __init__(self, d_in=6, d_hidden=16, n_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, d_hidden), nn.BatchNorm1d(d_hidden), nn.ReLU())
        self.classifier = nn.Linear(d_hidden, n_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


class ToyTextNet(nn.Module):
    """Embedding → masked mean pool → Linear → BatchNorm1d → ReLU → Linear, on dict inputs."""

    def __init__(self, vocab=120, dim=8, n_classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU())
        self.classifier = nn.Linear(dim, n_classes)

    def features(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.body(pooled)

    def forward(self, batch):
        return self.classifier(self.features(batch))


def attached(seed=0, **overrides):
    torch.manual_seed(seed)
    model = ToyNet()
    method = get_method("cotta").build(overrides)
    method.attach(model)
    return method


def batch(seed, n=8, d=6):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_defaults_are_the_cifar10_c_configuration():
    cfg = CoTTAConfig()
    assert (cfg.alpha_teacher, cfg.restore_prob, cfg.conf_threshold, cfg.n_augmentations) == (0.999, 0.01, 0.92, 32)
    assert (cfg.optimizer, cfg.lr) == ("adam", 1e-3)


@pytest.mark.parametrize("field,value", [("alpha_teacher", 1.5), ("restore_prob", -0.1), ("n_augmentations", 0),
                                         ("optimizer", "rmsprop"), ("brightness", (1.2, 0.8))])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"cotta: {field}"):
        CoTTAConfig(**{field: value})


def test_every_parameter_adapts():
    method = attached()
    assert method.params_to_adapt(method.model) == list(method.model.parameters())
    assert all(not p.requires_grad for p in method.teacher.parameters())


def test_teacher_follows_the_ema_formula_after_n_steps():
    alpha = 0.8
    method = attached(alpha_teacher=alpha, restore_prob=0.0, conf_threshold=0.0)
    expected = params(method.model)  # θ'_0 = θ_0
    for step in range(4):
        method.forward_and_adapt(batch(step))
        student = params(method.model)
        expected = {n: alpha * expected[n] + (1 - alpha) * student[n] for n in expected}
    teacher = params(method.teacher)
    for n in expected:
        torch.testing.assert_close(teacher[n], expected[n], rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(teacher[n], params(method.model)[n]) for n in teacher)


def test_student_takes_an_adam_step_on_soft_cross_entropy_to_the_teacher():
    method = attached(restore_prob=0.0, conf_threshold=0.0)  # threshold 0: never augment
    reference, teacher = copy.deepcopy(method.model), copy.deepcopy(method.teacher)
    x = batch(1)
    pseudo = method.forward_and_adapt(x)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3, betas=(0.9, 0.999))
    with torch.no_grad():
        target = teacher(x)
    loss = -(target.softmax(1) * reference(x).log_softmax(1)).sum(1).mean()
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(pseudo, target)  # the prediction is the teacher's, made before the update
    for n, p in params(reference).items():
        torch.testing.assert_close(params(method.model)[n], p)


def test_stochastic_restore_resets_the_expected_fraction_to_exact_source_values():
    torch.manual_seed(0)
    source = [torch.randn(60, 50), torch.randn(1000)]
    weights = [s + 1.0 for s in source]
    before = [w.clone() for w in weights]
    p, total = 0.1, sum(s.numel() for s in source)
    restored = stochastic_restore_(list(zip(weights, source)), p)
    reset = [w == s for w, s in zip(weights, source)]
    assert restored == sum(int(r.sum()) for r in reset)
    sd = (p * (1 - p) / total) ** 0.5
    assert abs(restored / total - p) < 4 * sd
    for w, s, b, r in zip(weights, source, before, reset):
        assert torch.equal(w[r], s[r])  # restored elements are the source values, bit for bit
        assert torch.equal(w[~r], b[~r])  # the others are untouched


def test_restore_prob_one_returns_every_weight_to_source_and_zero_keeps_the_update():
    moved = {}
    for p in (1.0, 0.0):
        method = attached(restore_prob=p, conf_threshold=0.0)
        source = params(method.model)
        method.forward_and_adapt(batch(3))
        moved[p] = [n for n, v in params(method.model).items() if not torch.equal(v, source[n])]
        assert method.last_stats["restored_fraction"] == p
    assert moved[1.0] == [] and moved[0.0] != []


def source_confidence(method, x):
    with torch.no_grad():
        return float(method.anchor(x).softmax(1).max(1).values.mean())


@pytest.mark.parametrize("below", [True, False])
def test_augmentation_average_is_used_exactly_when_source_confidence_is_below_threshold(below):
    probe = attached()
    x = batch(5)
    conf = source_confidence(probe, x)
    method = attached(conf_threshold=conf + (0.01 if below else -0.01), n_augmentations=4)
    teacher = copy.deepcopy(method.teacher)
    torch.manual_seed(11)
    pseudo = method.forward_and_adapt(x)
    assert method.last_stats["augmented"] == float(below)
    with torch.no_grad():
        if below:  # replay the augmentation RNG: the N views are the only random draws before the average
            torch.manual_seed(11)
            expected = torch.stack([teacher(augment(x, method.cfg)) for _ in range(4)]).mean(0)
        else:
            expected = teacher(x)
    torch.testing.assert_close(pseudo, expected)


def test_reset_restores_model_teacher_and_optimizer_and_replays_identically():
    method = attached(restore_prob=0.05)
    source = params(method.model)
    torch.manual_seed(7)
    first = method.forward_and_adapt(batch(0))
    first_state = params(method.model)
    for step in range(1, 3):
        method.forward_and_adapt(batch(step))
    assert method.optimizer.state
    method.reset()
    for module in (method.model, method.teacher):
        for n, v in params(module).items():
            assert torch.equal(v, source[n]), n
    assert not method.optimizer.state  # Adam's moments are gone, as before the first step
    torch.manual_seed(7)
    again = method.forward_and_adapt(batch(0))
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    for n, v in params(method.model).items():
        torch.testing.assert_close(v, first_state[n], rtol=0, atol=0)


def test_image_augmentation_is_the_identity_at_degenerate_ranges_and_random_otherwise():
    x = torch.randn(4, 3, 8, 8)
    still = CoTTAConfig(brightness=(1.0, 1.0), contrast=(1.0, 1.0), rotation_deg=0.0, translate_frac=0.0,
                        scale=(1.0, 1.0), noise_std=0.0)
    torch.testing.assert_close(augment_tensor(x, still), x, rtol=0, atol=1e-5)
    view = augment_tensor(x, CoTTAConfig())
    assert view.shape == x.shape and not torch.allclose(view, x)



def centroid_shift(view: torch.Tensor, centre: tuple[float, float]) -> torch.Tensor:
    """|displacement| in pixels, per view and axis, of the intensity centroid of single-channel images (B, 1, H, W)."""
    h, w = view.shape[-2:]
    mass = view.sum((-2, -1))  # (B, 1)
    ys = (view.sum(-1) * torch.arange(h)).sum(-1) / mass
    xs = (view.sum(-2) * torch.arange(w)).sum(-1) / mass
    return torch.cat([(xs - centre[1]).abs(), (ys - centre[0]).abs()], 1)  # (B, 2)


def test_translation_reaches_the_references_four_pixels_on_32_px_images_and_never_more():
    # Reference: Pad(16, edge) to 64 px, RandomAffine(translate=1/16) -> |t| <= 1/16·64 = 4 px, CenterCrop(32).
    x = torch.zeros(2000, 1, 32, 32)
    x[:, :, 14, 17] = 1.0  # one-hot pixel, away from the border so no mass leaves the image
    only_shift = CoTTAConfig(brightness=(1.0, 1.0), contrast=(1.0, 1.0), rotation_deg=0.0, scale=(1.0, 1.0),
                             noise_std=0.0)
    torch.manual_seed(0)
    shift = centroid_shift(augment_tensor(x, only_shift), (14.0, 17.0))
    assert shift.max() > 3.5  # was ±2 px before the padding was accounted for
    assert shift.max() <= 4.0 + 1e-4
    assert (shift > 2.0).float().mean() > 0.3  # uniform on [0, 4]: half the draws beyond 2 px


def test_rotation_and_scale_turn_about_the_centre_and_do_not_enlarge_the_translation():
    # RandomAffine translates after rotating and scaling about the centre, so a blob at the centre moves by t alone
    # (|t| <= 33/8 px); translating before scaling would reach 33/8 / 0.9 = 4.58 px.
    r = torch.arange(33.0) - 16  # the exact centre of an odd-sized image
    blob = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.5 ** 2))
    x = blob.expand(2000, 1, 33, 33).clone()
    geometric = CoTTAConfig(brightness=(1.0, 1.0), contrast=(1.0, 1.0), noise_std=0.0)
    torch.manual_seed(0)
    still = centroid_shift(augment_tensor(x, dataclasses.replace(geometric, translate_frac=0.0)), (16.0, 16.0))
    assert still.max() < 1e-3  # rotation and scale alone keep the centre
    torch.manual_seed(0)
    shift = centroid_shift(augment_tensor(x, geometric), (16.0, 16.0))
    assert 3.5 < shift.max() <= 33 / 8 + 0.05  # 0.05 px: bilinear resampling moves a centroid by ~0.01 px


@pytest.mark.parametrize("mask_token_id", [None, 103])
def test_token_dropout_spares_special_and_padding_tokens(mask_token_id):
    ids = torch.tensor([[101, 7, 8, 9, 10, 11, 102, 0, 0]] * 64)
    attention = (ids != 0).long()
    cfg = CoTTAConfig(token_drop_prob=0.5, mask_token_id=mask_token_id)
    torch.manual_seed(0)
    view = drop_tokens({"input_ids": ids, "attention_mask": attention}, cfg)
    if mask_token_id is None:
        assert torch.equal(view["input_ids"], ids)
        dropped = (view["attention_mask"] == 0) & (attention == 1)
    else:
        assert torch.equal(view["attention_mask"], attention)
        dropped = view["input_ids"] != ids
        assert torch.all(view["input_ids"][dropped] == mask_token_id)
    assert not dropped[:, [0, 6, 7, 8]].any()  # [CLS], [SEP], padding
    assert abs(dropped[:, 1:6].float().mean().item() - 0.5) < 0.1


def test_a_text_batch_adapts_through_token_dropout_views():
    torch.manual_seed(0)
    model = ToyTextNet()
    method = get_method("cotta").build({"conf_threshold": 1.0, "n_augmentations": 3})
    method.attach(model)
    ids = torch.randint(1, 100, (6, 9))
    logits = method.forward_and_adapt({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()
    assert method.last_stats["augmented"] == 1.0
    assert isinstance(method, CoTTA)
