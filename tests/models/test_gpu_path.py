"""The GPU path on CPU: the training options (channels_last, compile, loader workers) and the
GPU benchmark script in its quickest mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers.compose import REPO

from shiftlab.config import CONF_DIR
from shiftlab.data.loading import loader_options, loader_workers, usable_cores
from shiftlab.models.classifier import ShiftClassifier
from shiftlab.models.nodulex import NoduleX


def _script():
    spec = importlib.util.spec_from_file_location(
        "gpu_throughput", REPO / "benchmarks" / "gpu_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_throughput():
    return _script()


@pytest.mark.slow  # the benchmark itself, as the benchmarks in tests/test_benchmarks.py
def test_quick_cpu_run_gives_every_row(gpu_throughput, tmp_path: Path) -> None:
    out = tmp_path / "gpu_throughput.json"
    args = ["--quick", "--device", "cpu", "--networks", "nodulex", "--workers", "0,1"]
    args += ["--cap-s", "0.2", "--steps", "2", "--out", str(out)]
    result = gpu_throughput.benchmark(gpu_throughput.parse_args(args))
    rows = result["rows"]
    assert [(r["precision"], r["channels_last"], r["cudnn"], r["data"]) for r in rows[:3]] == [
        ("32-true", False, "deterministic", "device"),
        ("bf16-mixed", False, "deterministic", "device"),
        ("bf16-mixed", True, "deterministic", "device"),
    ]
    assert rows[3]["cudnn"] == "benchmark"
    assert [r["data"] for r in rows[4:]] == ["loader w0", "loader w1"]
    for row in rows:
        assert row["error"] is None, row
        assert row["case"] == "nodulex@synthetic_ct" and row["input"] == "5x47x47"
        assert row["images_per_s"] > 0 and row["vs_fp32"] > 0
    assert rows[0]["vs_fp32"] == 1
    assert all(0 <= r["data_wait"] <= 1 for r in rows[4:])
    assert json.loads(out.read_text())["rows"] == rows


def test_presets_read_without_hydra_match_hydra(gpu_throughput) -> None:
    """The GPU machine has no Hydra: the script's own YAML reading must give the same sizes."""
    for case in gpu_throughput.CASES:
        dataset = case.dataset if (CONF_DIR / "dataset" / f"{case.dataset}.yaml").exists() else None
        if dataset is None:
            continue
        composed = gpu_throughput._hydra_config(case, dataset)
        read = gpu_throughput._yaml_config(case, dataset)
        assert read[1] == composed[1], case.name  # the network's settings
        assert read[2]["deterministic"] == composed[2]["deterministic"]
        by_class = gpu_throughput.preprocessed_shape(
            composed[0]["preprocess"], composed[0]["input_channels"]
        )
        by_rule = gpu_throughput.preprocessed_shape(
            read[0]["preprocess"], read[0]["input_channels"], use_class=False
        )
        assert by_rule == by_class, case.name


def _classifier(net: torch.nn.Module, **options) -> ShiftClassifier:
    return ShiftClassifier(net, val_domains=["a"], test_domains=["a", "b"], **options).eval()


def test_channels_last_changes_layout_not_logits() -> None:
    torch.manual_seed(0)
    plain = _classifier(NoduleX())
    fast = _classifier(NoduleX(), channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.channels_last
    assert fast.net.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    image = torch.rand(2, 5, 47, 47)
    with torch.no_grad():
        assert torch.allclose(fast(image), plain(image), atol=1e-5)


def test_channels_last_leaves_3d_networks_alone() -> None:
    with pytest.warns(UserWarning, match="channels_last applies to 2D networks"):
        model = _classifier(NoduleX(dims=3), channels_last=True)
    assert not model.channels_last
    assert model(torch.rand(1, 5, 16, 16)).shape == (1,)


def test_compile_keeps_checkpoint_names() -> None:
    """Compiled in place: a checkpoint of a compiled run loads into a plain network."""
    assert set(_classifier(NoduleX(), compile_net=True).state_dict()) == set(
        _classifier(NoduleX()).state_dict()
    )


def test_loader_workers_per_modality_on_cuda_only() -> None:
    per_modality = {"MR": 8, "CT": 2}
    assert loader_workers(0, per_modality, "MR", cuda=False) == 0
    assert loader_workers(3, per_modality, "MR", cuda=False) == 3
    assert loader_workers(0, per_modality, "CT", cuda=True) == min(2, usable_cores() - 1)
    assert loader_workers(1, per_modality, "DX", cuda=True) == 1
    assert loader_options(0, pin_memory=False) == {
        "num_workers": 0,
        "persistent_workers": False,
        "pin_memory": False,
    }
    assert loader_options(4)["persistent_workers"]
