"""The AUROC that ShiftClassifier logs is the textbook AUROC of the predictions it stores."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from helpers.sets import TrainedRun
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftlab.models.classifier import ShiftClassifier


class FirstPixel(nn.Module):
    """A 'network' whose logit is the first pixel of the input, so the logits are chosen."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(1, 1)  # Lightning wants parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, 0]


class FixedLogits(Dataset):
    def __init__(self, logits: np.ndarray, labels: np.ndarray, first_row: int) -> None:
        self.logits, self.labels, self.first_row = logits, labels, first_row

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": torch.full((1, 2, 2), float(self.logits[i])),
            "label": torch.tensor(float(self.labels[i])),
            "row": torch.tensor(self.first_row + i),
        }


def test_logged_auroc_equals_sklearn_on_fixed_logits() -> None:
    rng = np.random.default_rng(0)
    domains = {
        # Ties inside and across classes, several batches: the hard cases for a streaming AUROC.
        "ge": (np.round(rng.normal(size=53), 1), rng.integers(0, 2, size=53)),
        "siemens": (rng.normal(size=40), rng.integers(0, 2, size=40)),
        # A weaker, different domain, so a metric filed under the wrong name shows.
        "philips": (-np.arange(30) / 7.0, np.tile([0, 1, 1], 10)),
        # Distinct logits whose float32 sigmoids all tie at 1.0: ranked by the probability they
        # would give AUROC 0.5; ranked by the logits, as shiftlab defines it, 7/9.
        "toshiba": (np.array([18.0, 19.0, 20.5, 22.0, 24.0, 26.0]), np.array([0, 1, 0, 0, 1, 1])),
    }
    names = list(domains)
    loaders, first = [], 0
    for logits, labels in domains.values():
        loaders.append(DataLoader(FixedLogits(logits, labels, first), batch_size=8))
        first += len(labels)
    model = ShiftClassifier(FirstPixel(), val_domains=names, test_domains=names)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    results = trainer.test(model, dataloaders=loaders, verbose=False)

    logged = {k: v for per_loader in results for k, v in per_loader.items()}
    assert set(logged) == {f"test/{d}/auroc" for d in names}
    for name, (logits, labels) in domains.items():
        expected = roc_auc_score(labels, logits.astype(np.float32).astype(np.float64))
        assert logged[f"test/{name}/auroc"] == pytest.approx(expected, abs=1e-12), name
    saturated, labels = domains["toshiba"]
    assert len(set(torch.sigmoid(torch.tensor(saturated, dtype=torch.float32)).tolist())) == 1
    assert logged["test/toshiba/auroc"] == pytest.approx(7 / 9, abs=1e-12)
    # The stored predictions are the logits that went in, tagged with their loader's domain.
    stored = {k: torch.cat([b[k] for b in model.test_predictions]) for k in ("row", "logit")}
    every_logit = np.concatenate([logits for logits, _ in domains.values()]).astype(np.float32)
    assert stored["row"].tolist() == list(range(first))
    np.testing.assert_array_equal(stored["logit"].numpy(), every_logit)
    domain_of_row = torch.cat([b["domain_index"] for b in model.test_predictions]).tolist()
    assert domain_of_row == [i for i, (_, y) in enumerate(domains.values()) for _ in y]


@pytest.mark.slow
def test_run_record_auroc_matches_its_own_predictions(default_run: TrainedRun) -> None:
    """What the report will recompute from predictions.csv is what the run reported."""
    metrics = default_run.metrics()["metrics"]
    predictions = default_run.predictions()
    predictions = predictions[predictions["split"] == "test"]  # after them: source validation
    source, target = default_run.cfg.source, default_run.cfg.target
    domains = sorted(set(predictions["domain"]))
    assert domains == sorted([source, target])
    for domain in domains:
        rows = predictions[predictions["domain"] == domain]
        recomputed = roc_auc_score(rows["label"], rows["logit"])
        # One definition everywhere: the record agrees with its predictions to the digit.
        assert metrics[f"test/{domain}/auroc"] == pytest.approx(recomputed, abs=1e-12), domain
        by_probability = roc_auc_score(rows["label"], rows["probability"])
        assert by_probability == pytest.approx(recomputed, abs=1e-3)
    assert metrics["test/delta_auroc"] == pytest.approx(
        metrics[f"test/{target}/auroc"] - metrics[f"test/{source}/auroc"], abs=1e-12
    )


@pytest.mark.slow
def test_predictions_hold_every_test_sample_once_with_its_manifest_label(
    default_run: TrainedRun,
) -> None:
    every_row = default_run.predictions()
    assert every_row["sample_id"].is_unique
    # The test rows, then the source validation rows that the decision threshold is chosen on
    # (tests/models/test_deployment_metrics.py).
    assert set(every_row["split"]) == {"test", "val"}
    predictions = every_row[every_row["split"] == "test"]
    manifest = default_run.data.manifest()
    test_rows = manifest[manifest["split"] == "test"].set_index("sample_id")
    assert set(predictions["sample_id"]) == set(test_rows.index)
    joined = predictions.join(test_rows, on="sample_id", rsuffix="_manifest")
    assert (joined["label"] == joined["label_manifest"]).all()
    assert (joined["patient_id"] == joined["patient_id_manifest"]).all()
    assert (joined["domain"] == joined["vendor_manifest"]).all()
    assert (predictions["split"] == "test").all()
    np.testing.assert_allclose(
        predictions["probability"], 1 / (1 + np.exp(-predictions["logit"])), rtol=1e-5, atol=1e-7
    )
    counts = pd.Series(default_run.metrics()["samples"]).map(lambda s: s["test"])
    assert predictions["domain"].value_counts().sort_index().to_dict() == counts.to_dict()
