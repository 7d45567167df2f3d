"""Classifier in-process: every fine-tuning strategy trains exactly what it promises and nothing else moves,
LoRA adapters save alone and merge, weights load from files with a new head, offline pretrained fails fast,
and the CIFAR-10 module trains on a tiny official-format set written here."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from imagelab.core.errors import UserError
from lightning_modules.finetuning import FinetuneStrategy, train_only

pl = pytest.importorskip("lightning.pytorch")

CLASSES = ["apple", "bus", "cat", "dog"]
ADAMW = {"_target_": "lightning_modules.optim.create_optimizer", "_partial_": True, "opt": "adamw"}


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine's 2 cores are shared: one intra-op thread is several times faster than two here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def structured_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32x32 RGB images whose class sets the colour and the stripe direction (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.float32)
    images, labels = [], []
    yy, xx = np.mgrid[0:32, 0:32]
    for cls in range(len(CLASSES)):
        stripes = np.sin((yy if cls % 2 else xx) * 0.8)[..., None] * 40
        for _ in range(n_per_class):
            img = palette[cls] * rng.uniform(0.6, 1.0) + stripes + rng.normal(0, 25, (32, 32, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(cls)
    return np.stack(images), np.asarray(labels)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10-format set (4 classes) in the official cifar-10-python pickles."""
    from datamodules.cifar10_reader import write_cifar10_like

    root = tmp_path_factory.mktemp("cifar")
    train_x, train_y = structured_images(16, seed=0)
    test_x, test_y = structured_images(6, seed=1)
    write_cifar10_like(root, train_x, train_y, test_x, test_y, CLASSES)
    return root


def cifar_data(root: Path, **kwargs):
    from datamodules.cifar10_classification import CIFAR10ClassificationDataModule

    options = {"download": False, "val_size": 16, "batch_size": 16, "eval_batch_size": 32, "num_workers": 0}
    return CIFAR10ClassificationDataModule(root=str(root), **{**options, **kwargs})


class Snapshot(pl.Callback):
    """Copies every tensor of the module when training starts (after setup built the final network)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.trainable = {n for n, p in pl_module.named_parameters() if p.requires_grad}
        self.total = sum(p.numel() for p in pl_module.parameters())
        self.trainable_count = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)


def fit(module, datamodule, steps: int = 4, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule)
    return trainer


def classifier(backbone: str, finetune: dict, **kwargs):
    from lightning_modules.classifier import ClassifierModule

    timm_kwargs = {"img_size": 32} if "vit" in backbone else {}
    options = {
        "pretrained": False,
        "in_chans": 3,
        "timm_kwargs": timm_kwargs,
        "optimizer": {**ADAMW, "lr": 1e-2, "weight_decay": 0.01},
        "scheduler": None,
    }
    return ClassifierModule(backbone=backbone, finetune=finetune, **{**options, **kwargs})


def lora_modules(names: set[str]) -> set[str]:
    return {re.sub(r"\.lora_[AB]\.default\.weight$", "", n) for n in names if ".lora_" in n}


VIT_LORA = {f"blocks.{i}.{m}" for i in range(6) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
RESNET_LORA = {"layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv1",
               "layer3.0.conv2", "layer3.0.conv3", "layer4.0.conv1", "layer4.0.conv2"}  # fmt: skip

# (backbone, finetune config, expected trainable parameter names: a predicate on the name)
CASES = {
    "resnet-full": ("test_resnet", {"strategy": "full"}, lambda n: True),
    "resnet-linear_probe": ("test_resnet", {"strategy": "linear_probe"}, lambda n: n.startswith("net.fc.")),
    "resnet-partial": (
        "test_resnet",
        {"strategy": "partial", "blocks": 1},
        lambda n: n.startswith(("net.layer4.", "net.fc.")),
    ),
    "resnet-bitfit": (
        "test_resnet",
        {"strategy": "bitfit"},
        lambda n: n.endswith(".bias") or n.startswith("net.fc."),
    ),
    "resnet-lora": ("test_resnet", {"strategy": "lora", "rank": 4}, None),
    "vit-linear_probe": ("test_vit", {"strategy": "linear_probe"}, lambda n: n.startswith("net.head.")),
    "vit-partial": (
        "test_vit",
        {"strategy": "partial", "blocks": 2},
        lambda n: n.startswith(("net.blocks.4.", "net.blocks.5.", "net.norm.", "net.head.")),
    ),
    "vit-lora": ("test_vit", {"strategy": "lora", "rank": 4}, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_strategy_trains_exactly_what_it_promises(case: str, cifar_root: Path) -> None:
    backbone, finetune, expected = CASES[case]
    module = classifier(backbone, finetune)  # the head is sized from the data's 4 classes in setup()
    snap = Snapshot()
    fit(module, cifar_data(cifar_root), steps=4, callbacks=[snap])
    names = [n for n, _ in module.named_parameters()]
    if expected is not None:
        assert snap.trainable == {n for n in names if expected(n)}
    else:  # LoRA: the adapters on the promised layers plus the head (peft's trained copy), nothing else
        prefix = "net.base_model.model."
        head = "fc" if backbone == "test_resnet" else "head"
        assert {n for n in snap.trainable if ".lora_" not in n} == {
            f"{prefix}{head}.modules_to_save.default.weight",
            f"{prefix}{head}.modules_to_save.default.bias",
        }
        wanted = RESNET_LORA if backbone == "test_resnet" else VIT_LORA
        assert lora_modules(snap.trainable) == {prefix + m for m in wanted}
        share = snap.trainable_count / snap.total
        assert share < 0.12, f"LoRA rank 4 should train < 12 % of the tiny test model, trains {share:.1%}"
    after = {k: v for k, v in module.state_dict().items() if k.startswith("net.")}  # the network's tensors
    # everything but the trainable parameters (and the running statistics of batch norms that train) must stay
    stats_that_train = {
        k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        and f"{k.rsplit('.', 1)[0]}.weight" in snap.trainable
    }  # fmt: skip
    frozen = [k for k in after if k not in snap.trainable and k not in stats_that_train]
    changed_frozen = [k for k in frozen if not torch.equal(after[k], snap.before[k])]
    assert not changed_frozen, f"frozen tensors changed: {changed_frozen[:5]}"
    if finetune["strategy"] in ("linear_probe", "lora", "bitfit", "partial") and backbone == "test_resnet":
        assert any("running_mean" in k for k in frozen)  # batch-norm statistics were among the frozen tensors
    moved = [n for n in snap.trainable if not torch.equal(after[n], snap.before[n])]
    # (in ResNet branches whose last batch-norm weight starts at zero, biases before it get no gradient)
    assert len(moved) >= 0.5 * len(snap.trainable), (
        f"only {len(moved)}/{len(snap.trainable)} trainable tensors moved"
    )
    assert any(
        re.search(r"\.(fc|head)\.(modules_to_save\.default\.)?weight$", n) for n in moved
    )  # the head learned
    if backbone == "test_resnet":  # frozen batch norms stay in eval mode while the rest trains
        norms = [m for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        frozen_norms = [m for m in norms if not m.weight.requires_grad]
        assert module.training and all(not m.training for m in frozen_norms)
        assert all(m.training for m in norms if m.weight.requires_grad)
        assert bool(frozen_norms) == (finetune["strategy"] != "full")


def test_lora_share_of_vit_b16_is_a_few_percent() -> None:
    """The shipped LoRA setup (rank 8 on ViT-B/16 qkv/proj/fc1/fc2) trains about 1.4 % of the parameters."""
    from lightning_modules.backbones import create_backbone
    from lightning_modules.finetuning import LoRA

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        net = LoRA().apply(create_backbone("vit_base_patch16_224", num_classes=10))
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert (
        trainable == 12 * 8 * ((768 + 3 * 768) + (768 + 768) + 2 * (768 + 4 * 768)) + 7690
    )  # adapters + head
    assert 0.01 < trainable / total < 0.02


def test_lora_adapter_saves_alone_and_merges(cifar_root: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from lightning_modules.backbones import create_backbone

    module = classifier("test_resnet", {"strategy": "lora", "rank": 4}, num_classes=4, class_names=CLASSES)
    fit(module, cifar_data(cifar_root), steps=3)
    module.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module(x)
    folder = Path(module.save_adapter(str(tmp_path / "adapter")))
    adapter_bytes = sum(f.stat().st_size for f in folder.iterdir())
    full_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert (folder / "adapter_model.safetensors").is_file() and adapter_bytes < 0.25 * full_bytes
    # the adapter on the frozen base weights gives back the trained model
    base = create_backbone("test_resnet", num_classes=4)
    prefix = "net.base_model.model."
    base_state = {
        k[len(prefix) :].replace(".base_layer", "").replace(".original_module", ""): v
        for k, v in module.state_dict().items()
        if k.startswith(prefix) and ".lora_" not in k and "modules_to_save" not in k
    }
    base.load_state_dict(base_state)
    restored = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), expected)
        merged = module.inference_network()
        assert not any(".lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="already exists"):
        classifier("test_resnet", {"strategy": "lora"}, num_classes=4).save_adapter(str(folder))


def _project_checkpoint(module, datamodule, path: Path, run_model_cfg: dict) -> Path:
    from imagelab.callbacks.run_config import RunConfigInCheckpoint

    run_config = {"model": run_model_cfg, "data": {}}
    trainer = fit(module, datamodule, steps=2, callbacks=[RunConfigInCheckpoint(run_config)])
    trainer.save_checkpoint(path)
    return path


def test_new_head_of_another_size_loads_over_a_checkpoint(cifar_root: Path, tmp_path: Path) -> None:
    from datamodules.cifar10_reader import write_cifar10_like

    # 1) a plain timm state dict with a 7-class head -> a 4-class classifier keeps the backbone, new head
    from lightning_modules.backbones import create_backbone

    source = create_backbone("test_resnet", num_classes=7)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "weights.pth"
    )
    module = classifier(
        "test_resnet", {"strategy": "linear_probe"}, checkpoint_path=str(tmp_path / "weights.pth")
    )
    fit(module, cifar_data(cifar_root), steps=1)
    mine = module.net.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(mine[key], value), key
    assert mine["fc.weight"].shape == (4, source.fc.in_features)

    # 2) one of this project's checkpoints (LoRA on 4 classes) -> fine-tune on 3 other classes, adapters merged
    lora_cfg = {"_target_": "lightning_modules.classifier.ClassifierModule", "backbone": "test_resnet",
                "pretrained": False, "in_chans": 3, "finetune": {"strategy": "lora", "rank": 4}}  # fmt: skip
    trained = classifier("test_resnet", {"strategy": "lora", "rank": 4})
    ckpt = _project_checkpoint(trained, cifar_data(cifar_root), tmp_path / "lora.ckpt", lora_cfg)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["run_config"]["model"]["class_names"] == CLASSES  # the classes travel with the checkpoint
    merged = {k: v.clone() for k, v in trained.eval().inference_network().state_dict().items()}
    three = tmp_path / "three"
    x, y = structured_images(8, seed=3)
    keep = y < 3
    write_cifar10_like(three, x[keep], y[keep], x[keep][:6], y[keep][:6], CLASSES[:3])
    module = classifier("test_resnet", {"strategy": "full"}, checkpoint_path=str(ckpt))
    snap = Snapshot()
    fit(module, cifar_data(three, val_size=6), steps=1, callbacks=[snap])
    for key, value in merged.items():
        if not key.startswith("fc."):
            assert torch.equal(snap.before[f"net.{key}"], value), key
    assert snap.before["net.fc.weight"].shape[0] == 3

    # 3) weights of another architecture are refused with a clear message
    torch.save(
        create_backbone("test_vit", num_classes=4, timm_kwargs={"img_size": 32}).state_dict(),
        tmp_path / "vit.pth",
    )
    wrong = classifier("test_resnet", {"strategy": "full"}, checkpoint_path=str(tmp_path / "vit.pth"))
    with pytest.raises(UserError, match="another architecture"):
        fit(wrong, cifar_data(cifar_root), steps=1)


def test_pretrained_offline_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    from lightning_modules import backbones

    monkeypatch.setattr(
        backbones, "cached_weights_file", lambda cfg: None
    )  # whatever this machine has cached
    with pytest.raises(UserError, match=r"pretrained=true.*not cached and HF_HUB_OFFLINE=1.*checkpoint_path"):
        backbones.create_backbone("test_resnet", num_classes=3, pretrained=True)
    # online, a download that huggingface_hub gives up on (unreachable hub) is one line too, with the remedy

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(backbones, "is_offline_mode", lambda: False)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", unreachable)
    with pytest.raises(UserError, match=r"hub cannot be reached.*model.pretrained=false"):
        backbones.create_backbone("test_resnet", num_classes=3, pretrained=True)
    with pytest.raises(UserError, match="no pretrained weights"):
        backbones.create_backbone("small_cnn", num_classes=3, pretrained=True)
    with pytest.raises(UserError, match="did you mean resnet50"):
        backbones.create_backbone("resnet5O", num_classes=3)


def test_pretrained_is_loaded_when_fitting_not_when_reopening(cifar_root: Path, monkeypatch) -> None:
    """Building (eval/predict) never touches the network; fitting with pretrained=true offline fails clearly."""
    monkeypatch.setattr("lightning_modules.backbones.cached_weights_file", lambda cfg: None)
    module = classifier(
        "test_resnet", {"strategy": "full"}, pretrained=True, num_classes=4, class_names=CLASSES
    )
    assert module.num_classes == 4  # constructed offline without any download
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        fit(module, cifar_data(cifar_root), steps=1)


def test_bad_finetune_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="rank is not an option of finetune=full"):
        classifier("test_resnet", {"strategy": "full", "rank": 4})
    with pytest.raises(UserError, match="unknown finetune strategy"):
        classifier("test_resnet", {"strategy": "adapters"})
    with pytest.raises(UserError, match="matches no Linear/Conv2d"):
        classifier("test_resnet", {"strategy": "lora", "target_modules": ["qkv"]}, num_classes=4)
    with pytest.raises(UserError, match="layer_decay"):
        classifier("test_resnet", {"strategy": "full"}, optimizer={**ADAMW, "layer_decay": 1.5})
    with pytest.raises(UserError, match="rank must be an integer >= 1"):
        classifier("test_resnet", {"_target_": "lightning_modules.finetuning.LoRA", "rank": 0})
    with pytest.raises(UserError, match="is not a FinetuneStrategy"):
        classifier("test_resnet", {"_target_": "torch.nn.Linear"})


class StemAndHead(FinetuneStrategy):
    """A user's own strategy (as in their own package): the stem conv and the head train."""

    name = "stem_and_head"

    def __init__(self, head: str = "fc") -> None:
        self.head = head

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return train_only(
            model, {n for n, _ in model.named_parameters() if n.startswith(("conv1.", self.head))}
        )


def test_a_strategy_of_your_own_is_one_class_and_its_target() -> None:
    """``model.finetune._target_`` names any FinetuneStrategy subclass; its options are its arguments, and the
    plain config (not the object) is what the checkpoint keeps."""
    target = {"_target_": f"{__name__}.StemAndHead", "head": "fc."}
    module = classifier("test_resnet", target, num_classes=4)
    trainable = {n for n, p in module.net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("conv1.", "fc.")) for n in trainable)
    assert module.hparams["finetune"] == target and module.strategy == "stem_and_head"
    norms = {n: m for n, m in module.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    frozen = {n for n, m in norms.items() if not m.weight.requires_grad}
    assert frozen and set(module._eval_module_names) == frozen  # the default: frozen batch norms stay in eval
    assert "conv1.1" in norms and "conv1.1" not in frozen  # the stem's norms train with it
    with pytest.raises(UserError, match="colour is not an option of finetune=stem_and_head"):
        classifier("test_resnet", {**target, "colour": 1})


def test_param_groups_head_lr_layer_decay_and_no_decay() -> None:
    optimizer = {**ADAMW, "lr": 1e-2, "weight_decay": 0.01, "head_lr": 0.5, "layer_decay": 0.5}
    module = classifier("test_vit", {"strategy": "full"}, num_classes=4, optimizer=optimizer)
    groups = module.param_groups()
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(module.net.named_parameters())
    assert by_param[id(named["head.weight"])]["lr"] == 0.5
    lrs = [by_param[id(named[f"blocks.{i}.attn.qkv.weight"])]["lr"] for i in range(6)]
    assert all(later == pytest.approx(2 * earlier) for earlier, later in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(1e-2 * 0.5)  # the last block is one layer group below the head
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(named)


@pytest.mark.slow
def test_cifar10_module_on_a_tiny_official_format_set(cifar_root: Path) -> None:
    data = cifar_data(cifar_root, val_size=8, max_test_images=12)
    module = classifier(
        "small_cnn", {"strategy": "full"}, optimizer={**ADAMW, "lr": 3e-3, "weight_decay": 0.0}
    )
    trainer = fit(module, data, steps=40)
    assert data.class_names == CLASSES and module.class_names == CLASSES
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [56, 8, 12]
    assert sorted(np.bincount(data.splits["val"].labels).tolist()) == [2, 2, 2, 2]  # per-class split
    assert sorted(np.bincount(data.splits["test"].labels).tolist()) == [3, 3, 3, 3]  # balanced test subset
    metrics = trainer.test(module, data, verbose=False)[0]
    assert metrics["test/acc"] >= 0.75, metrics  # colour + stripe direction are easy to learn
    assert {"test/f1_macro", "test/acc_class/cat", "test/loss"} <= set(metrics) and "test/top5" not in metrics

    # strong augmentation + mixup: soft targets on training batches only, and the module trains on them
    mixed = cifar_data(
        cifar_root, val_size=8, augment="strong", mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0}
    )
    module = classifier("small_cnn", {"strategy": "full"})
    trainer = fit(module, mixed, steps=3)
    assert trainer.global_step == 3 and np.isfinite(float(trainer.callback_metrics["train/loss"]))
    trainer.training = True
    x, y = mixed.on_after_batch_transfer(next(iter(mixed.train_dataloader())), 0)
    assert x.shape == (16, 3, 32, 32) and y.shape == (16, 4) and torch.allclose(y.sum(1), torch.ones(16))
    trainer.training = False
    x, y = mixed.on_after_batch_transfer(next(iter(mixed.val_dataloader())), 0)
    assert y.ndim == 1

    # resizing to the backbone's input size, normalisation from timm's data config
    vit = classifier("test_vit", {"strategy": "linear_probe"}, timm_kwargs={})
    resized = cifar_data(cifar_root, image_size="backbone", augment="none", backbone="test_vit")
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(vit, resized, verbose=False)
    assert (
        resized.preprocess_config()["image_size"] == [160, 160]
        and resized.preprocess_config()["mean"] == [0.5] * 3
        and vit.preprocess == resized.preprocess_config()  # the model read the data's preprocessing
    )
    assert next(iter(resized.test_dataloader()))[0].shape[-2:] == (160, 160)


def test_network_is_final_before_callbacks_are_set_up(cifar_root: Path) -> None:
    """Callbacks acting in setup() (channels-last, torch.compile) must see the network that will train."""

    from imagelab.callbacks.final_network import build_module_from_data

    class Probe(pl.Callback):
        def setup(self, trainer, pl_module, stage) -> None:
            build_module_from_data(pl_module, stage)  # what SpeedSwitches and Distillation do first
            self.net = pl_module.net
            self.meta = any(p.is_meta for p in pl_module.parameters())

    module = classifier(
        "test_resnet", {"strategy": "lora", "rank": 4}
    )  # head size unknown until the data is set up
    assert any(
        p.is_meta for p in module.parameters()
    )  # built shape-only until then (cheap for config checks)
    probe = Probe()
    fit(module, cifar_data(cifar_root), steps=1, callbacks=[probe])
    assert probe.net is module.net and not probe.meta
    assert module.backbone_model().get_classifier().modules_to_save["default"].out_features == len(CLASSES)
