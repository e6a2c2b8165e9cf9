"""The one AUROC definition of shiftlab: the rank (Mann-Whitney) statistic of the logits, in
float64, ties counted half.

The module's logged AUROC, ``metrics.json``, the report and W&B all come from here. Why not
torchmetrics' ``BinaryAUROC``: it ranks its input as given when every value lies in [0, 1] and
its float32 sigmoid otherwise, and a float32 sigmoid ties distinct logits (every logit above
about 17 becomes 1.0), so the same predictions could give two AUROCs. Ranking the logits, which
are what the network outputs, has no such tie; float64 holds every float32 logit exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class RankedScores:
    """Scores sorted once, so the AUROC of any integer weighting of the rows is a few passes.

    With weights w, AUROC = sum over (positive i, negative j) of w_i w_j ([s_i > s_j] + 0.5
    [s_i = s_j]) / (W_pos W_neg): the Mann-Whitney statistic, ties counted half, exactly what
    the trapezoidal ROC area gives. Weights let the report's bootstrap resample patients.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(scores, kind="stable")
        ordered = scores[self.order]
        self.positive = np.asarray(labels)[self.order].astype(bool)
        self.level_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])

    def auroc(self, weights: np.ndarray) -> np.ndarray:
        """AUROC for each row of ``weights`` (replicates x samples); NaN without both classes."""
        w = np.asarray(weights, dtype=np.float64)[:, self.order]
        pos = np.add.reduceat(np.where(self.positive, w, 0.0), self.level_starts, axis=1)
        neg = np.add.reduceat(np.where(self.positive, 0.0, w), self.level_starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        wins = (pos * (below + 0.5 * neg)).sum(axis=1)
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, wins / pairs, np.nan)


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (logits), ties count half; NaN with one class."""
    ranked = RankedScores(np.asarray(scores), np.asarray(labels))
    return float(ranked.auroc(np.ones((1, len(ranked.order))))[0])


class LogitAUROC(Metric):
    """``auroc`` as a torchmetrics metric: logits and labels are gathered (across processes
    too, under DDP) and ranked once per epoch in float64."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.logits.append(logits.detach().flatten().double())
        self.labels.append(labels.detach().flatten().long())

    def compute(self) -> torch.Tensor:
        logits = dim_zero_cat(self.logits).cpu().numpy()
        labels = dim_zero_cat(self.labels).cpu().numpy()
        return torch.tensor(auroc(logits, labels), dtype=torch.float64)
