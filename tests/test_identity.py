"""A run's identity does not depend on where shiftlab's code lives: every class or function a config
names by ``_target_`` enters the settings hash and the cache key by its stable name
(``shiftlab.identity.STABLE_NAMES``), so moving one renames no run directory and rebuilds no
cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers.compose import compose_train
from hydra.utils import get_object

from shiftlab import identity
from shiftlab.config import CONF_DIR
from shiftlab.data.cache import cache_key
from shiftlab.identity import STABLE_NAMES, settings_hash


def _shipped_targets() -> set[str]:
    """Every ``_target_`` value in the shipped config tree."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in CONF_DIR.rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return found


def test_every_shipped_shiftlab_target_has_a_stable_name_and_imports() -> None:
    ours = {t for t in _shipped_targets() if t.startswith("shiftlab.")}
    assert ours, "no shiftlab _target_ found in the config tree"
    assert sorted(ours - set(STABLE_NAMES)) == []
    for path in STABLE_NAMES:  # no entry is left behind by a move
        assert callable(get_object(path)), path


def test_stable_names_are_unique() -> None:
    names = list(STABLE_NAMES.values())
    assert len(names) == len(set(names))


def _moved(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    """What a developer does when moving ``old`` to ``new``: rename the key, keep the value."""
    names = dict(STABLE_NAMES)
    names[new] = names.pop(old)
    monkeypatch.setattr(identity, "STABLE_NAMES", names)


def test_moving_a_class_keeps_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_train(tmp_path / "data", tmp_path / "out", "model=smallcnn")
    before = settings_hash(cfg)
    old = cfg.model.net._target_
    cfg.model.net._target_ = "shiftlab.models.networks.SmallCNN"  # the class moved
    assert settings_hash(cfg) != before, "unregistered, a new path is a new identity"
    _moved(monkeypatch, old, "shiftlab.models.networks.SmallCNN")
    assert settings_hash(cfg) == before


def test_moving_a_preprocessor_keeps_the_cache(monkeypatch) -> None:
    preprocess = {"_target_": "shiftlab.data.preprocess.MRIPreprocessor", "size": 64}
    before = cache_key("sha", Path("/data"), preprocess, "files")
    moved = {**preprocess, "_target_": "shiftlab.data.mri.MRIPreprocessor"}
    assert cache_key("sha", Path("/data"), moved, "files") != before
    _moved(monkeypatch, preprocess["_target_"], moved["_target_"])
    assert cache_key("sha", Path("/data"), moved, "files") == before


@pytest.mark.parametrize("shift", ["none", "injection", "noise"])
def test_an_ablation_is_known_by_its_name_as_before_it_was_a_class(
    shift: str, tmp_path: Path
) -> None:
    """The ablations became classes (``shift._target_``); a config of before, with no
    ``_target_``, has the same identity, so their run directories keep their names."""
    cfg = compose_train(tmp_path / "data", tmp_path / "out", f"shift={shift}")
    assert cfg.shift._target_ in identity.TARGETS_LEFT_OUT
    now = settings_hash(cfg)
    del cfg.shift._target_
    assert settings_hash(cfg) == now
