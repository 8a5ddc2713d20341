"""Cell-type annotation metrics: accuracy and macro precision / recall / F1 (scikit-learn).

Definitions follow the scGPT paper's evaluation code: ``accuracy_score`` and
``precision_score`` / ``recall_score`` / ``f1_score`` with ``average="macro"``. With
scikit-learn's default label set, a macro average runs over every label that occurs in the
truth *or* in the predictions. That is the paper's definition and the default here
(``labels="union"``), so that measured values are comparable with the published ones.

Consequences, on purpose:

- a query cell type the reference lacks ("unseen" label) stays in the truth; no method can
  predict it, so its cells count as errors and its recall and F1 are 0;
- a label a method predicts but that the truth lacks (a reference-only type, or a method's
  "Unknown") has precision 0 and recall undefined (0, ``zero_division=0``), so it lowers the
  macro averages.

``labels="truth"`` averages over the labels present in the truth only (predictions of other
labels still count as errors of the true label's recall); it is offered for analyses that do
not want to penalise spurious labels twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

HEADLINE_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "macro_f1")
"""Headline metric keys, named as the columns of ``benchmark/paper/annotation.csv``."""


def _as_labels(values: Sequence[str] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of labels, got shape {arr.shape}")
    return arr.astype(str)


def label_set(
    truth: np.ndarray, predicted: np.ndarray, labels: Literal["union", "truth"]
) -> np.ndarray:
    """Sorted labels a macro average runs over (see the module docstring)."""
    if labels == "union":
        return np.unique(np.concatenate([truth, predicted]))
    if labels == "truth":
        return np.unique(truth)
    raise ValueError(f"labels must be 'union' or 'truth', got {labels!r}")


def annotation_scores(
    truth: Sequence[str] | np.ndarray,
    predicted: Sequence[str] | np.ndarray,
    *,
    labels: Literal["union", "truth"] = "union",
    per_class: bool = True,
) -> dict[str, float]:
    """Accuracy, macro precision, recall, F1 and (optionally) the F1 of every class.

    Parameters
    ----------
    truth
        True cell type per cell.
    predicted
        Predicted cell type per cell (same order).
    labels
        ``"union"`` (paper, scikit-learn default): average over labels in truth or
        predictions; ``"truth"``: over labels present in the truth.
    per_class
        Add ``f1_<label>`` for every label of the average.

    Returns
    -------
    ``{"accuracy", "precision", "recall", "macro_f1", "f1_<label>"...}`` as floats.
    """
    y_true = _as_labels(truth, "truth")
    y_pred = _as_labels(predicted, "predicted")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"truth has {y_true.size} labels but predicted has {y_pred.size}; they must match"
        )
    if y_true.size == 0:
        raise ValueError("no cells to score: truth and predicted are empty")
    use = label_set(y_true, y_pred, labels)
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(
            precision_score(y_true, y_pred, labels=use, average="macro", zero_division=0)
        ),
        "recall": float(recall_score(y_true, y_pred, labels=use, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=use, average="macro", zero_division=0)),
    }
    if per_class:
        _, _, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=use, average=None, zero_division=0
        )
        scores.update({f"f1_{label}": float(v) for label, v in zip(use, f1, strict=True)})
    return scores


def row_normalised_confusion(
    truth: Sequence[str] | np.ndarray,
    predicted: Sequence[str] | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Confusion matrix with rows (true types) summing to 1; columns are predicted types.

    ``labels`` orders rows and columns (default: sorted union of both label sets). A true
    type with no cells keeps a row of zeros.
    """
    y_true = _as_labels(truth, "truth")
    y_pred = _as_labels(predicted, "predicted")
    order = np.unique(np.concatenate([y_true, y_pred])) if labels is None else np.asarray(labels)
    counts = confusion_matrix(y_true, y_pred, labels=order).astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return pd.DataFrame(fractions, index=pd.Index(order, name="true"), columns=order)
