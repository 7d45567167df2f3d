"""Losses by name, optimizers/schedulers from config dicts, no weight decay on biases and norms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from experiment_utils.errors import UserError
from lightning_modules.losses import CharbonnierLoss, build_loss
from lightning_modules.optim import build_optimizer, build_scheduler, param_groups_without_decay


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)


def test_mse_and_l1_match_torch() -> None:
    a, b = _pair()
    torch.testing.assert_close(build_loss("mse")(a, b), torch.mean((a - b) ** 2))
    torch.testing.assert_close(build_loss("l1")(a, b), torch.mean((a - b).abs()))


def test_charbonnier_is_l1_for_small_eps_and_larger_for_big_eps() -> None:
    a, b = _pair()
    l1 = torch.mean((a - b).abs())
    assert abs(build_loss("charbonnier", eps=1e-6)(a, b) - l1) < 1e-5
    big = build_loss({"name": "charbonnier", "eps": 0.1})
    assert isinstance(big, CharbonnierLoss) and big.eps == 0.1
    assert big(a, b) > l1 + 1e-3
    assert build_loss("charbonnier")(a, a) == pytest.approx(1e-3)  # default eps: sqrt(eps**2) at zero error


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("huber", {}, "valid losses: mse, l1, charbonnier"),
        ("charbonnier", {"delta": 1}, "valid options: eps"),
        ("mse", {"eps": 1}, "takes no options"),
        ("charbonnier", {"eps": 0}, "eps must be > 0"),
    ],
)
def test_bad_losses_are_user_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_loss(name, **kwargs)


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2)
    )


def test_no_weight_decay_on_biases_and_norm_weights() -> None:
    model = _model()
    model[4].bias.requires_grad_(False)  # frozen parameters are left out
    groups = param_groups_without_decay(model.named_parameters(), 0.5)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[4].weight)}
    expected = {model[0].bias, model[1].weight, model[1].bias, model[3].weight, model[3].bias}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected}

    # behaviour: with zero gradients AdamW only decays the decayed group
    opt = build_optimizer(groups, {"name": "adamw", "lr": 0.1, "weight_decay": 0.5})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        if name in ("0.weight", "4.weight"):
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5))
        else:
            torch.testing.assert_close(p, before[name])


def test_named_no_decay_parameters_and_empty_groups_dropped() -> None:
    model = nn.Linear(3, 3, bias=False)
    groups = param_groups_without_decay(model.named_parameters(), 0.1, no_decay_names=["weight"])
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_build_optimizer_options() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, {"name": "sgd", "lr": 0.5, "momentum": 0.8, "nesterov": True})
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"] is True
    adam = build_optimizer(params, {"name": "adam", "lr": 0.01, "betas": [0.8, 0.9], "weight_decay": 1e-4})
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    assert adam.param_groups[0]["betas"] == (0.8, 0.9) and adam.param_groups[0]["weight_decay"] == 1e-4
    assert isinstance(build_optimizer(params, {"name": "adamw"}), torch.optim.AdamW)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"name": "lamb"}, "valid names: adam, adamw, sgd"),
        ({"name": "adam", "momentum": 0.9}, "unknown option"),
        ({"name": "sgd", "betas": [0.9, 0.99]}, "unknown option"),
        ({"name": "adam", "lr": 0}, "lr must be > 0"),
        ({"name": "sgd", "momentum": 0.0, "nesterov": True}, "nesterov"),
    ],
)
def test_bad_optimizer_configs_are_user_errors(cfg: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_optimizer([nn.Parameter(torch.zeros(1))], cfg)


def _lrs(cfg: dict, total: int, steps_per_epoch: int, base_lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_scheduler(opt, cfg, total_steps=total, steps_per_epoch=steps_per_epoch)
    assert sched is not None and sched["interval"] == "step"
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return lrs


def test_cosine_with_warmup_goes_up_then_down_to_min() -> None:
    lrs = _lrs({"name": "cosine", "warmup_epochs": 2, "min_lr_ratio": 0.05}, total=100, steps_per_epoch=5)
    peak = lrs.index(max(lrs))
    assert peak == 9  # 2 epochs x 5 steps of linear warm-up
    assert lrs[0] == pytest.approx(0.1 / 10)
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert max(lrs) == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[-1] == pytest.approx(0.1 * 0.05, rel=0.05)
    assert lrs[(peak + 100) // 2] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5), rel=0.05)  # half-way point


def test_cosine_warmup_steps_and_step_schedule() -> None:
    lrs = _lrs({"name": "cosine", "warmup_steps": 3}, total=20, steps_per_epoch=100)
    assert lrs.index(max(lrs)) == 2 and lrs[-1] < 0.01
    step = _lrs({"name": "step", "step_size": 2, "gamma": 0.5}, total=12, steps_per_epoch=3)
    assert step == pytest.approx([0.1] * 6 + [0.05] * 6)


def test_no_scheduler() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_scheduler(opt, None, 10, 1) is None
    assert build_scheduler(opt, {"name": "none"}, 10, 1) is None


@pytest.mark.parametrize(
    ("cfg", "total", "match"),
    [
        ({"name": "cyclic"}, 10, "valid names: cosine, none, step"),
        ({"name": "cosine", "gamma": 0.1}, 10, "unknown option"),
        ({"name": "cosine", "warmup_steps": 1, "warmup_epochs": 1}, 10, "not both"),
        ({"name": "cosine", "min_lr_ratio": 2}, 10, "min_lr_ratio"),
        ({"name": "cosine"}, math.inf, "finite"),
    ],
)
def test_bad_scheduler_configs_are_user_errors(cfg: dict, total: float, match: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UserError, match=match):
        build_scheduler(opt, cfg, total, 10)
