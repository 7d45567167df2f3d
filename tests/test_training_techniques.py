"""The tutorials' techniques as config switches, checked by behaviour on real bundled data (digits, photos):
EMA of weights, test-time augmentation, checkpoint ensembles, adversarial training / robust evaluation.

Tiny runs are trained once per module, in this process (no interpreter start per run), and shared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from imagelab.core.errors import UserError
from tests.helpers.compose import compose
from tests.helpers.in_process import task_in_process
from tests.helpers.overrides import DIGITS, fast_denoise

# The two-epoch digits run without augmentation: ~94 % test accuracy, seconds on a CPU core.
DIGITS_PLAIN = [*DIGITS, "data.augment=none"]
# A perturbation budget the digits CNN notices (8/255 barely moves its accuracy); alpha = eps/4.
ATTACK = ["attack.eps=0.1", "attack.alpha=0.025"]


def train_run(root: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    """Run the train task in-process into ``root/name``; its metrics.json record (a completed run)."""
    record = task_in_process("train", root / name, *overrides, f"paths.data_dir={root / 'data'}")
    assert record["status"] == "completed", record["error"]
    return record


def evaluate_run(root: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    """Run the eval task in-process into ``root/name``; its metrics.json record."""
    return task_in_process("eval", root / name, *overrides, "logger=none", f"paths.data_dir={root / 'data'}")


def ckpt_list(*records: dict[str, Any]) -> str:
    """``ckpt_path=[a,b,...]`` of the runs' best checkpoints."""
    return "ckpt_path=[" + ",".join(r["best_checkpoint"] for r in records) + "]"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one intra-op thread is faster for these tiny models
    yield tmp_path_factory.mktemp("techniques")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plain(root: Path) -> dict[str, Any]:
    return train_run(root, "plain", [*DIGITS_PLAIN, "seed=1"])


@pytest.fixture(scope="module")
def ema(root: Path) -> dict[str, Any]:
    return train_run(
        root, "ema", [*DIGITS_PLAIN, "seed=2", "callbacks=[default,ema]", "callbacks.ema.decay=0.95"]
    )


@pytest.fixture(scope="module")
def adversarial(root: Path) -> dict[str, Any]:
    """Same seed and epochs as ``plain``, trained on PGD-3 examples (eps 0.1)."""
    attack = [f"callbacks.adversarial.{a}" for a in ATTACK]
    return train_run(
        root,
        "adversarial",
        [*DIGITS_PLAIN, "seed=1", "adversarial=pgd", "callbacks.adversarial.attack.steps=3", *attack],
    )


@pytest.fixture(scope="module")
def denoisers(root: Path) -> list[dict[str, Any]]:
    return [train_run(root, f"denoiser{s}", [*fast_denoise("none"), f"seed={s}"]) for s in (1, 2)]


# ------------------------------------------------------------------------------------------------- unit
def test_fgsm_step_matches_a_hand_computed_step() -> None:
    from lightning_modules.adversarial import FGSM, attack_batch

    # logits = W @ normalised pixels, two pixels, two classes; normalisation mean 0.5, std 0.25
    w = torch.tensor([[1.0, -2.0], [-3.0, 0.5]])
    x_pix = torch.tensor([[0.3, 0.9]])
    mean, std = torch.tensor(0.5), torch.tensor(0.25)
    x = ((x_pix - mean) / std).view(1, 1, 1, 2)
    y = torch.tensor([0])

    def model(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1) @ w.T

    # by hand: dCE/dlogits = softmax - onehot; d/dpixel = (dCE/dlogits @ W) / std; FGSM = pixel + eps * sign
    probs = torch.softmax(model(x), dim=-1)
    grad = ((probs - torch.tensor([[1.0, 0.0]])) @ w) / std
    eps = 0.05
    expected = ((x_pix + eps * grad.sign()).clamp(0, 1) - mean) / std
    adv = attack_batch(model, x, y, FGSM(eps=eps, random_start=False), mean, std)
    assert torch.allclose(adv.flatten(1), expected, atol=1e-6)
    # at the box edge the step is clipped: pixel 0.98 + 0.05 -> 1.0
    edge = ((torch.tensor([[0.3, 0.98]]) - mean) / std).view(1, 1, 1, 2)
    adv_edge = attack_batch(model, edge, y, FGSM(eps=eps, random_start=False), mean, std)
    assert (adv_edge.flatten() * std + mean).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_stays_in_the_eps_ball_and_the_pixel_box(norm: str) -> None:
    from lightning_modules.adversarial import PGD, attack_batch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    pixels = torch.rand(6, 3, 8, 8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1), torch.tensor([0.2, 0.3, 0.25]).view(3, 1, 1)
    x, y = (pixels - mean) / std, torch.randint(0, 5, (6,))
    eps = 0.05 if norm == "Linf" else 0.5
    attack = PGD(eps=eps, alpha=eps / 4, steps=10, random_start=True, norm=norm)
    adv = attack_batch(net, x, y, attack, mean, std) * std + mean
    delta = (adv - pixels).flatten(1)
    size = delta.abs().max(dim=1).values if norm == "Linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and (size > 0).all()
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    loss = torch.nn.functional.cross_entropy
    assert loss(net((adv - mean) / std), y) > loss(net(x), y)  # the attack increases the loss
    assert all(p.grad is None for p in net.parameters())  # and leaves the parameters' gradients alone


def test_dihedral_transforms_are_eight_exact_inverses() -> None:
    from lightning_modules.tta import ImageOutputs, TTANet, dihedral, inverse_dihedral

    x = torch.rand(2, 1, 5, 7)  # not square: quarter turns swap H and W
    images = [dihedral(x, k) for k in range(8)]
    assert len({tuple(t.flatten().tolist()) for t in images}) == 8  # eight different transforms
    for k, t in enumerate(images):
        assert torch.equal(inverse_dihedral(t, k), x)
    identity = torch.nn.Identity()
    assert torch.allclose(TTANet(identity, "x8", ImageOutputs())(x), x, atol=1e-6)  # identity stays identity


def test_classifier_tta_averages_the_probabilities_of_the_flipped_images() -> None:
    from lightning_modules.tta import LogitOutputs, TTANet

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 6, 3))
    x = torch.rand(5, 2, 4, 6)
    expected = (net(x).softmax(-1) + net(torch.flip(x, dims=(-1,))).softmax(-1)) / 2
    logits = TTANet(net, "flip", LogitOutputs())(x)
    assert torch.allclose(
        logits.softmax(-1), expected, atol=1e-6
    )  # valid logits of the averaged probabilities
    assert torch.allclose(logits.exp().sum(-1), torch.ones(5), atol=1e-6)


def test_ema_decay_ramps_up_to_its_cap() -> None:
    from lightning_modules.ema import ema_decay

    values = [float(ema_decay(0.99, 10, torch.tensor(n))) for n in (0, 10, 100, 10_000)]
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(11 / 20)
    assert values == sorted(values) and values[-1] == pytest.approx(0.99)
    assert float(ema_decay(0.99, 0, torch.tensor(0))) == pytest.approx(0.99)


def test_bad_tta_and_attack_options_are_user_errors() -> None:
    from imagelab.tasks.ensemble import checkpoint_paths
    from lightning_modules.adversarial import Attack
    from lightning_modules.tta import transforms_of

    with pytest.raises(UserError, match="tta"):
        transforms_of("x4")
    with pytest.raises(UserError, match="norm"):
        Attack(norm="L1")
    with pytest.raises(UserError, match="more than once"):
        checkpoint_paths(["a.ckpt", "a.ckpt"])


# ---------------------------------------------------------------------------------------------- EMA
@pytest.mark.slow
def test_ema_weights_are_saved_marked_and_scored_by_eval(root: Path, ema: dict[str, Any]) -> None:
    import lightning.pytorch as pl

    from imagelab.config.instantiation import instantiate_node
    from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint

    checkpoint, run_cfg = load_run_checkpoint(ema["best_checkpoint"])
    assert checkpoint["weights"] == "ema" and checkpoint["ema"]["decay"] == 0.95
    assert checkpoint["ema"]["updates"] > 0
    raw, averaged = checkpoint["current_model_state"], checkpoint["state_dict"]
    assert raw.keys() == averaged.keys()
    diff = max(
        (raw[k].float() - averaged[k].float()).abs().max().item() for k in raw if raw[k].is_floating_point()
    )
    assert diff > 1e-4  # the EMA is not the raw weights

    def test_loss(state: dict[str, torch.Tensor]) -> float:
        module = build_module_from_checkpoint({**checkpoint, "state_dict": state}, run_cfg)
        datamodule = instantiate_node(run_cfg.data, "data")
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.test(module, datamodule=datamodule, verbose=False)
        return float(trainer.callback_metrics["test/loss"])

    scored = evaluate_run(root, "eval_ema", [f"ckpt_path={ema['best_checkpoint']}"])["metrics"]["test/loss"]
    assert scored == pytest.approx(test_loss(averaged), abs=1e-5)
    assert abs(scored - test_loss(raw)) > 1e-4
    assert ema["metrics"]["test/loss"] == pytest.approx(scored, abs=1e-5)  # the run's own test, too


# --------------------------------------------------------------------------------- ensembles, TTA
@pytest.mark.slow
def test_digit_ensemble_is_at_least_its_mean_member(
    root: Path, plain: dict, ema: dict, adversarial: dict, capsys: pytest.CaptureFixture
) -> None:
    m = evaluate_run(root, "eval_ensemble", [ckpt_list(plain, ema, adversarial)])["metrics"]
    members = [m[f"member{i}/test/acc"] for i in range(3)]
    assert members[0] == pytest.approx(plain["metrics"]["test/acc"], abs=1e-6)
    assert m["test/acc"] >= sum(members) / 3
    out = capsys.readouterr().out
    assert "member 2" in out and "ensemble of 3" in out


@pytest.mark.slow
def test_photo_ensemble_and_x8_tta_improve_psnr(root: Path, denoisers: list[dict]) -> None:
    m = evaluate_run(root, "eval_photos", [ckpt_list(*denoisers), "tta=x8", "baselines=[]"])["metrics"]
    members = [m["member0/test/psnr"], m["member1/test/psnr"]]
    assert m["no_tta/test/psnr"] >= sum(members) / 2  # ensemble of 2 vs its mean member
    assert m["test/psnr"] >= m["no_tta/test/psnr"]  # x8 self-ensemble vs plain
    single = evaluate_run(
        root, "eval_single_tta", [f"ckpt_path={denoisers[0]['best_checkpoint']}", "tta=x8", "baselines=[]"]
    )
    assert single["metrics"]["test/psnr"] >= single["metrics"]["no_tta/test/psnr"]


@pytest.mark.slow
def test_denoise_files_with_an_ensemble_and_tta(root: Path, denoisers: list[dict]) -> None:
    import numpy as np
    from omegaconf import OmegaConf
    from skimage import data as skdata

    from datamodules.image_io import read_image, write_image
    from imagelab.tasks.inference import denoise_files

    clean = skdata.camera()[100:196, 200:296].astype(np.float32) / 255.0
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape).astype(np.float32)
    write_image(root / "in" / "camera.png", (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8))

    def psnr(ckpts: list[str], tta: str) -> float:
        out = root / f"out_{len(ckpts)}_{tta}"
        cfg = OmegaConf.create(
            {
                "ckpt_path": ckpts,
                "input": str(root / "in"),
                "output": str(out),
                "overwrite": True,
                "tile": 512,
            }
        )
        cfg.update({"overlap": 32, "device": "cpu", "tta": tta})
        denoise_files(cfg)
        result = read_image(out / "camera.png").astype(np.float32) / 255.0
        return float(10 * np.log10(1.0 / np.mean((result - clean) ** 2)))

    paths = [d["best_checkpoint"] for d in denoisers]
    single = psnr(paths[:1], "none")
    assert psnr(paths, "x8") >= single and psnr(paths[:1], "x8") >= single


@pytest.mark.slow
def test_predict_ensemble_averages_the_members_probabilities(
    root: Path, plain: dict, ema: dict, capsys: pytest.CaptureFixture
) -> None:
    from omegaconf import OmegaConf

    from imagelab.tasks.prediction import predict_files

    digits = sorted((root / "data" / "digits_png").rglob("*.png"))[::300][:5]
    folder = root / "predict_in"
    for path in digits:
        (folder / path.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())

    def probabilities(ckpts: list[str]) -> dict[str, dict[str, float]]:
        cfg = OmegaConf.create({"ckpt_path": ckpts, "input": str(folder), "top_k": 10, "device": "cpu"})
        rows = predict_files(cfg)["predictions"]
        return {name: dict(top) for name, top in rows}

    a, b = probabilities([plain["best_checkpoint"]]), probabilities([ema["best_checkpoint"]])
    both = probabilities([plain["best_checkpoint"], ema["best_checkpoint"]])
    for name, probs in both.items():
        for cls, p in probs.items():
            assert p == pytest.approx((a[name][cls] + b[name][cls]) / 2, abs=1e-5)


@pytest.mark.slow
def test_ensemble_of_a_classifier_and_a_denoiser_is_refused(plain: dict, denoisers: list[dict]) -> None:
    from imagelab.tasks.ensemble import load_members

    with pytest.raises(UserError, match="ensemble members differ"):
        load_members([plain["best_checkpoint"], denoisers[0]["best_checkpoint"]])


# ------------------------------------------------------------------------------------------- adversarial
@pytest.fixture(scope="module")
def plain_attacked(root: Path, plain: dict) -> tuple[dict[str, Any], str]:
    """eval.py attack=pgd (PGD-10, eps 0.1) of the normally trained digits model: metrics and printout."""
    import contextlib
    import io

    attack = ["attack=pgd", "attack.steps=10", *ATTACK]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        record = evaluate_run(root, "eval_attack", [f"ckpt_path={plain['best_checkpoint']}", *attack])
    return record["metrics"], buffer.getvalue()


@pytest.mark.slow
def test_pgd_accuracy_is_at_most_fgsm_at_most_clean(plain_attacked: tuple[dict[str, Any], str]) -> None:
    m, out = plain_attacked
    assert m["test/acc_pgd"] <= m["test/acc_fgsm"] <= m["test/acc"]
    assert m["test/acc_pgd"] < m["test/acc"] - 0.1  # eps 0.1 really hurts a normally trained model
    assert "clean" in out and "FGSM" in out and "PGD-10" in out


@pytest.mark.slow
def test_adversarial_training_raises_pgd_accuracy(
    root: Path, plain_attacked: tuple[dict[str, Any], str], adversarial: dict
) -> None:
    robust = adversarial["metrics"]
    assert "val/acc_pgd" in robust and "test/acc_pgd" in robust
    attack = ["attack=pgd", "attack.steps=10", *ATTACK]
    ckpt = f"ckpt_path={adversarial['best_checkpoint']}"
    trained = evaluate_run(root, "eval_attack_adversarial", [ckpt, *attack])["metrics"]
    assert trained["test/acc_pgd"] > plain_attacked[0]["test/acc_pgd"] + 0.1  # same seed, same epochs


# ------------------------------------------------------------------------------------------ distillation
# a quarter of the teacher's parameters; 5 epochs: over 2 (one of them warm-up) the two students barely part
# (KL 0.51 vs 0.46, either way by seed), over 5 the distilled one is ~4x closer (0.06 vs 0.23)
STUDENT = [*DIGITS_PLAIN, "seed=3", "model.timm_kwargs.widths=[8,16,32]", "trainer.max_epochs=5"]


@pytest.mark.slow
def test_distilled_student_is_closer_to_its_teacher(root: Path, plain: dict) -> None:
    """Assertion chosen for robustness: after the same 5 epochs from the same seed, the student trained with
    the teacher is closer to it (KL(teacher || student) on the validation digits) than the student trained on
    the labels alone. Accuracy is not compared: over 2 epochs the KD student, pulled towards soft targets, can
    trail the other by a few points either way."""
    import lightning.pytorch as pl

    from imagelab.config.instantiation import instantiate_node
    from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
    from lightning_modules.distillation import kd_loss

    teacher_ckpt = plain["best_checkpoint"]
    kd = train_run(root, "student_kd", [*STUDENT, f"distill.teacher={teacher_ckpt}", "distill.alpha=0.9"])
    alone = train_run(root, "student_alone", STUDENT)
    assert {"train/loss_kd", "train/loss_hard", "val/kl_teacher"} <= kd["metrics"].keys()
    teacher = build_module_from_checkpoint(*load_run_checkpoint(teacher_ckpt))

    class KLToTeacher(pl.Callback):
        def __init__(self) -> None:
            self.total, self.count = 0.0, 0

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            x = batch[0]
            self.total += float(kd_loss(pl_module(x), teacher(x), 1.0)) * len(x)
            self.count += len(x)

    def kl(record: dict[str, Any]) -> float:
        checkpoint, run_cfg = load_run_checkpoint(record["best_checkpoint"])
        student = build_module_from_checkpoint(checkpoint, run_cfg)
        meter = KLToTeacher()
        trainer = pl.Trainer(
            logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[meter]
        )
        trainer.validate(student, datamodule=instantiate_node(run_cfg.data, "data"), verbose=False)
        return meter.total / meter.count

    with_teacher, without = kl(kd), kl(alone)
    assert 0.0 < kd["metrics"]["val/kl_teacher"] < without  # logged each epoch (here: the last one)
    assert with_teacher < without


# ------------------------------------------------------------------------------ fine-tuning presets
def test_finetune_presets_carry_their_learning_rate_and_can_be_overridden() -> None:
    def optimizer(*overrides: str) -> dict[str, Any]:
        cfg = compose("train", ["model=classifier_vit", "data=digits", *overrides])
        return dict(cfg.model.optimizer) | {"strategy": cfg.model.finetune._target_.rsplit(".", 1)[1]}

    assert optimizer("finetune=full")["lr"] == 1e-4  # full: the model's own (pretrained ViT) setting
    lora = optimizer("finetune=lora", "model.finetune.rank=4")
    assert lora["lr"] == 5e-3 and lora["strategy"] == "LoRA" and lora["opt"] == "adamw"
    assert optimizer("finetune=lora", "model.optimizer.lr=2e-3")["lr"] == 2e-3  # the command line wins
    probe = optimizer("finetune=linear_probe")
    assert probe["lr"] == 1e-2 and probe["weight_decay"] == 0.0
    assert optimizer("finetune=bitfit")["lr"] == 5e-3
    assert optimizer("experiment=cifar10_vit_lora")["lr"] == 5e-3  # the experiment takes its preset lr
