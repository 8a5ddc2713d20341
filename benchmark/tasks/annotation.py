"""Cell-type annotation: train on labelled reference cells, predict the query cells' types.

Dataset contract: obs ``cell_type`` and ``split`` (``"reference"`` / ``"query"``).

Protocol (scGPT paper, Methods "Cell type annotation"): a method learns from the reference
and labels the query; accuracy and macro precision / recall / F1 are computed on the query
(:mod:`benchmark.metrics.annotation`), mean +- SE over 5 seeds. The paper's 5 runs differ by
the random train / validation partition of the reference (the official tutorial holds out
10% with ``train_test_split(test_size=0.1)``): here the seed draws that partition, stratified
by cell type, and records it in ``reference.obs["train_val"]`` (``"train"`` / ``"val"``) so
that every method that early-stops or selects a checkpoint uses the same validation cells.

Unseen labels: a query cell type that the reference lacks stays in the truth (its cells are
errors for every method), is listed in ``annotation.json`` as ``unseen_query_labels``, is
logged as a warning and counted in the scores (``n_unseen_query_labels``,
``frac_query_cells_unseen``, and ``accuracy_seen_labels`` = accuracy on the cells whose type
the reference has). Macro averages use the paper's label set (truth or predicted); see
:mod:`benchmark.metrics.annotation`.

What the method sees: ``reference`` with ``cell_type`` and ``train_val``; ``query`` without
``cell_type`` and without any other obs column that is a one-to-one relabelling of it (e.g. a
source's original label column). A method may write arrays into ``query.obsm``: the first new
``X_<name>`` array is saved as ``embedding.npy`` (used for the UMAP figure), every other new
array as ``<key>.npy``, or ``<key>.csv`` with named columns when the method also sets
``query.uns["<key>_columns"]`` (TOSICA's pathway attention).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.io import write_csv, write_json, write_npy
from benchmark.metrics.annotation import HEADLINE_METRICS, annotation_scores
from benchmark.tasks.base import Task

log = logging.getLogger(__name__)

LABEL_KEY = "cell_type"
SPLIT_KEY = "split"
TRAIN_VAL_KEY = "train_val"

MIN_CELL_TYPES = 2
"""Cell types the reference and the query need. A one-type reference leaves nothing to
learn (every prediction is that type), so the task refuses it; a one-type query makes the
macro averages (over cell types) the scores of one type, so they are undefined there and only
accuracy is reported."""

MACRO_METRICS: tuple[str, ...] = ("precision", "recall", "macro_f1")
"""The scores that average over cell types."""


def train_val_partition(labels: np.ndarray, *, seed: int, val_fraction: float = 0.1) -> np.ndarray:
    """Stratified random train / validation partition of reference cells.

    Each cell type puts ``round(val_fraction * n)`` of its ``n`` cells into validation, but
    always keeps at least one cell in training (a type with one cell is train only).

    Returns
    -------
    Array of ``"train"`` / ``"val"``, one per cell.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    out = np.full(labels.size, "train", dtype=object)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_val = min(int(np.floor(val_fraction * idx.size + 0.5)), idx.size - 1)
        if n_val > 0:
            out[rng.choice(idx, size=n_val, replace=False)] = "val"
    return out.astype(str)


def _label_copies(obs: pd.DataFrame, labels: pd.Series) -> list[str]:
    """obs columns (besides the label) that map one-to-one onto the labels."""
    copies = []
    for col in obs.columns:
        if col == LABEL_KEY:
            continue
        values = obs[col]
        if not (
            isinstance(values.dtype, pd.CategoricalDtype)
            or values.dtype == object
            or pd.api.types.is_string_dtype(values)
        ):
            continue
        pairs = pd.DataFrame({"a": values.astype(str).to_numpy(), "b": labels.to_numpy()})
        if (
            pairs.groupby("a")["b"].nunique().max() == 1
            and pairs.groupby("b")["a"].nunique().max() == 1
        ):
            copies.append(col)
    return copies


def predictions_array(output: Any, n_cells: int) -> np.ndarray:
    """Check a method's output (one label per query cell) and return it as a string array."""
    arr = np.asarray(output, dtype=object)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1 or arr.size != n_cells:
        raise ValueError(
            f"method returned predictions of shape {np.shape(output)}; expected one label per "
            f"query cell ({n_cells},)"
        )
    missing = [i for i, v in enumerate(arr) if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise ValueError(
            f"method returned {len(missing)} missing predictions (None/NaN), first at query "
            f"cell {missing[0]}; every query cell needs a label"
        )
    return arr.astype(str)


@dataclass(frozen=True, kw_only=True)
class AnnotationTask(Task):
    """Reference -> query cell-type annotation (see the module docstring).

    Parameters
    ----------
    val_fraction
        Share of each reference cell type drawn into validation (``train_val``; the official
        tutorial's 10%).
    """

    val_fraction: float = 0.1

    name = "annotation"
    metrics = HEADLINE_METRICS
    paper_table = "annotation.csv"
    required_obs = (LABEL_KEY, SPLIT_KEY)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                f"{self.name} task: val_fraction must be in [0, 1), got {self.val_fraction}"
            )

    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Split into reference (with ``train_val``) and unlabelled query; keep the truth."""
        split = adata.obs[SPLIT_KEY].astype(str).to_numpy()
        is_ref, is_query = split == "reference", split == "query"
        if not is_ref.any() or not is_query.any():
            found = sorted(pd.unique(split).tolist())
            raise ValueError(
                f"task {self.name!r}: obs[{SPLIT_KEY!r}] needs cells with 'reference' and "
                f"'query'; found values {found}"
            )
        labels = adata.obs[LABEL_KEY].astype(str)
        if labels.isin(["nan", "None", ""]).any():
            raise ValueError(
                f"task {self.name!r}: obs[{LABEL_KEY!r}] has missing labels "
                f"({int(labels.isin(['nan', 'None', '']).sum())} cells)"
            )
        copies = _label_copies(adata.obs, labels)
        if copies:
            log.info("hiding obs columns %s from the query: they copy %s", copies, LABEL_KEY)

        reference = adata[is_ref].copy()
        reference.obs[LABEL_KEY] = pd.Categorical(labels[is_ref].to_numpy())
        reference.obs[TRAIN_VAL_KEY] = pd.Categorical(
            train_val_partition(
                labels[is_ref].to_numpy(), seed=seed, val_fraction=self.val_fraction
            ),
            categories=["train", "val"],
        )
        query = adata[is_query].copy()
        truth = labels[is_query].to_numpy().astype(str)
        query.obs = query.obs.drop(columns=[LABEL_KEY, *copies])

        reference_labels = sorted(np.unique(reference.obs[LABEL_KEY].astype(str)).tolist())
        if len(reference_labels) < MIN_CELL_TYPES:
            raise ValueError(
                f"task {self.name!r}: the reference has {len(reference_labels)} cell type "
                f"{reference_labels}; annotation needs at least {MIN_CELL_TYPES} (with one, "
                "every method predicts it and the scores measure nothing)"
            )
        query_labels = sorted(np.unique(truth).tolist())
        unseen = sorted(set(query_labels) - set(reference_labels))
        if unseen:
            n_unseen = int(np.isin(truth, unseen).sum())
            log.warning(
                "%s: query cell types %s (%d of %d cells) are absent from the reference; "
                "they stay in the truth and count as errors",
                self.name,
                unseen,
                n_unseen,
                truth.size,
            )
        return {
            "args": (reference, query),
            "truth": truth,
            "cells": query.obs_names.to_numpy().astype(str),
            "reference_labels": reference_labels,
            "query_labels": query_labels,
            "unseen_query_labels": unseen,
            "obsm_before": sorted(query.obsm.keys()),
        }

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Write ``predictions.csv``, new ``query.obsm`` arrays and ``annotation.json``."""
        outdir = Path(outdir)
        predicted = predictions_array(output, len(inputs["truth"]))
        frame = pd.DataFrame(
            {"cell": inputs["cells"], "predicted": predicted, "true": inputs["truth"]}
        )
        written = [outdir / "predictions.csv"]
        write_csv(frame, written[0], index=False)

        query: ad.AnnData = inputs["args"][1]
        obsm_files: dict[str, str] = {}
        new_keys = [k for k in query.obsm.keys() if k not in set(inputs["obsm_before"])]
        embedding_done = False
        for key in new_keys:
            values = query.obsm[key]
            values = values.to_numpy() if isinstance(values, pd.DataFrame) else np.asarray(values)
            if values.ndim != 2 or values.shape[0] != query.n_obs:
                raise ValueError(
                    f"query.obsm[{key!r}] has shape {values.shape}; expected ({query.n_obs}, d)"
                )
            columns = query.uns.get(f"{key}_columns")
            if key.startswith("X_") and not embedding_done:
                path = outdir / "embedding.npy"
                write_npy(values.astype(np.float32), path)
                embedding_done = True
            elif columns is not None and len(columns) == values.shape[1]:
                path = outdir / f"{key}.csv"
                table = pd.DataFrame(values, index=inputs["cells"], columns=list(map(str, columns)))
                write_csv(table.rename_axis("cell"), path)
            else:
                path = outdir / f"{key}.npy"
                write_npy(values, path)
            obsm_files[key] = path.name
            written.append(path)

        meta = {
            "reference_labels": inputs["reference_labels"],
            "query_labels": inputs["query_labels"],
            "unseen_query_labels": inputs["unseen_query_labels"],
            "obsm_files": obsm_files,
        }
        written.append(outdir / "annotation.json")
        write_json(meta, written[-1])
        return written

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Paper metrics on the query, per-class F1 and the unseen-label counts.

        With one cell type in the query the macro averages are NaN and listed with their
        reason under ``"undefined"`` (``{score: reason}``), which the table shows.
        """
        truth = inputs["truth"]
        predicted = predictions_array(output, len(truth))
        scores: dict[str, Any] = dict(annotation_scores(truth, predicted))
        query_labels = inputs["query_labels"]
        if len(query_labels) < MIN_CELL_TYPES:
            why = (
                f"the query has one cell type ({query_labels[0]!r}): a macro average over "
                f"cell types needs at least {MIN_CELL_TYPES}"
            )
            for key in MACRO_METRICS:
                scores[key] = float("nan")
            scores["undefined"] = dict.fromkeys(MACRO_METRICS, why)
        seen = ~np.isin(truth, inputs["unseen_query_labels"])
        scores["n_query_cells"] = float(truth.size)
        scores["n_unseen_query_labels"] = float(len(inputs["unseen_query_labels"]))
        scores["frac_query_cells_unseen"] = float(1.0 - seen.mean())
        scores["accuracy_seen_labels"] = (
            float((truth[seen] == predicted[seen]).mean()) if seen.any() else float("nan")
        )
        return scores

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Confusion matrices, embedding UMAPs and a metric bar chart (see plots module)."""
        from benchmark.plots.annotation import annotation_figures

        return annotation_figures(
            run_dirs, out_dir, metrics=self.metrics, title=f"{self.name}: {Path(dataset_path).stem}"
        )


TASK = AnnotationTask()
