"""Losses, optimizers and schedules as ``_target_`` nodes: timm's factory and parameter groups (no weight decay
on biases and norms, layer decay, head LR), any timm optimizer name, warm-up + cosine / step shapes."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
from torch import nn

from imagelab.config.instantiation import build_instance
from imagelab.core.errors import UserError
from lightning_modules.losses import CharbonnierLoss
from lightning_modules.optim import build_optimizer, build_scheduler, check_optimization

OPT = {"_target_": "lightning_modules.optim.create_optimizer", "_partial_": True}
COSINE = {"_target_": "lightning_modules.optim.warmup_cosine", "_partial_": True}
STEP = {"_target_": "lightning_modules.optim.warmup_step", "_partial_": True}


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)


def test_loss_nodes_match_torch() -> None:
    a, b = _pair()
    mse = build_instance({"_target_": "torch.nn.MSELoss"}, nn.Module, "model.loss", "torch.nn.Module")
    l1 = build_instance({"_target_": "torch.nn.L1Loss"}, nn.Module, "model.loss", "torch.nn.Module")
    torch.testing.assert_close(mse(a, b), torch.mean((a - b) ** 2))
    torch.testing.assert_close(l1(a, b), torch.mean((a - b).abs()))


def test_charbonnier_is_l1_for_small_eps_and_larger_for_big_eps() -> None:
    a, b = _pair()
    l1 = torch.mean((a - b).abs())
    assert abs(CharbonnierLoss(eps=1e-6)(a, b) - l1) < 1e-5
    big = build_instance(
        {"_target_": "lightning_modules.losses.CharbonnierLoss", "eps": 0.1},
        nn.Module,
        "model.loss",
        "torch.nn.Module",
    )
    assert isinstance(big, CharbonnierLoss) and big.eps == 0.1
    assert big(a, b) > l1 + 1e-3
    assert CharbonnierLoss()(a, a) == pytest.approx(1e-3)  # default eps: sqrt(eps**2) at zero error


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({"_target_": "torch.nn.HuberLos"}, "model.loss"),
        ({"_target_": "lightning_modules.losses.CharbonnierLoss", "delta": 1}, "delta"),
        ({"_target_": "lightning_modules.losses.CharbonnierLoss", "eps": 0}, "eps must be > 0"),
        ({"name": "mse"}, "must be a config node with a _target_"),
    ],
)
def test_bad_losses_are_user_errors(node: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_instance(node, nn.Module, "model.loss", "torch.nn.Module")


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2)
    )


def test_no_weight_decay_on_biases_and_norm_weights() -> None:
    model = _model()
    model[4].bias.requires_grad_(False)  # frozen parameters are left out
    opt = build_optimizer({**OPT, "opt": "adamw", "lr": 0.1, "weight_decay": 0.5}, model)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    assert groups["decay"]["weight_decay"] == 0.5 and groups["no_decay"]["weight_decay"] == 0.0
    assert {id(p) for p in groups["decay"]["params"]} == {id(model[0].weight), id(model[4].weight)}
    expected = {model[0].bias, model[1].weight, model[1].bias, model[3].weight, model[3].bias}
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(p) for p in expected}

    # behaviour: with zero gradients AdamW only decays the decayed group
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        if name in ("0.weight", "4.weight"):
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5))
        else:
            torch.testing.assert_close(p, before[name])


def test_timm_optimizer_names_and_options_pass_through() -> None:
    model = _model()
    sgd = build_optimizer({**OPT, "opt": "momentum", "lr": 0.5, "momentum": 0.8}, model)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"] is False
    adam = build_optimizer(
        {**OPT, "opt": "adam", "lr": 0.01, "betas": [0.8, 0.9], "weight_decay": 1e-4}, model
    )
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)
    assert tuple(adam.param_groups[0]["betas"]) == (0.8, 0.9)
    for name, cls in (
        ("lion", timm.optim.Lion),
        ("lamb", timm.optim.Lamb),
        ("adabelief", timm.optim.AdaBelief),
    ):
        assert isinstance(build_optimizer({**OPT, "opt": name}, model), cls), name
    # a torch optimizer class as the target gets timm's no-decay groups
    torch_sgd = build_optimizer(
        {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "weight_decay": 0.3}, model
    )
    assert sorted(g["weight_decay"] for g in torch_sgd.param_groups) == [0.0, 0.3]


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({**OPT, "opt": "lamb2"}, "Optimizer lamb2 not found"),
        ({**OPT, "opt": "adam", "momentum2": 0.9}, "momentum2"),
        ({**OPT, "lr": 0}, "lr must be > 0"),
        ({**OPT, "layer_decay": 1.5}, "layer_decay"),
        ({**OPT, "head_lr": -1}, "head_lr"),
        ({"_target_": "lightning_modules.optim.nothing", "_partial_": True}, "model.optimizer"),
        ({"name": "adam"}, r"model/optimizer=NAME"),
    ],
)
def test_bad_optimizer_nodes_are_user_errors(node: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        check_optimization(node, None)


def test_layer_decay_and_head_lr_per_group() -> None:
    model = timm.create_model("test_vit", num_classes=4, img_size=32)
    node = {**OPT, "opt": "adamw", "lr": 1e-2, "weight_decay": 0.01, "layer_decay": 0.5, "head_lr": 0.5}
    groups = build_optimizer(node, model, head="head").param_groups
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert (
        by_param[id(named["head.weight"])]["lr"] == 0.5
        and by_param[id(named["head.weight"])]["name"] == "head"
    )
    lrs = [by_param[id(named[f"blocks.{i}.attn.qkv.weight"])]["lr"] for i in range(6)]
    assert all(later == pytest.approx(2 * earlier) for earlier, later in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(1e-2 * 0.5)  # the last block is one layer group below the head
    assert by_param[id(named["patch_embed.proj.weight"])]["lr"] == pytest.approx(lrs[0] / 2)
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert len({g["name"] for g in groups}) == len(groups)  # unique names: the LR monitor's curves
    assert {g["name"] for g in groups} >= {"head", "head_no_decay", "layer0", "layer0_no_decay"}


def _lrs(node: dict, total: int, steps_per_epoch: int, base_lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_scheduler(node, opt, total_steps=total, steps_per_epoch=steps_per_epoch)
    assert sched is not None and sched["interval"] == "step"
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return lrs


def test_cosine_with_warmup_rises_linearly_then_decays_to_min() -> None:
    lrs = _lrs({**COSINE, "warmup_epochs": 2, "min_lr_ratio": 0.05}, total=100, steps_per_epoch=5)
    peak = lrs.index(max(lrs))
    assert peak == 9  # 2 epochs x 5 steps of linear warm-up
    assert lrs[:10] == pytest.approx([0.1 * (i + 1) / 10 for i in range(10)])  # linear from lr/10 to lr
    assert max(lrs) == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    expected = [0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))) for s in range(10, 100)]
    assert lrs[10:] == pytest.approx(expected)  # cosine from lr to min_lr_ratio * lr at the run's end
    assert lrs[-1] == pytest.approx(0.1 * 0.05, rel=0.05)


def test_cosine_keeps_each_groups_own_fraction() -> None:
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}, {"params": [q], "lr": 0.01}], lr=1.0)
    sched = build_scheduler({**COSINE, "min_lr_ratio": 0.1}, opt, total_steps=10, steps_per_epoch=1)
    for _ in range(10):
        opt.step()
        sched["scheduler"].step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.001])


def test_cosine_warmup_steps_and_step_schedule() -> None:
    # warmup_steps replaces the preset's warmup_epochs
    lrs = _lrs({**COSINE, "warmup_steps": 3, "warmup_epochs": 1}, total=20, steps_per_epoch=100)
    assert lrs.index(max(lrs)) == 2 and lrs[-1] < 0.01
    step = _lrs({**STEP, "step_size": 2, "gamma": 0.5}, total=12, steps_per_epoch=3)
    assert step == pytest.approx([0.1] * 6 + [0.05] * 6)
    warm = _lrs({**STEP, "step_size": 1, "gamma": 0.5, "warmup_steps": 2}, total=6, steps_per_epoch=2)
    assert warm == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.05, 0.05])


def test_library_scheduler_gets_the_run_length() -> None:
    node = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.1}
    lrs = _lrs(node, total=20, steps_per_epoch=5)  # OneCycleLR's own total_steps is filled in
    assert max(lrs) == pytest.approx(0.1, rel=0.01) and lrs[-1] < 0.01


def test_no_scheduler() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_scheduler(None, opt, 10, 1) is None
    assert build_scheduler({}, opt, 10, 1) is None  # conf/model/scheduler/none.yaml


@pytest.mark.parametrize(
    ("node", "total", "match"),
    [
        ({"_target_": "lightning_modules.optim.cyclic", "_partial_": True}, 10, "model.scheduler"),
        ({**COSINE, "gamma": 0.1}, 10, "gamma"),
        ({**COSINE, "warmup_steps": -1}, 10, "warm-up must be >= 0"),
        ({**COSINE, "min_lr_ratio": 2}, 10, "min_lr_ratio"),
        ({**COSINE}, math.inf, "finite"),
        ({"name": "cosine"}, 10, r"model/scheduler=NAME"),
    ],
)
def test_bad_scheduler_nodes_are_user_errors(node: dict, total: float, match: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UserError, match=match):
        build_scheduler(node, opt, total, 10)
