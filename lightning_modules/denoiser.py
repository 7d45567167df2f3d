"""LightningModule that trains an image denoiser on ``(noisy, clean)`` batches and reports PSNR/SSIM."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from imagelab.config.instantiation import build_instance
from imagelab.config.run_checkpoint import build_module_from_checkpoint, load_run_checkpoint
from imagelab.core.errors import UserError
from imagelab.core.plain_config import to_plain
from imagelab.tracking.console import say
from imagelab.tracking.image_logging import log_image_panels
from lightning_modules.optim import check_optimization, configure_optimization
from lightning_modules.step_logging import should_log_step

# the defaults of conf/model/optimizer/adam.yaml and conf/model/loss/mse.yaml, for modules built in code
DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "lightning_modules.optim.create_optimizer",
    "_partial_": True,
    "opt": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
}
DEFAULT_LOSS: dict[str, Any] = {"_target_": "torch.nn.MSELoss"}
_SEPARATOR_PX = 4  # white gap between the noisy | denoised | clean columns of a panel


def _psnr_metric() -> PeakSignalNoiseRatio:
    """PSNR per image (dim=(1, 2, 3)) averaged over images, the usual denoising convention."""
    return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))


def _to_uint8_hwc(image: Tensor) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] -> H x W x 3 uint8 array (grayscale repeated to RGB)."""
    array = (image.detach().float().clamp(0, 1).cpu() * 255.0 + 0.5).to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return array.permute(1, 2, 0).contiguous().numpy()


def make_panel(noisy: Tensor, denoised: Tensor, clean: Tensor) -> np.ndarray:
    """Side-by-side uint8 H x (3W + gaps) x 3 panel ``noisy | denoised | clean`` of three (C, H, W) images."""
    columns = [_to_uint8_hwc(t) for t in (noisy, denoised, clean)]
    gap = np.full((columns[0].shape[0], _SEPARATOR_PX, 3), 255, dtype=np.uint8)
    return np.concatenate([columns[0], gap, columns[1], gap, columns[2]], axis=1)


class DenoiserModule(pl.LightningModule):
    """Train/evaluate a denoising network built from the ``net`` node (any ``nn.Module`` mapping (B, C, H, W)
    images to the same shape, e.g. ``lightning_modules.networks.dncnn.DnCNN``; presets in conf/model/net/).

    ``net``, ``loss`` (an ``nn.Module`` called as ``loss(pred, target)``), ``optimizer`` and ``scheduler``
    (``_partial_`` nodes, see ``lightning_modules.optim``) are Hydra ``_target_`` nodes kept as plain dicts in
    the hyper-parameters (checkpoints load with ``weights_only=True``) and instantiated here.

    Batches are ``(noisy, clean)`` float tensors in [0, 1]. Logs ``train/loss`` (per step) and
    ``train/loss_epoch`` (epoch mean); ``val/loss``, ``val/psnr``,
    ``val/ssim``, ``val/psnr_noisy`` (PSNR of the input), ``val/psnr_best`` (best val/psnr so far); the same
    for ``test/`` (no best). Metrics use outputs clamped to [0, 1]. Each validation epoch, panels
    noisy | denoised | clean of the first ``num_panels`` validation images go to the loggers.
    """

    default_objective = ("val/psnr", "max")

    def __init__(
        self,
        net: dict,
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        num_panels: int = 4,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        net, loss, optimizer, scheduler = (to_plain(v) for v in (net, loss, optimizer, scheduler))
        optimizer = optimizer if optimizer is not None else dict(DEFAULT_OPTIMIZER)
        loss = loss if loss is not None else dict(DEFAULT_LOSS)
        num_panels = int(num_panels)
        self.save_hyperparameters(
            {
                "net": net,
                "loss": loss,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "num_panels": num_panels,
                "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path),
            }
        )
        self.net = build_instance(net, nn.Module, "model.net", "torch.nn.Module")
        # the input check in forward(): the network's own channels, else its config's
        self.channels: int | None = getattr(self.net, "channels", net.get("channels"))
        self.loss_fn = build_instance(loss, nn.Module, "model.loss", "torch.nn.Module")
        check_optimization(optimizer, scheduler)  # fail now, not after data setup
        self.num_panels = num_panels

        self.val_psnr = _psnr_metric()
        self.val_psnr_noisy = _psnr_metric()
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_psnr_best = MaxMetric()
        self.val_psnr_best.persistent(True)  # kept in checkpoints so a resumed run remembers its best
        self.test_psnr = _psnr_metric()
        self.test_psnr_noisy = _psnr_metric()
        self.test_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        # val/test loss as a torchmetrics mean weighted by images: exact under DDP with uneven shards
        # (Lightning's self.log(sync_dist=True) mean floors its integer batch count when ranks differ:
        # Lightning-AI/pytorch-lightning#21859)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._panel_samples: list[tuple[Tensor, Tensor, Tensor]] = []
        self._epoch_loss_sum: Tensor | None = None  # train/loss_epoch: sum and count of this epoch's losses
        self._epoch_loss_count = 0
        self._weights_loaded = False

    def setup(self, stage: str) -> None:
        """Give each process fresh metric states: under ddp_spawn on CPU the pickled module's state tensors
        would otherwise live in shared memory and be summed into by every process."""
        for metric in (self.val_psnr, self.val_psnr_noisy, self.val_ssim, self.val_loss):
            metric.reset()
        for metric in (self.test_psnr, self.test_psnr_noisy, self.test_ssim, self.test_loss):
            metric.reset()
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum
        if stage == "fit" and self.hparams.get("checkpoint_path") and not self._weights_loaded:
            self.load_initial_weights(self.hparams["checkpoint_path"])

    def load_initial_weights(self, path: str) -> None:
        """Start from the network weights of another denoiser checkpoint (``model.checkpoint_path``).

        Loaded when fitting starts (never when a checkpoint is re-opened), so a fine-tuned run does not need
        the file later. The network must have the same architecture: a UserError names the settings to use
        (e.g. ``model.net.width`` of a pruned checkpoint written by scripts/compress.py).
        """
        checkpoint, run_cfg = load_run_checkpoint(path, expected_kind=DenoiserModule)
        source = build_module_from_checkpoint(checkpoint, run_cfg).net.state_dict()
        own = self.net.state_dict()
        wrong = [k for k in own if k not in source or source[k].shape != own[k].shape]
        if wrong or len(source) != len(own):
            raise UserError(
                f"model.checkpoint_path={path} holds another network ({dict(run_cfg.model.net)}) than model.net "
                f"({self.hparams['net']}); set model.net to the checkpoint's"
            )
        self.net.load_state_dict(source)
        self._weights_loaded = True
        say(f"weights: network loaded from {path}")

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """Run the network on a (B, C, H, W) batch; raw output, not clamped."""
        if x.ndim != 4 or (self.channels is not None and x.shape[1] != self.channels):
            raise UserError(
                f"the denoiser expects (B, {self.channels}, H, W) images but got shape {tuple(x.shape)}; "
                f"use data with channels={self.channels} (or a model trained for {x.shape[-3]} channels)"
            )
        return self.net(x)

    @torch.no_grad()
    def denoise(self, x: Tensor) -> Tensor:
        """Denoise a (B, C, H, W) batch or one (C, H, W) image; output clamped to [0, 1], no gradients."""
        single = x.ndim == 3
        out = self(x.unsqueeze(0) if single else x).clamp(0.0, 1.0)
        return out[0] if single else out

    # ------------------------------------------------------------------------------------------------- train
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a (noisy, clean) batch; logs ``train/loss``."""
        noisy, clean = batch
        loss = self.loss_fn(self(noisy), clean)
        if should_log_step(self, batch_idx):  # self.log costs ~0.6 ms of CPU: only where a logger sees it
            self.log(
                "train/loss",
                loss,
                on_step=True,  # logged as train/loss every trainer.log_every_n_steps
                on_epoch=False,
                prog_bar=True,
                sync_dist=False,  # rank 0's own loss: no all-reduce on every step
                batch_size=len(noisy),
            )
        return loss

    def on_train_epoch_start(self) -> None:
        """Start this epoch's mean training loss."""
        self._epoch_loss_sum: Tensor | None = None
        self._epoch_loss_count = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Add the step's loss to the epoch's mean (summed on the device: no wait for the GPU)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            n = len(batch[0])
            total = loss.detach().float() * n
            self._epoch_loss_sum = total if self._epoch_loss_sum is None else self._epoch_loss_sum + total
            self._epoch_loss_count += n

    def on_train_epoch_end(self) -> None:
        """Log ``train/loss_epoch``, the epoch's mean training loss (averaged over processes)."""
        if self._epoch_loss_sum is not None and self._epoch_loss_count:
            mean = self._epoch_loss_sum / self._epoch_loss_count
            self.log("train/loss_epoch", mean, on_epoch=True, sync_dist=True)
        self._epoch_loss_sum = None

    # -------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        """Start collecting this epoch's panel samples."""
        self._panel_samples = []

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Update the validation metrics and collect the first ``num_panels`` samples for image panels."""
        noisy, clean = batch
        out = self._eval_step(batch, "val", self.val_psnr, self.val_ssim, self.val_psnr_noisy)
        want = self.num_panels - len(self._panel_samples)
        if want > 0 and self.global_rank == 0 and not self.trainer.sanity_checking:
            for i in range(min(want, noisy.shape[0])):
                self._panel_samples.append((noisy[i].cpu(), out[i].cpu(), clean[i].cpu()))

    def on_validation_epoch_end(self) -> None:
        """Log epoch PSNR/SSIM (synced by torchmetrics), the best PSNR so far, and the image panels."""
        psnr = self._log_epoch_metrics("val", self.val_psnr, self.val_ssim, self.val_psnr_noisy)
        if self.trainer.sanity_checking:
            return
        self.val_psnr_best.update(psnr)
        self.log("val/psnr_best", self.val_psnr_best.compute(), sync_dist=True)
        if self._panel_samples:
            self._log_panels()
        self._panel_samples = []

    def _log_panels(self) -> None:
        """Send ``noisy | denoised | clean`` panels of the collected samples to the loggers."""
        images, captions = [], []
        for i, (noisy, denoised, clean) in enumerate(self._panel_samples):
            images.append(make_panel(noisy, denoised, clean))
            psnr_in = _single_psnr(noisy, clean)
            psnr_out = _single_psnr(denoised, clean)
            captions.append(f"val {i}: noisy {psnr_in:.2f} dB | denoised {psnr_out:.2f} dB | clean")
        log_image_panels(self.trainer, key="val/panels", images=images, captions=captions)

    # -------------------------------------------------------------------------------------------------- test
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Update the test metrics; return the denoised batch (for ``imagelab.tracking.wandb_tables``)."""
        return self._eval_step(batch, "test", self.test_psnr, self.test_ssim, self.test_psnr_noisy)

    def on_test_epoch_end(self) -> None:
        """Log test PSNR/SSIM for the whole test set."""
        self._log_epoch_metrics("test", self.test_psnr, self.test_ssim, self.test_psnr_noisy)

    # ------------------------------------------------------------------------------------------------ helpers
    def _eval_step(
        self,
        batch: tuple[Tensor, Tensor],
        split: str,
        psnr: PeakSignalNoiseRatio,
        ssim: StructuralSimilarityIndexMeasure,
        psnr_noisy: PeakSignalNoiseRatio,
    ) -> Tensor:
        """Loss + metric updates for one val/test batch; returns the clamped output."""
        noisy, clean = batch
        raw = self(noisy)
        loss_metric: MeanMetric = getattr(self, f"{split}_loss")
        loss_metric.update(self.loss_fn(raw, clean).detach().float(), weight=len(noisy))
        out = raw.detach().float().clamp(0.0, 1.0)
        clean = clean.float()
        # in float32 also under mixed precision: SSIM's Gaussian filter is a convolution, which autocast
        # would run in bf16/fp16, too coarse for the local variances SSIM subtracts
        with torch.autocast(device_type=out.device.type, enabled=False):
            psnr.update(out, clean)
            ssim.update(out, clean)
            psnr_noisy.update(noisy.float().clamp(0.0, 1.0), clean)
        return out

    def _log_epoch_metrics(
        self,
        split: str,
        psnr: PeakSignalNoiseRatio,
        ssim: StructuralSimilarityIndexMeasure,
        psnr_noisy: PeakSignalNoiseRatio,
    ) -> Tensor:
        """Compute (torchmetrics syncs across processes), log and reset epoch metrics; returns the PSNR."""
        values = {f"{split}/psnr": psnr.compute(), f"{split}/ssim": ssim.compute()}
        values[f"{split}/psnr_noisy"] = psnr_noisy.compute()
        loss_metric: MeanMetric = getattr(self, f"{split}_loss")
        values[f"{split}/loss"] = loss_metric.compute()
        for metric in (psnr, ssim, psnr_noisy, loss_metric):
            metric.reset()
        # the values are already identical on every process (torchmetrics synced them): sync_dist only
        # averages equal numbers and avoids Lightning's "use sync_dist" warning under DDP
        self.log_dict(values, on_epoch=True, sync_dist=True, prog_bar=split == "val")
        return values[f"{split}/psnr"]

    # ------------------------------------------------------------------------------------------------ predict
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Denoised batch in [0, 1]; ``batch`` is a tensor or a tuple whose first item is the input."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return self.denoise(x)

    # ------------------------------------------------------------------------------------------------- optim
    def configure_optimizers(self) -> Any:
        """Optimizer (no weight decay on biases/norms) and per-step LR schedule from the hparams."""
        return configure_optimization(self, self.net, self.hparams["optimizer"], self.hparams["scheduler"])


def _single_psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB of one image pair in [0, 1] (for panel captions)."""
    mse = torch.mean((pred.float().clamp(0, 1) - target.float()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))
