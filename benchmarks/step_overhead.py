"""Seconds per training epoch: shiftlab (Hydra, ShiftDataModule, ShiftClassifier, Lightning)
against a minimal hand-written PyTorch loop doing the same work.

    python benchmarks/step_overhead.py                    # synthetic MRI, MRNet2D, batch 50
    python benchmarks/step_overhead.py --epochs 5 --repeats 5 --threads 2
    python benchmarks/step_overhead.py --quick            # a plumbing check, seconds

shiftlab's side is built as ``shiftlab.train`` builds a run (``build_model``,
``build_checkpoints``, ``build_trainer``) from the composed config of the study's grid
(``experiment=paper_grid``: batch 50, Adam at 1e-4, constant learning rate, no progress bar), on
the synthetic MRI set. The hand-written loop does the same work per epoch with plain PyTorch: the
same network (same initial weights), the same DataLoaders over the same cached arrays, the same
random left-right flips, Adam with the same settings, then AUROC on every validation domain and
the source's validation loss, and a ``last`` checkpoint every epoch plus a ``best`` one when the
source AUROC improves (as the run's two checkpoint callbacks do). What is left between the two is
the cost of Lightning's loops, hooks, logging and callbacks, and of the DataModule.

Both run in this process, in alternation (which one goes first alternates), each repeat a fresh
model from the same seed. The first epoch of every repeat is a warm-up and is not timed. Wall and
CPU seconds per epoch are printed; the best repeat of each side is compared (the least disturbed
by other work on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.errors import instantiate
from shiftlab.train import (
    build_checkpoints,
    build_loggers,
    build_model,
    build_trainer,
    prepare_data,
    quiet_library_noise,
)

STUDY_BATCH_SIZE = 50


@dataclass
class Clock:
    """Wall and CPU seconds since it was made."""

    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())

    def since(self, start: Clock) -> Clock:
        return Clock(self.wall - start.wall, self.cpu - start.cpu)


class EpochStarts(L.Callback):
    """The clock at the start of every training epoch."""

    def __init__(self) -> None:
        self.starts: list[Clock] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(Clock.now())


def compose_config(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> DictConfig:
    register_resolvers()
    overrides = [
        "experiment=paper_grid",
        "dataset=synthetic_mri",
        f"model={args.model}",
        f"dataset.synthetic.patients_per_vendor={args.patients}",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={output_dir}",
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.warmup + args.epochs}",
        "trainer.accelerator=cpu",
        f"trainer.enable_progress_bar={str(args.progress_bar).lower()}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def shiftlab_epochs(
    cfg: DictConfig, datamodule: ShiftDataModule, run_dir: Path, warmup: int
) -> Clock:
    """Mean seconds per timed epoch of ``trainer.fit``, the run's own pieces."""
    shutil.rmtree(run_dir, ignore_errors=True)
    model = build_model(cfg, datamodule)
    checkpoint, last = build_checkpoints(cfg, run_dir)
    loggers = build_loggers(cfg, run_dir)
    clock = EpochStarts()
    trainer = build_trainer(cfg, run_dir, loggers, [checkpoint, last, clock])
    trainer.fit(model, datamodule=datamodule)
    total = Clock.now().since(clock.starts[warmup])
    timed = len(clock.starts) - warmup
    return Clock(total.wall / timed, total.cpu / timed)


def hand_epochs(cfg: DictConfig, datamodule: ShiftDataModule, run_dir: Path, warmup: int) -> Clock:
    """The same epochs as a plain PyTorch loop."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as build_model seeds
    net = instantiate(cfg.model.net)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    loss_fn = nn.BCEWithLogitsLoss()
    train_loader = datamodule.train_dataloader()
    val_loaders = datamodule.val_dataloader()
    best_auroc = -1.0
    epochs = int(cfg.trainer.max_epochs)
    start = None
    for epoch in range(epochs):
        if epoch == warmup:
            start = Clock.now()
        net.train()
        epoch_loss = torch.zeros(())
        for batch in train_loader:
            image = batch["image"]
            if datamodule.hflip:
                flip = torch.rand(image.shape[0]) < 0.5
                image = torch.where(flip.view(-1, 1, 1, 1), image.flip(-1), image)
            loss = loss_fn(net(image), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach()
        net.eval()
        aurocs = []
        with torch.inference_mode():  # as Lightning evaluates
            for i, loader in enumerate(val_loaders):
                logits, labels = [], []
                for batch in loader:
                    logits.append(net(batch["image"]))
                    labels.append(batch["label"])
                logits_all, labels_all = torch.cat(logits), torch.cat(labels)
                aurocs.append(float(binary_auroc(logits_all, labels_all.long())))
                if i == 0:
                    loss_fn(logits_all, labels_all)  # the source's validation loss
        state = {
            "epoch": epoch,
            "state_dict": net.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        torch.save(state, run_dir / "last.pt")
        if aurocs[0] > best_auroc:
            best_auroc = aurocs[0]
            torch.save(state, run_dir / "best.pt")
    total = Clock.now().since(start)
    timed = epochs - warmup
    return Clock(total.wall / timed, total.cpu / timed)


def prepare(cfg: DictConfig) -> ShiftDataModule:
    """The run's DataModule with a warm cache, as every run of a grid but the first has it."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        datamodule = prepare_data(cfg)  # generated and ingested on first use
        datamodule.setup("fit")  # builds the cache on first use
    return datamodule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000, help="patients per vendor")
    parser.add_argument("--model", default="mrnet2d", help="conf/model/<name>")
    parser.add_argument("--batch-size", type=int, default=STUDY_BATCH_SIZE)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per repeat")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--progress-bar", action="store_true", help="as a single run shows it")
    parser.add_argument("--data-dir", type=Path, help="reuse generated data (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="small set, SmallCNN, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.model, args.epochs, args.repeats = 60, "smallcnn", 1, 1
    return args


def describe(cfg: DictConfig, datamodule: ShiftDataModule, threads: int, warmup: int) -> str:
    train = datamodule.train_dataloader()
    vals = datamodule.val_dataloader()
    shape = "x".join(str(n) for n in datamodule.arrays.shape[1:])
    return (
        f"{cfg.dataset.name} ({shape}), {cfg.model.name}, batch {train.batch_size}: "
        f"{len(train)} training batches and {len(vals)} validation loaders "
        f"({sum(len(v.dataset) for v in vals)} samples) per epoch; "
        f"{cfg.trainer.max_epochs - warmup} timed epochs after {warmup} warm-up; "
        f"{threads} thread(s)"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # What a run's trainer sets for the whole process (trainer.deterministic=warn), set here for
    # the hand-written loop too, so both sides run the same kernels from the first repeat on.
    torch.use_deterministic_algorithms(True, warn_only=True)
    quiet_library_noise()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # device and stop notices
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        cfg = compose_config(args, data_dir, Path(tmp) / "outputs")
        datamodule = prepare(cfg)
        print(describe(cfg, datamodule, args.threads, args.warmup))
        sides: dict[str, Callable[[], Clock]] = {
            "hand": lambda: hand_epochs(cfg, datamodule, Path(tmp) / "hand", args.warmup),
            "shiftlab": lambda: shiftlab_epochs(
                cfg, datamodule, Path(tmp) / "shiftlab", args.warmup
            ),
        }
        best = {name: Clock(float("inf"), float("inf")) for name in sides}
        print(f"{'repeat':>6} {'hand s/epoch':>13} {'shiftlab s/epoch':>17} {'ratio':>13}")
        print(f"{'':>6} {'(wall; cpu)':>13} {'(wall; cpu)':>17} {'(wall; cpu)':>13}")
        for repeat in range(args.repeats):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            measured = {}
            for name in order:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    measured[name] = sides[name]()
                best[name] = Clock(
                    min(best[name].wall, measured[name].wall),
                    min(best[name].cpu, measured[name].cpu),
                )
            hand, ours = measured["hand"], measured["shiftlab"]
            print(
                f"{repeat + 1:>6} {hand.wall:7.3f}; {hand.cpu:.3f} {ours.wall:11.3f}; "
                f"{ours.cpu:.3f} {ours.wall / hand.wall:7.3f}; {ours.cpu / hand.cpu:.3f}",
                flush=True,
            )
        hand, ours = best["hand"], best["shiftlab"]
        print(f"best s/epoch: hand-written {hand.wall:.3f}, shiftlab {ours.wall:.3f} (wall)")
        print(
            f"overhead ratio (shiftlab / hand-written, per epoch): {ours.wall / hand.wall:.3f} "
            f"wall, {ours.cpu / hand.cpu:.3f} cpu  (target <= 1.05)"
        )


if __name__ == "__main__":
    main()
