"""Methods of perturbation-space expansion and reverse perturbation (scGPT paper, Fig. 3c-g).

Both analyses use the perturbation models as they are: the same functions, the same
fine-tuning and prediction code, the same defaults (the paper's).

- ``perturbation_expansion``: the task's contract is the perturbation task's, so the
  perturbation methods (scGPT, GEARS, the additive and linear baselines) are registered for
  it unchanged; they are asked for every combination of the screen's genes.
- ``reverse_perturbation``: a profile-predicting method is wrapped (:func:`reverse_from`): it
  is trained on the split's training combinations and predicts all candidate combinations;
  each query is then compared with every predicted profile and the candidates are scored by
  the similarity (:func:`response_similarity`). Two baselines rank without a model:
  ``de_genes`` (the naive guess: the query's most differentially expressed target genes) and
  ``random``.

Similarity: the Pearson correlation over genes between the predicted change over control
and the query's observed change (``"pearson_delta"``, the default). The change removes what
every candidate shares (the control profile, which dominates any distance between raw
profiles), and the correlation ignores the size of the effect: fine-tuned models shrink
effects (scGPT's and GEARS' predicted deltas are typically smaller than observed), which
would make a distance favour weak candidates, while the pattern of which genes go up and
down is what identifies the perturbed genes. ``"euclidean"`` (minus the distance between
the profiles) is available for comparison.
"""

from __future__ import annotations

import functools
import inspect
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from baselines._scgpt_common import register_scgpt
from baselines.gears import gears
from baselines.perturbation_simple import additive, linear
from baselines.scgpt_perturbation import scgpt_perturbation
from contract.conditions import CTRL, parse_condition
from contract.registry import register

SIMILARITIES: tuple[str, ...] = ("pearson_delta", "euclidean")
"""How a query is compared with a predicted profile (module docstring)."""

# -----------------------------------------------------------------------------------------
# Expansion: the perturbation methods themselves
# -----------------------------------------------------------------------------------------

register_scgpt("perturbation_expansion")(scgpt_perturbation)
register("perturbation_expansion", "gears", label="GEARS", env="gears")(gears)
register("perturbation_expansion", "additive", label="Additive")(additive)
register("perturbation_expansion", "linear", label="Linear")(linear)


# -----------------------------------------------------------------------------------------
# Reverse perturbation
# -----------------------------------------------------------------------------------------


def control_mean(train: ad.AnnData) -> np.ndarray:
    """Mean expression of the control cells of ``train`` (obs ``condition == "ctrl"``)."""
    mask = (train.obs["condition"].astype(str) == CTRL).to_numpy()
    if not mask.any():
        raise ValueError("training data has no control cells (obs 'condition' == 'ctrl')")
    return np.asarray(train.X[mask].mean(axis=0), dtype=np.float64).ravel()


def _dense(X: Any) -> np.ndarray:
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def response_similarity(
    predicted: np.ndarray, queries: np.ndarray, ctrl: np.ndarray, similarity: str = "pearson_delta"
) -> np.ndarray:
    """Similarity of each query (rows) to each predicted profile (columns).

    Parameters
    ----------
    predicted
        ``(n_candidates, n_genes)`` predicted mean expression.
    queries
        ``(n_queries, n_genes)`` observed mean expression.
    ctrl
        ``(n_genes,)`` control mean.
    similarity
        ``"pearson_delta"``: Pearson correlation of the changes over control (a candidate
        predicted as control, with no change, gets NaN, ranked last); ``"euclidean"``: minus
        the Euclidean distance between the profiles.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    if similarity == "pearson_delta":
        p = predicted - ctrl
        q = queries - ctrl
        p = p - p.mean(axis=1, keepdims=True)
        q = q - q.mean(axis=1, keepdims=True)
        pn = np.linalg.norm(p, axis=1)
        qn = np.linalg.norm(q, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (q @ p.T) / np.outer(qn, pn)
        out[:, pn <= 1e-12 * max(1.0, float(pn.max(initial=0.0)))] = np.nan
        return out
    if similarity == "euclidean":
        sq = (
            (queries**2).sum(1)[:, None]
            + (predicted**2).sum(1)[None, :]
            - 2 * queries @ predicted.T
        )
        return -np.sqrt(np.maximum(sq, 0.0))
    raise ValueError(f"similarity {similarity!r}: expected one of {list(SIMILARITIES)}")


def rank_by_prediction(
    predicted: ad.AnnData,
    train: ad.AnnData,
    candidates: Sequence[str],
    queries: ad.AnnData,
    similarity: str,
) -> pd.DataFrame:
    """Score candidates by the similarity of their predicted profile to each query."""
    genes = train.var_names
    rows = pd.Index(predicted.obs_names.astype(str)).get_indexer(list(candidates))
    if (rows < 0).any():
        raise ValueError("the perturbation model's output lacks some candidate conditions")
    pred = _dense(predicted[:, genes].X)[rows]
    query = _dense(queries[:, genes].X)
    scores = response_similarity(pred, query, control_mean(train), similarity)
    return pd.DataFrame(scores, index=queries.obs_names.astype(str), columns=list(candidates))


def reverse_from(predict: Callable[..., ad.AnnData]) -> Callable[..., pd.DataFrame]:
    """A reverse-perturbation method from a perturbation method ``predict``.

    The returned function takes ``(train, candidates, queries, *, seed, similarity, **p)``:
    ``predict(train, candidates, seed=seed, **p)`` (the same training and prediction, with
    ``predict``'s own defaults), then :func:`rank_by_prediction`. Its signature lists
    ``predict``'s parameters, so the registry checks the config's parameters against them.
    """

    @functools.wraps(predict)
    def method(
        train: ad.AnnData,
        candidates: list[str],
        queries: ad.AnnData,
        *,
        seed: int,
        similarity: str = "pearson_delta",
        **params: Any,
    ) -> pd.DataFrame:
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity {similarity!r}: expected one of {list(SIMILARITIES)}")
        predicted = predict(train, list(candidates), seed=seed, **params)
        return rank_by_prediction(predicted, train, candidates, queries, similarity)

    own = inspect.signature(predict)
    positional = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for n in ("train", "candidates", "queries")
    ]
    keyword = [p for p in own.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    keyword.append(
        inspect.Parameter(
            "similarity", inspect.Parameter.KEYWORD_ONLY, default="pearson_delta", annotation=str
        )
    )
    method.__signature__ = inspect.Signature(positional + keyword)  # type: ignore[attr-defined]
    method.__qualname__ = f"reverse_from({predict.__qualname__})"
    method.__doc__ = (
        f"Reverse perturbation by {predict.__name__}: predict every candidate, rank by "
        "similarity to the query.\n\n" + (inspect.getdoc(predict) or "")
    )
    return method


scgpt_reverse = register_scgpt("reverse_perturbation")(reverse_from(scgpt_perturbation))
gears_reverse = register("reverse_perturbation", "gears", label="GEARS", env="gears")(
    reverse_from(gears)
)
additive_reverse = register("reverse_perturbation", "additive", label="Additive")(
    reverse_from(additive)
)
linear_reverse = register("reverse_perturbation", "linear", label="Linear")(reverse_from(linear))
# no_change and train_mean are not wrapped: they predict one profile for every candidate,
# so every candidate ties for every query.


@register("reverse_perturbation", "de_genes", label="Top-2 DE genes")
def de_genes(
    train: ad.AnnData,
    candidates: list[str],
    queries: ad.AnnData,
    *,
    seed: int,
    min_sd: float = 0.05,
) -> pd.DataFrame:
    """The naive guess: the query's most differentially expressed candidate target genes.

    Each target gene ``g`` gets ``z_g = |query_g - ctrl_g| / max(sd_g, min_sd)`` (``sd_g``:
    the gene's standard deviation over the control cells); a candidate scores the sum of its
    genes' ``z``. The best candidate is therefore the pair of the two most changed target
    genes (the paper's "top-2 DE genes" guess); the rest of the ranking follows the same
    score. A target gene that is not measured has ``z = 0``.

    Parameters
    ----------
    min_sd
        Floor of the control standard deviation (log-normalised units), so that a gene
        barely expressed in control cannot dominate through a tiny denominator.
    """
    del seed  # deterministic
    ctrl_mask = (train.obs["condition"].astype(str) == CTRL).to_numpy()
    if not ctrl_mask.any():
        raise ValueError("training data has no control cells (obs 'condition' == 'ctrl')")
    ctrl_cells = _dense(train.X[ctrl_mask])
    ctrl = ctrl_cells.mean(axis=0)
    sd = np.maximum(ctrl_cells.std(axis=0, ddof=1) if ctrl_cells.shape[0] > 1 else 0.0, min_sd)
    query = _dense(queries[:, train.var_names].X)
    z = np.abs(query - ctrl) / sd  # queries x genes
    column = {g: i for i, g in enumerate(train.var_names.astype(str))}
    scores = np.zeros((queries.n_obs, len(candidates)))
    for j, candidate in enumerate(candidates):
        for gene in parse_condition(candidate):
            if gene in column:
                scores[:, j] += z[:, column[gene]]
    return pd.DataFrame(scores, index=queries.obs_names.astype(str), columns=list(candidates))


@register("reverse_perturbation", "random", label="Random")
def random_ranking(
    train: ad.AnnData, candidates: list[str], queries: ad.AnnData, *, seed: int
) -> pd.DataFrame:
    """Uniformly random scores: the expected rank of the truth is ``(n + 1) / 2``."""
    del train
    # The query ids differ between the task's splits: each split gets its own draw.
    key = zlib.crc32("|".join(map(str, queries.obs_names)).encode())
    rng = np.random.default_rng([seed, key])
    scores = rng.random((queries.n_obs, len(candidates)))
    return pd.DataFrame(scores, index=queries.obs_names.astype(str), columns=list(candidates))


__all__ = [
    "SIMILARITIES",
    "control_mean",
    "de_genes",
    "random_ranking",
    "rank_by_prediction",
    "response_similarity",
    "reverse_from",
]
