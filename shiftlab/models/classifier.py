"""ShiftClassifier: the one LightningModule shared by every architecture.

Binary classification with BCE on one logit; AUROC per domain for validation and test (the rank
statistic of the logits, ``shiftlab.auroc``), logged as ``val/<domain>/auroc`` and
``test/<domain>/auroc``. Test predictions, and the source validation predictions of the last
validation (the threshold of the metrics beyond AUROC is chosen on them), are kept per sample so
the run record can store them and the report can recompute any metric without retraining.

The optimiser and its schedule are configs that Hydra builds (``optim``, the ``scheduler`` group:
``conf/train.yaml``, ``conf/scheduler/``), kept as plain mappings in the module's hyperparameters
so a checkpoint holds no code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from shiftlab.auroc import LogitAUROC
from shiftlab.models.memory_format import channels_last_batch, first_conv_channels, to_channels_last

# Keys of a scheduler config that go to Lightning's lr_scheduler entry, not to the schedule.
LIGHTNING_SCHEDULE_KEYS = ("interval", "frequency", "monitor")


class ShiftClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        val_domains: Sequence[str],
        test_domains: Sequence[str],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile_net: bool = False,
    ) -> None:
        """``optimizer``: a partial optimiser config (``_target_``, ``_partial_: true`` and its
        arguments), called with the network's parameters; needed only to train. ``scheduler``: a
        partial schedule config called with the optimiser, plus Lightning's ``interval``
        (``frequency``, ``monitor``) and ``run_length_argument``, the argument that receives the
        run's length in intervals; None or a null ``_target_``: a constant learning rate.
        ``channels_last``: NHWC memory format for a 2D network and its batches (a GPU speed-up;
        3D networks keep theirs). ``compile_net``: ``torch.compile`` the network in place, so its
        parameter names, hence checkpoints, stay those of the plain network."""
        super().__init__()
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
        self.source_val_predictions: list[dict[str, torch.Tensor]] = []

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

    def on_validation_epoch_start(self) -> None:
        self.source_val_predictions = []

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self._evaluate("val", batch, dataloader_idx)
        if dataloader_idx == 0:  # the source domain
            self.log("val/loss", self.loss(logits, batch["label"]), add_dataloader_idx=False)
            self.source_val_predictions.append(
                {"row": batch["row"].cpu(), "logit": logits.detach().float().cpu()}
            )

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

    def configure_optimizers(self) -> Any:
        if self.hparams.optimizer is None:
            raise ValueError("ShiftClassifier needs an optimizer config to train (conf: optim)")
        optimizer = instantiate(dict(self.hparams.optimizer), _convert_="all")(self.parameters())
        spec = dict(self.hparams.scheduler or {})
        if spec.get("_target_") is None:
            return optimizer
        lightning = {key: spec.pop(key) for key in LIGHTNING_SCHEDULE_KEYS if key in spec}
        length_argument = spec.pop("run_length_argument", None)
        length = {}
        if length_argument:
            steps = lightning.get("interval", "epoch") == "step"
            length[length_argument] = (
                self.trainer.estimated_stepping_batches if steps else self.trainer.max_epochs
            )
        schedule = instantiate(spec, _convert_="all")(optimizer, **length)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, **lightning}}
