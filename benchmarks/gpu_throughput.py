"""Training images/s of each network at the study's batch size, and the share of a training step
spent waiting for data.

    python benchmarks/gpu_throughput.py [--networks mrnet2d,nodulex] [--compile] [--out PATH]
    python benchmarks/gpu_throughput.py --quick --device cpu    # a plumbing check, any machine

An image is one network input: a series for MRNet2D, a patch or a volume for NoduleX, a radiograph
for DenseNet-121. Input sizes come from the dataset presets (Hydra's composed config where Hydra is
installed, else the same YAML files read directly), never from data on disk; a preset missing from
conf/dataset/ falls back to the size written in CASES. Three phases, every row capped in time and
the whole run in --budget-s:

1. compute: forward, backward and Adam step on a batch already on the device, for fp32 (Lightning's
   32-true), bf16 autocast (bf16-mixed) and bf16 with channels_last (2D networks), with cuDNN as a
   run sets it (trainer.deterministic); then the fastest of them with cudnn.benchmark and no
   determinism, which shows what determinism costs;
2. loader: the fastest deterministic configuration fed by the DataLoader a run uses (CachedBatches
   over a memory-mapped .npy shaped like the preprocessing cache; pinned memory on CUDA) with 0, 4
   and 8 workers. "data wait" is the time blocked in next(iterator) over the wall time of the timed
   steps: 0 means the device never waited for a batch;
3. compile (--compile): the bf16 configuration with torch.compile, once per network (its first
   case), in a child process so that a compile running past --compile-cap-s can be stopped; the
   compile time is reported apart from the throughput.

Each row is printed when it finishes and the JSON (--out) is rewritten after every row, so a run
stopped early keeps what it measured. Needs PyTorch, torchvision and NumPy, plus PyYAML or Hydra.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "shiftlab" / "conf"
if str(REPO) not in sys.path:  # a bare checkout without shiftlab installed (a lent GPU machine)
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from shiftlab.data.loading import cached_dataset, collate_for, loader_options  # noqa: E402
from shiftlab.models.memory_format import (  # noqa: E402
    channels_last_batch,
    first_conv_channels,
    to_channels_last,
)

STUDY_BATCH_SIZE = 50
DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One network at one preset's input size."""

    name: str
    model: str  # conf/model/<model>.yaml
    dataset: str  # conf/dataset/<dataset>.yaml: the input size and the dataset keys the net reads
    default_shape: tuple[int, ...]  # used when that preset does not exist


CASES = (
    Case("mrnet2d@mri_breast", "mrnet2d", "mri_breast", (3, 256, 256)),
    Case("mrnet2d@synthetic_mri", "mrnet2d", "synthetic_mri", (3, 64, 64)),
    Case("nodulex@synthetic_ct", "nodulex", "synthetic_ct", (5, 47, 47)),
    Case("nodulex3d@ct_head", "nodulex3d", "ct_head", (32, 128, 128)),
    Case("densenet121@xray_chest", "densenet121", "xray_chest", (1, 224, 224)),
)


# --- presets: input size, network settings, cuDNN determinism ---------------------------------


@dataclass
class Preset:
    shape: tuple[int, ...]  # one sample, as the cache stores it
    net: dict[str, Any]  # conf/model/<model>.yaml's net, resolved
    deterministic: Any  # trainer.deterministic
    source: str  # where the shape came from


def _hydra_config(case: Case, dataset: str) -> tuple[dict, dict, dict]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from shiftlab.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"dataset={dataset}", f"model={case.model}", "paths.data_dir=/unused"],
        )
    return tuple(
        OmegaConf.to_container(node, resolve=True)
        for node in (cfg.dataset, cfg.model.net, cfg.trainer)
    )


_INTERPOLATION = re.compile(r"^\$\{(?:oc\.select:)?([^,}]+)(?:,([^}]*))?\}$")


def _resolve(value: Any, root: Mapping, here: Mapping) -> Any:
    """The interpolations the presets use (``${dataset.a}``, ``${.a.0}``, ``${oc.select:a,d}``),
    for a machine without OmegaConf; KeyError for one that points outside ``root``."""
    import yaml

    if isinstance(value, dict):
        return {k: _resolve(v, root, here) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, here) for v in value]
    match = _INTERPOLATION.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    path, default = match.groups()
    node: Any = here if path.startswith(".") else root
    try:
        for key in path.lstrip(".").split("."):
            node = node[int(key)] if isinstance(node, list) else node[key]
    except (KeyError, IndexError, ValueError, TypeError):
        if default is None:
            raise KeyError(value) from None
        return yaml.safe_load(default)
    return _resolve(node, root, here)


def _yaml_config(case: Case, dataset: str) -> tuple[dict, dict, dict]:
    import yaml

    def load(*parts: str) -> dict:
        return yaml.safe_load(CONF_DIR.joinpath(*parts).read_text())

    def resolved(node: Mapping, root: Mapping, here: Mapping) -> dict:
        out = {}
        for key, value in node.items():
            try:
                out[key] = _resolve(value, root, here)
            except KeyError:
                continue  # paths and the like, or the network's own default
        return out

    raw = load("dataset", f"{dataset}.yaml")
    root = {"dataset": raw}
    dataset_cfg = resolved(raw, root, raw)
    net = resolved(load("model", f"{case.model}.yaml")["net"], root, {})
    return dataset_cfg, net, load("trainer", "default.yaml")


def preprocessed_shape(
    preprocess: Mapping, input_channels: Any, use_class: bool = True
) -> tuple[int, ...] | None:
    """The preprocessor's own ``shape`` where its class imports, else the same by rule."""
    if use_class:
        try:
            from shiftlab.data.cache import build_preprocessor

            return tuple(int(n) for n in build_preprocessor(dict(preprocess)).shape)
        except Exception:  # no DICOM stack here (a bare GPU machine), or a preset it cannot build
            pass
    for key in ("shape", "patch"):
        if key in preprocess:
            return tuple(int(n) for n in preprocess[key])
    if "size" not in preprocess:
        return None
    size = preprocess["size"]
    plane = (int(size), int(size)) if isinstance(size, int) else tuple(int(n) for n in size)
    depth = preprocess.get("slices") or preprocess.get("depth")
    if depth is None:
        depth = input_channels if isinstance(input_channels, int) else 1
    return (int(depth), *plane)


def read_preset(case: Case) -> Preset:
    present = (CONF_DIR / "dataset" / f"{case.dataset}.yaml").exists()
    # A missing preset still needs some dataset to compose the model config with.
    dataset = case.dataset if present else "synthetic_mri"
    try:
        dataset_cfg, net, trainer = _hydra_config(case, dataset)
        how = "hydra"
    except Exception as exc:  # Hydra not installed (a bare GPU machine), or it cannot compose
        dataset_cfg, net, trainer = _yaml_config(case, dataset)
        how = "yaml" if isinstance(exc, ImportError) else f"yaml; Hydra failed: {_error(exc)}"
    shape = None
    if present:
        preprocess = dataset_cfg.get("preprocess", {})
        shape = preprocessed_shape(preprocess, dataset_cfg.get("input_channels"))
    source = f"conf/dataset/{case.dataset}.yaml via {how}"
    if shape is None:
        shape, source = case.default_shape, f"default: no size in conf/dataset/{case.dataset}.yaml"
    return Preset(shape, net, trainer.get("deterministic"), source)


def build_net(net_cfg: Mapping) -> nn.Module:
    module, _, name = net_cfg["_target_"].rpartition(".")
    kwargs = {k: v for k, v in net_cfg.items() if k != "_target_"}
    return getattr(__import__(module, fromlist=[name]), name)(**kwargs)


def shrink(shape: tuple[int, ...], volumetric: bool, max_side: int, max_plane: int) -> tuple:
    """A smaller input for a CPU check: sides at most ``max_side``, halved (largest first) until
    the spatial elements are at most ``max_plane``. A 2D sample's first axis is channels."""
    spatial = list(shape if volumetric else shape[1:])
    spatial = [min(n, max_side) for n in spatial]
    while np.prod(spatial) > max_plane:
        largest = int(np.argmax(spatial))
        spatial[largest] = max(1, spatial[largest] // 2)
    return tuple(spatial) if volumetric else (shape[0], *spatial)


# --- one training configuration ---------------------------------------------------------------


@dataclass
class Config:
    case: str
    precision: str  # Lightning's trainer.precision
    channels_last: bool
    cudnn: str  # "deterministic" (as a run sets it) or "benchmark" (autotuned, not deterministic)
    data: str = "device"  # "device" (a batch already there) or "loader wN"
    compile: bool = False


@dataclass
class Row:
    network: str
    case: str
    input: str
    precision: str
    channels_last: bool
    compile: bool
    cudnn: str
    data: str
    images_per_s: float | None = None
    vs_fp32: float | None = None
    data_wait: float | None = None
    step_ms: float | None = None
    steps: int | None = None
    peak_gib: float | None = None
    first_batch_s: float | None = None
    compile_s: float | None = None
    error: str | None = None


@dataclass
class Settings:
    device: torch.device
    batch_size: int
    warmup: int
    steps: int
    cap_s: float


@dataclass
class Plan:
    case: Case
    preset: Preset
    shape: tuple[int, ...]
    volumetric: bool


def set_cudnn(mode: str, deterministic: Any) -> None:
    """cuDNN and PyTorch determinism as a run's Trainer sets them, or autotuned without it."""
    determinism = mode == "deterministic" and deterministic not in (None, False)
    torch.use_deterministic_algorithms(determinism, warn_only=deterministic == "warn")
    torch.backends.cudnn.benchmark = mode == "benchmark"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    net: nn.Module, precision: str, channels_last: bool, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step as a run takes it: batch to the device, the DataModule's random flip,
    forward under autocast, BCE, backward, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    dtype = DTYPES[precision]
    first_channels = first_conv_channels(net)

    def step(image: torch.Tensor, label: torch.Tensor) -> None:
        image = image.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True)
        flip = torch.rand(image.shape[0], device=device) < 0.5
        image = torch.where(flip.view(-1, *[1] * (image.dim() - 1)), image.flip(-1), image)
        if channels_last:
            image = channels_last_batch(image, first_channels)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = loss_fn(net(image), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(
    run: Callable[[], None],
    settings: Settings,
    started: float,
    before_timing: Callable[[], None] = lambda: None,
) -> tuple[float, int]:
    """Seconds per step after warm-up, over as many steps as fit in ``settings.cap_s``."""
    for i in range(settings.warmup):
        run()
        if i >= 1 and time.perf_counter() - started > settings.cap_s:
            break  # the first steps autotune; a slow configuration must not eat the budget here
    sync(settings.device)
    probe = time.perf_counter()
    run()
    sync(settings.device)
    per_step = time.perf_counter() - probe
    n = max(2, min(settings.steps, int(settings.cap_s / max(per_step, 1e-6))))
    before_timing()
    begun = time.perf_counter()
    for _ in range(n):
        run()
    sync(settings.device)
    return (time.perf_counter() - begun) / n, n


def batches_needed(settings: Settings) -> int:
    """Batches one loader configuration can draw: first, warm-up, probe and timed steps."""
    return settings.warmup + settings.steps + 3


def measure(
    plan: Plan, config: Config, settings: Settings, loader: DataLoader | None = None
) -> dict[str, Any]:
    """images/s of one configuration; with a loader also its data-wait fraction."""
    device, batch, preset = settings.device, settings.batch_size, plan.preset
    set_cudnn(config.cudnn, preset.deterministic)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    net = build_net(preset.net).to(device).train()
    channels_last = config.channels_last and to_channels_last(net)
    if config.compile:
        net.compile()
    step = make_step(net, config.precision, channels_last, device)
    result: dict[str, Any] = {}
    started = time.perf_counter()
    if loader is None:
        image = torch.randn(batch, *plan.shape, device=device)
        label = torch.randint(0, 2, (batch,), device=device).float()
        if config.compile:  # the first step compiles forward and backward
            step(image, label)
            sync(device)
            result["compile_s"] = time.perf_counter() - started
            started = time.perf_counter()
        seconds, n = timed(lambda: step(image, label), settings, started)
    else:
        batches = iter(loader)
        first = next(batches)
        result["first_batch_s"] = time.perf_counter() - started  # workers' start-up included
        step(first["image"], first["label"])
        waited = [0.0]

        def run() -> None:
            t = time.perf_counter()
            data = next(batches)
            waited[0] += time.perf_counter() - t
            step(data["image"], data["label"])

        seconds, n = timed(run, settings, started, lambda: waited.__setitem__(0, 0.0))
        result["data_wait"] = min(1.0, waited[0] / (seconds * n))
        del batches
    result.update(images_per_s=batch / seconds, step_ms=1000 * seconds, steps=n)
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


# --- the memory-mapped cache stand-in -----------------------------------------------------------


def write_cache(path: Path, shape: tuple[int, ...], batch: int, max_mib: int) -> np.ndarray:
    """A float32 .npy of random samples, memory-mapped as shiftlab's cache is.

    At most ``max_mib`` MiB (at least two batches): the loader draws as many batches as it needs
    by reshuffling, and a run's cache sits in the page cache after its first epoch anyway.
    """
    sample_bytes = 4 * int(np.prod(shape))
    n = int(min(max(2 * batch, (max_mib << 20) // sample_bytes), 16 * batch))
    arrays = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
    rng = np.random.default_rng(0)
    chunk = max(1, (64 << 20) // sample_bytes)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        arrays[start:stop] = rng.standard_normal((stop - start, *shape), dtype=np.float32)
    arrays.flush()
    del arrays
    return np.load(path, mmap_mode="r")


def make_loader(arrays: np.ndarray, settings: Settings, workers: int) -> DataLoader:
    """The training DataLoader of a run (ShiftDataModule._loader) over ``arrays``."""
    n = len(arrays)
    labels = np.random.default_rng(1).integers(0, 2, n).astype(np.float32)
    dataset = cached_dataset(arrays, np.arange(n), labels)  # a run's default: batch-wise reads
    sampler = RandomSampler(
        dataset,
        num_samples=settings.batch_size * batches_needed(settings),
        generator=torch.Generator().manual_seed(0),
    )
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_for(dataset),
        **loader_options(workers, pin_memory=settings.device.type == "cuda"),
    )


# --- the run --------------------------------------------------------------------------------


def describe(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        # What "32-true" means here: PyTorch's defaults, TF32 for convolutions only.
        "tf32": {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            capability=f"{properties.major}.{properties.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["gpu"] = None
    return info


class Report:
    """Rows as they come: printed, and the JSON rewritten atomically after each."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.rows = out, meta, []
        self.started = time.perf_counter()

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        fp32 = next(
            (
                r
                for r in self.rows
                if r.case == row.case
                and r.precision == "32-true"
                and r.data == "device"
                and r.cudnn == "deterministic"
                and not r.compile
                and r.images_per_s
            ),
            None,
        )
        if fp32 and row.images_per_s:
            row.vs_fp32 = row.images_per_s / fp32.images_per_s
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.1f}s] {format_row(row)}", flush=True)
        self.write()
        return row

    def write(self) -> None:
        self.meta["wall_s"] = round(time.perf_counter() - self.started, 1)
        document = {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=2, default=str))
        tmp.replace(self.out)


COLUMNS = (
    ("network", "case", "{}"),
    ("input", "input", "{}"),
    ("precision", "precision", "{}"),
    ("channels_last", "channels_last", "{}"),
    ("compile", "compile", "{}"),
    ("cudnn", "cudnn", "{}"),
    ("data", "data", "{}"),
    ("images/s", "images_per_s", "{:.0f}"),
    ("vs fp32", "vs_fp32", "{:.2f}x"),
    ("data wait", "data_wait", "{:.0%}"),
    ("step ms", "step_ms", "{:.1f}"),
    ("peak GiB", "peak_gib", "{:.1f}"),
)


def _cells(row: Row) -> list[str]:
    cells = []
    for _, key, fmt in COLUMNS:
        value = getattr(row, key)
        if isinstance(value, bool):
            cells.append("yes" if value else "no")
        else:
            cells.append("-" if value is None else fmt.format(value))
    return cells


def format_row(row: Row) -> str:
    text = " ".join(_cells(row))
    if row.compile_s is not None:
        text += f" (compile {row.compile_s:.0f}s)"
    if row.first_batch_s is not None:
        text += f" (first batch {row.first_batch_s:.1f}s)"
    return text + (f"  ERROR {row.error}" if row.error else "")


def markdown(rows: list[Row]) -> str:
    header = [name for name, _, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fastest(report: Report, plan: Plan) -> Config:
    """The case's fastest deterministic configuration measured so far (fp32 if none ran)."""
    measured = [
        r
        for r in report.rows
        if r.case == plan.case.name
        and r.data == "device"
        and r.cudnn == "deterministic"
        and r.images_per_s
        and not r.compile
    ]
    best = max(measured, key=lambda r: r.images_per_s, default=None)
    if best is None:
        return Config(plan.case.name, "32-true", False, "deterministic")
    return Config(plan.case.name, best.precision, best.channels_last, "deterministic")


def run_config(
    report: Report,
    plan: Plan,
    config: Config,
    settings: Settings,
    deadline: float,
    loader: Callable[[], DataLoader] | None = None,
) -> Row:
    row = Row(
        network=plan.case.model,
        case=plan.case.name,
        input=describe(plan.shape),
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        cudnn=config.cudnn,
        data=config.data,
    )
    if time.perf_counter() + settings.cap_s > deadline:
        row.error = "skipped: --budget-s spent"
        return report.add(row)
    try:
        for key, value in measure(plan, config, settings, loader and loader()).items():
            setattr(row, key, value)
    except Exception as exc:  # an out-of-memory or an unsupported kernel: record it, go on
        row.error = _error(exc)
    _free(settings.device)
    return report.add(row)


def compile_in_child(plan: Plan, settings: Settings, cap_s: float, args: argparse.Namespace) -> Row:
    """The bf16 (+ channels_last) configuration compiled, in a child process killed at ``cap_s``."""
    config = fastest_bf16(plan)
    row = Row(
        network=plan.case.model,
        case=plan.case.name,
        input=describe(plan.shape),
        precision=config.precision,
        channels_last=config.channels_last,
        compile=True,
        cudnn=config.cudnn,
        data="device",
    )
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--compile-child",
        json.dumps({"case": plan.case.name, "shape": list(plan.shape)}),
        "--device",
        settings.device.type,
        "--batch-size",
        str(settings.batch_size),
        "--cap-s",
        str(settings.cap_s),
        "--warmup",
        str(settings.warmup),
        "--steps",
        str(settings.steps),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = child.communicate(timeout=cap_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # with inductor's compile workers
        child.communicate()
        row.error = f"compile not finished in {cap_s:.0f}s (--compile-cap-s)"
        return row
    result = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if result is None:
        row.error = "child failed: " + " | ".join(output.strip().splitlines()[-3:])[:300]
        return row
    for key, value in json.loads(result.removeprefix("RESULT ")).items():
        setattr(row, key, value)
    return row


def fastest_bf16(plan: Plan) -> Config:
    return Config(plan.case.name, "bf16-mixed", not plan.volumetric, "deterministic", compile=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter steps")
    parser.add_argument(
        "--networks",
        default="",
        help="comma-separated models or cases (e.g. nodulex,mrnet2d@mri_breast); default all",
    )
    parser.add_argument("--batch-size", type=int, help=f"default {STUDY_BATCH_SIZE}; 4 on CPU")
    parser.add_argument("--workers", help="loader workers to try, default 0,4,8 (0,2 on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--compile-cap-s", type=float, default=90, help="per network")
    parser.add_argument("--cap-s", type=float, help="timed seconds per row (default 4; quick 1)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default 5; quick 1)")
    parser.add_argument("--steps", type=int, help="most timed steps (default 100; quick 10)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="whole run (default 220; quick 50)"
    )
    parser.add_argument("--cache-mib", type=int, default=512, help="largest cache file per case")
    parser.add_argument("--max-side", type=int, help="cap input sides (default: 64 on CPU only)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_throughput.json"
    )
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace, device: torch.device) -> Settings:
    cpu = device.type == "cpu"
    return Settings(
        device=device,
        batch_size=args.batch_size or (4 if cpu else STUDY_BATCH_SIZE),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 5),
        steps=args.steps or (10 if args.quick else 100),
        cap_s=args.cap_s or (1.0 if args.quick else 4.0),
    )


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device here")
    return torch.device(name)


def plans(args: argparse.Namespace, device: torch.device) -> list[Plan]:
    wanted = {w.strip() for w in args.networks.split(",") if w.strip()}
    known = {c.model for c in CASES} | {c.name for c in CASES}
    if unknown := wanted - known:
        raise SystemExit(f"--networks: unknown {sorted(unknown)}; choose from {sorted(known)}")
    chosen = [c for c in CASES if not wanted or c.model in wanted or c.name in wanted]
    max_side = args.max_side or (64 if device.type == "cpu" else None)
    out = []
    for case in chosen:
        preset = read_preset(case)
        volumetric = int(preset.net.get("dims", 2)) == 3
        shape = preset.shape
        if max_side:
            # Small enough for a 2-core CPU; a 3D network is the costly one there.
            shape = shrink(shape, volumetric, max_side, 2048 if volumetric else max_side**2)
        out.append(Plan(case, preset, shape, volumetric))
    return out


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """All three phases; returns what the JSON holds (``meta`` and ``rows``)."""
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    settings = _settings(args, device)
    deadline = time.perf_counter() + (args.budget_s or (50 if args.quick else 220))
    workers = [
        int(w) for w in (args.workers or ("0,2" if device.type == "cpu" else "0,4,8")).split(",")
    ]
    todo = plans(args, device)
    meta = {
        **hardware(),
        "device": str(device),
        "batch_size": settings.batch_size,
        "quick": args.quick,
        "cap_s": settings.cap_s,
        "inputs": {p.case.name: {"shape": list(p.shape), "from": p.preset.source} for p in todo},
        "deterministic": todo[0].preset.deterministic if todo else None,
        "command": " ".join(sys.argv),
    }
    report = Report(args.out, meta)
    print(
        f"{meta.get('gpu') or 'CPU'} | torch {meta['torch']} | CUDA {meta['cuda']} | "
        f"batch {settings.batch_size} | trainer.deterministic={meta['deterministic']}"
    )
    for plan in todo:
        print(f"  {plan.case.name}: input {describe(plan.shape)} ({plan.preset.source})")
    if device.type == "cpu":
        print("  CPU: inputs capped and batch small; the numbers check the plumbing only")
    if device.type == "cuda" and meta["deterministic"] not in (None, False):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as Lightning sets it

    for plan in todo:  # compute
        variants = [("32-true", False), ("bf16-mixed", False)]
        if not plan.volumetric:
            variants.append(("bf16-mixed", True))
        for precision, channels_last in variants:
            config = Config(plan.case.name, precision, channels_last, "deterministic")
            run_config(report, plan, config, settings, deadline)
        best = fastest(report, plan)
        best.cudnn = "benchmark"
        run_config(report, plan, best, settings, deadline)
    with tempfile.TemporaryDirectory(prefix="gpu_throughput-") as tmp:  # loader
        for plan in todo:
            try:
                arrays = write_cache(
                    Path(tmp) / "cache.npy", plan.shape, settings.batch_size, args.cache_mib
                )
            except OSError as exc:
                print(f"  {plan.case.name}: no cache file ({_error(exc)}); loader rows skipped")
                continue
            for n in workers:
                config = fastest(report, plan)
                config.data = f"loader w{n}"
                run_config(
                    report,
                    plan,
                    config,
                    settings,
                    deadline,
                    loader=lambda n=n, arrays=arrays: make_loader(arrays, settings, n),
                )
            del arrays
    if args.compile:  # compile, in child processes; once per network (its first case)
        firsts = {plan.case.model: plan for plan in reversed(todo)}
        for plan in [p for p in todo if firsts[p.case.model] is p]:
            remaining = deadline - time.perf_counter()
            if remaining < 2 * settings.cap_s:
                report.add(
                    Row(
                        plan.case.model,
                        plan.case.name,
                        describe(plan.shape),
                        "bf16-mixed",
                        not plan.volumetric,
                        True,
                        "deterministic",
                        "device",
                        error="skipped: --budget-s spent",
                    )
                )
                continue
            report.add(compile_in_child(plan, settings, min(args.compile_cap_s, remaining), args))
    report.write()
    print()
    print(markdown(report.rows))
    print(f"\nJSON: {args.out}  ({report.meta['wall_s']} s)")
    return {"meta": report.meta, "rows": [asdict(r) for r in report.rows]}


def compile_child(args: argparse.Namespace) -> None:
    """--compile-child: one compiled configuration; prints ``RESULT <json>``."""
    spec = json.loads(args.compile_child)
    case = next(c for c in CASES if c.name == spec["case"])
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    device = _device(args.device)
    preset = read_preset(case)
    plan = Plan(case, preset, tuple(spec["shape"]), int(preset.net.get("dims", 2)) == 3)
    if device.type == "cuda" and preset.deterministic not in (None, False):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    result = measure(plan, fastest_bf16(plan), _settings(args, device))
    print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.compile_child:
        compile_child(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
