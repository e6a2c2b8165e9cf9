"""ShiftClassifier: the one LightningModule shared by every architecture.

Binary classification with BCE on one logit; AUROC per domain for validation and test (the rank
statistic of the logits, ``shiftlab.auroc``), logged as ``val/<domain>/auroc`` and
``test/<domain>/auroc``. Test predictions are kept per sample so the
run record can store them and the report can recompute any metric without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from shiftlab.auroc import LogitAUROC
from shiftlab.models.memory_format import channels_last_batch, first_conv_channels, to_channels_last


class ShiftClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        val_domains: Sequence[str],
        test_domains: Sequence[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        channels_last: bool = False,
        compile_net: bool = False,
    ) -> None:
        """``channels_last``: NHWC memory format for a 2D network and its batches (a GPU speed-up;
        3D networks keep theirs). ``compile_net``: ``torch.compile`` the network in place, so its
        parameter names, hence checkpoints, stay those of the plain network."""
        super().__init__()
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        self.save_hyperparameters(ignore=["net"])
        self.channels_last = channels_last and to_channels_last(net)
        if channels_last and not self.channels_last:
            rank_zero_warn(f"channels_last applies to 2D networks; {type(net).__name__} keeps its")
        self.first_conv_channels = first_conv_channels(net)
        if compile_net:
            net.compile()
        self.net = net
        self.loss = nn.BCEWithLogitsLoss()
        # Dataloader i of a stage holds domain self.domains[stage][i].
        self.domains = {"val": list(val_domains), "test": list(test_domains)}
        self.auroc = nn.ModuleDict(
            {
                stage: nn.ModuleList(LogitAUROC() for _ in names)
                for stage, names in self.domains.items()
            }
        )
        self.test_predictions: list[dict[str, torch.Tensor]] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = channels_last_batch(image, self.first_conv_channels)
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, stage: str, batch: dict, dataloader_idx: int) -> torch.Tensor:
        """Update and log the AUROC of the domain this dataloader holds; return the logits."""
        auroc = self.auroc[stage][dataloader_idx]
        logits = self(batch["image"])
        auroc.update(logits, batch["label"].long())
        self.log(
            f"{stage}/{self.domains[stage][dataloader_idx]}/auroc",
            auroc,
            on_epoch=True,
            add_dataloader_idx=False,
            prog_bar=stage == "val" and dataloader_idx == 0,
        )
        return logits

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self._evaluate("val", batch, dataloader_idx)
        if dataloader_idx == 0:  # the source domain
            self.log("val/loss", self.loss(logits, batch["label"]), add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self._evaluate("test", batch, dataloader_idx)
        rows = batch["row"].cpu()
        self.test_predictions.append(
            {
                "row": rows,
                "domain_index": torch.full_like(rows, dataloader_idx),
                "logit": logits.detach().float().cpu(),
            }
        )

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.scheduler == "none":
            return optimizer
        # Cosine decay to zero over the whole run halved the seed-to-seed spread of ΔAUC.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
