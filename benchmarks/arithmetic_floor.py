"""The quick start's arithmetic against this CPU's peak: how near its training runs to the peak,
and the least time its arithmetic can take here, whatever runs it.

    python benchmarks/arithmetic_floor.py           # the quick start's run: synthetic MRI, MRNet2D
    python benchmarks/arithmetic_floor.py --quick   # a plumbing check: small set, SmallCNN

The run is composed as ``python -m shiftlab.train`` composes it (no override but the folders),
and its data are generated, ingested and cached as the run does. Its arithmetic is counted by
``torch.utils.flop_counter.FlopCounterMode`` on the run's own network and batches: the
floating-point operations of the convolutions and matrix products, forward and backward, for
one training batch and one evaluation batch, then scaled by the run's sample counts (every
epoch's training and validation samples, and the test samples of every domain). BatchNorm,
pooling, activations and Adam are not counted, so the count is a lower bound.

The CPU's peak is the best rate of a large float32 matrix product (``torch.mm``, n = 2048), the
kind of kernel oneDNN lowers convolutions to. Alternating with it in this process, one epoch of
the run's training steps (forward, backward, Adam on the run's batches) is timed. The best
repeat of each is kept. Printed: the run's arithmetic, the training steps' rate and its ratio to
the peak, and the seconds the run's arithmetic needs at the peak. No implementation that
computes the same numbers on this CPU can be faster than that.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shiftlab.config import CONF_DIR, register_resolvers
from shiftlab.data.datamodule import ShiftDataModule
from shiftlab.errors import instantiate
from shiftlab.train import prepare_data, quiet_library_noise

PEAK_SIZE = 2048  # the matrix product's n: large enough for the best blocked kernel


def compose_config(data_dir: Path, output_dir: Path, quick: bool) -> DictConfig:
    register_resolvers()
    overrides = [f"paths.data_dir={data_dir}", f"paths.output_dir={output_dir}"]
    if quick:
        overrides += [
            "model=smallcnn",
            "dataset.synthetic.patients_per_vendor=60",
            "trainer.max_epochs=1",
        ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def prepare(cfg: DictConfig) -> ShiftDataModule:
    """The run's DataModule (``shiftlab.train.prepare_data``), its data generated, ingested and
    cached on first use."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        datamodule = prepare_data(cfg)
        datamodule.setup("fit")
        datamodule.setup("test")
    return datamodule


def flops_per_sample(
    net: nn.Module, image: torch.Tensor, label: torch.Tensor
) -> tuple[float, float]:
    """Counted operations per sample of a training step (forward and backward) and of an
    evaluation (forward)."""
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    with FlopCounterMode(display=False) as train:
        loss_fn(net(image), label).backward()
    net.zero_grad()
    net.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as evaluate:
        net(image)
    count = image.shape[0]
    return train.get_total_flops() / count, evaluate.get_total_flops() / count


def peak_rate(repeats: int = 5) -> float:
    """Operations per second of the best of ``repeats`` float32 matrix products."""
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    torch.mm(a, b)  # warm-up: the kernel's first call pays its set-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * PEAK_SIZE**3 / best


def training_epoch_seconds(
    net: nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict]
) -> float:
    """Seconds of one epoch of training steps over ``batches``."""
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    start = time.perf_counter()
    for batch in batches:
        loss = loss_fn(net(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="reuse generated data (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="small set, SmallCNN, one repeat")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the run's trainer sets it
    quiet_library_noise()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(args.data_dir or Path(tmp) / "data", Path(tmp) / "outputs", args.quick)
        datamodule = prepare(cfg)
        train_loader = datamodule.train_dataloader()
        train_batches = list(train_loader)
        train_samples = sum(len(batch["label"]) for batch in train_batches)
        val = sum(len(loader.dataset) for loader in datamodule.val_dataloader())
        test = sum(len(loader.dataset) for loader in datamodule.test_dataloader())
        epochs = int(cfg.trainer.max_epochs)
        L.seed_everything(cfg.seed, verbose=False)
        net = instantiate(cfg.model.net)
        optimizer = instantiate(cfg.optim)(net.parameters())
        first = train_batches[0]
        train_per_sample, eval_per_sample = flops_per_sample(net, first["image"], first["label"])
        shape = "x".join(str(n) for n in first["image"].shape[1:])
        print(
            f"{cfg.dataset.name} ({shape}), {cfg.model.name}, batch {train_loader.batch_size}: "
            f"{train_samples} training and {val} validation samples per epoch x {epochs} epochs, "
            f"{test} test samples; {torch.get_num_threads()} thread(s)"
        )
        print(
            f"counted per sample: {train_per_sample / 1e9:.3f} GFLOP training step, "
            f"{eval_per_sample / 1e9:.3f} GFLOP evaluation"
        )
        training = train_per_sample * train_samples * epochs
        evaluation = eval_per_sample * (val * epochs + test)
        print(
            f"the run's arithmetic: training {training / 1e12:.2f} TFLOP, validation and test "
            f"{evaluation / 1e12:.2f} TFLOP"
        )
        peak, epoch = 0.0, float("inf")
        for repeat in range(repeats):
            if repeat % 2 == 0:
                peak = max(peak, peak_rate())
                epoch = min(epoch, training_epoch_seconds(net, optimizer, train_batches))
            else:
                epoch = min(epoch, training_epoch_seconds(net, optimizer, train_batches))
                peak = max(peak, peak_rate())
        achieved = train_per_sample * train_samples / epoch
        print(
            f"best of {repeats}: matrix-product peak {peak / 1e9:.1f} GFLOP/s, training steps "
            f"{achieved / 1e9:.1f} GFLOP/s ({epoch:.2f} s per epoch); ratio {achieved / peak:.2f}"
        )
        print(
            f"the run's arithmetic at the peak: {(training + evaluation) / peak:.1f} s "
            f"(training {training / peak:.1f} s); training at the measured rate: "
            f"{epoch * epochs:.1f} s"
        )


if __name__ == "__main__":
    main()
