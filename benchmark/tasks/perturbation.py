"""Genetic perturbation prediction (scGPT paper, Fig. 3a-b; GEARS' evaluation).

A method sees the training part of a Perturb-seq screen (control cells and the cells of the
``train`` and ``val`` conditions, log-normalised) and predicts the mean expression of each
held-out ``test`` condition, e.g. the knockdown of a gene never perturbed in training or a
pair of genes. The task scores the predicted change over control against the observed one
(:mod:`benchmark.metrics.perturbation`), over all genes and over each condition's top-20
differentially expressed (DE) genes, overall, for single and double perturbations apart and
per GEARS subgroup (``single_unseen``, ``combo_seen0/1/2``: how many of a condition's genes
were perturbed in training).

Beside the paper's metrics, the field's since (:mod:`benchmark.metrics.perturbation_field`):
Systema's Pearson-delta against the perturbed centroid (the mean of the training
perturbations' profiles) and centroid accuracy, cell-eval's PDS, DE overlap and VCC score (mae,
PDS and DE overlap normalised against the mean baseline, which predicts that centroid for
every condition), PerturBench's rank; and for every metric a data ceiling
(``<metric>_ceiling``): one half of each test condition's cells scored as the prediction of the
other half.

Method contract: ``f(train, conditions, *, seed, **params) -> AnnData`` with one row per
requested condition (``obs_names`` = the conditions), ``var_names`` = ``train.var_names`` and
log-normalised mean expression in ``X``.

Data: the standard perturbation dataset has obs ``condition`` ("ctrl", "A+ctrl", "A+B") and
``split`` ("train"/"val"/"test" per condition; control is always training data). ``X`` may
hold raw counts (the demo simulator; normalised here with ``normalize_total(1e4)`` and
``log1p``) or log-normalised values (GEARS' processed Adamson/Norman/Replogle sets, used as
they are); which one is recorded in ``train.uns["normalisation"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.io import read_json, write_csv, write_h5ad
from benchmark.metrics.perturbation import (
    CONDITION_METRICS,
    NAN_POLICIES,
    PEARSON_METRICS,
    apply_nan_policy,
    condition_scores,
    mean_scores,
    non_dropout_de,
)
from benchmark.metrics.perturbation_field import (
    FIELD_METRICS,
    FIELD_PEARSON_METRICS,
    HIGHER_IS_BETTER,
    VCC_METRICS,
    field_scores,
    normalised_score,
    perturbed_centroid,
)
from benchmark.tasks.base import Task
from contract.conditions import CTRL, n_genes, normalise_condition, parse_condition, subgroup

log = logging.getLogger(__name__)

N_DE_GENES = 20
"""Number of top DE genes per condition (GEARS' and the paper's choice)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")

PRIOR_KNOWLEDGE_KEYS: tuple[str, ...] = (
    "generator",
    "world_seed",
    "programs",
    "grn",
    "propagation_steps",
)
"""Keys of a simulated set's ``uns["simulation"]`` that methods may see: the gene programs
and the regulatory network play the role of GO annotations. The true effects, split plan and
knockdown strengths are removed before a method sees the data."""


# ----------------------------------------------------------------------------------------
# Data preparation helpers
# ----------------------------------------------------------------------------------------


def _looks_like_counts(X: Any) -> bool:
    """Whether a matrix holds raw counts: non-negative integers with some value above 1."""
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    sample = np.asarray(values[:200_000], dtype=np.float64)
    if sample.size == 0:
        return False
    return bool(np.all(sample >= 0) and np.all(sample == np.round(sample)) and sample.max() > 1)


def log_normalise(adata: ad.AnnData) -> tuple[ad.AnnData, str]:
    """Return a log-normalised copy of ``adata`` (CSR float32) and how it was obtained.

    Raw counts are scaled to 10,000 per cell and ``log1p``-transformed (scanpy); a matrix
    that is not integer-valued is taken as already log-normalised (GEARS' processed sets).
    """
    import scanpy as sc

    out = adata.copy()
    X = out.X
    if _looks_like_counts(X):
        out.X = sp.csr_matrix(X, dtype=np.float32)
        sc.pp.normalize_total(out, target_sum=1e4)
        sc.pp.log1p(out)
        how = "counts -> normalize_total(target_sum=1e4) + log1p"
    else:
        how = "log-normalised as given"
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    out.uns.pop("log1p", None)
    return out, how


def condition_means(adata: ad.AnnData, conditions: list[str], key: str = "condition") -> np.ndarray:
    """Mean expression (rows of ``X``) of the cells of each condition, ``(n_conditions, n_genes)``."""
    labels = adata.obs[key].astype(str).to_numpy()
    out = np.zeros((len(conditions), adata.n_vars), dtype=np.float64)
    for i, condition in enumerate(conditions):
        mask = labels == condition
        if not mask.any():
            raise ValueError(f"condition {condition!r} has no cells in obs[{key!r}]")
        out[i] = np.asarray(adata.X[mask].mean(axis=0)).ravel()
    return out


def de_statistics(
    adata: ad.AnnData, conditions: list[str], *, key: str = "condition"
) -> dict[str, pd.DataFrame]:
    """Every gene's t-test of each condition against control, ranked by |t| (best first).

    The test of :func:`top_de_genes` (GEARS'); per condition a frame with the gene's var
    index (``gene``), ``score`` (t), ``log2fc`` (scanpy's ``logfoldchanges``) and
    ``pval_adj`` (Benjamini-Hochberg).
    """
    import scanpy as sc

    labels = adata.obs[key].astype(str)
    keep = labels.isin([CTRL, *conditions]).to_numpy()
    sub = ad.AnnData(
        X=adata.X[keep],
        obs=pd.DataFrame(
            {"group": pd.Categorical(labels[keep].to_numpy())}, index=adata.obs_names[keep]
        ),
        var=pd.DataFrame(index=adata.var_names),
    )
    sc.tl.rank_genes_groups(
        sub,
        groupby="group",
        groups=list(conditions),
        reference=CTRL,
        method="t-test",
        rankby_abs=True,
        n_genes=adata.n_vars,
        use_raw=False,
    )
    res = sub.uns["rank_genes_groups"]
    index = pd.Index(adata.var_names)
    return {
        c: pd.DataFrame(
            {
                "gene": index.get_indexer(np.asarray(res["names"][c]).astype(str)),
                "score": np.asarray(res["scores"][c], dtype=np.float64),
                "log2fc": np.asarray(res["logfoldchanges"][c], dtype=np.float64),
                "pval_adj": np.asarray(res["pvals_adj"][c], dtype=np.float64),
            }
        )
        for c in conditions
    }


def significant_de_genes(stats: pd.DataFrame, fdr: float = 0.05) -> np.ndarray:
    """cell-eval's real DE genes: FDR below ``fdr``, ranked by |log2 fold change|.

    ``stats`` is one condition's frame of :func:`de_statistics`; ties keep the t-test order.
    """
    sig = stats[stats["pval_adj"] < fdr]
    order = np.argsort(-np.abs(sig["log2fc"].to_numpy()), kind="stable")
    return sig["gene"].to_numpy()[order].astype(np.int64)


def top_de_genes(
    adata: ad.AnnData,
    conditions: list[str],
    *,
    n_top: int | None = N_DE_GENES,
    key: str = "condition",
) -> dict[str, np.ndarray]:
    """Top ``n_top`` DE genes of each condition versus control, as var indices.

    ``n_top=None`` ranks every gene (GEARS' ``rank_genes_groups_cov_all``, from which its
    non-dropout top 20 are taken).

    As GEARS' ``rank_genes_groups_cov_all``: scanpy's ``rank_genes_groups`` with a t-test of
    each condition against the control cells (reference ``"ctrl"``), genes ranked by the
    absolute score. ``adata`` must be log-normalised. A t-test of one group against the
    reference does not depend on the other groups, so only the requested conditions are
    tested.
    """
    n_top = adata.n_vars if n_top is None else min(n_top, adata.n_vars)
    stats = de_statistics(adata, conditions, key=key)
    return {c: stats[c]["gene"].to_numpy()[:n_top] for c in conditions}


def _condition_table(obs: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: its split (and dataset subgroup, when given) and cell count."""
    if "split" not in obs:
        raise KeyError(
            "perturbation dataset lacks obs column 'split' (per condition: 'train', 'val' or "
            f"'test', GEARS' 'simulation' split); it has {list(obs.columns)}"
        )
    frame = pd.DataFrame(
        {
            "condition": obs["condition"].astype(str).to_numpy(),
            "split": obs["split"].astype(str).to_numpy(),
        }
    )
    if "subgroup" in obs:
        frame["subgroup"] = obs["subgroup"].astype(str).to_numpy()
    # control cells are training data whatever their label says
    frame.loc[frame["condition"] == CTRL, "split"] = "train"
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"obs 'split' has values {bad}; expected only {list(SPLITS)}")
    per = frame.groupby("condition", sort=True)
    n_splits = per["split"].nunique()
    mixed = n_splits[n_splits > 1].index.tolist()
    if mixed:
        raise ValueError(
            f"obs 'split' must be constant within a condition; conditions {mixed[:5]} "
            "have cells in several splits"
        )
    table = per.agg(
        split=("split", "first"),
        n_cells=("split", "size"),
        **({"subgroup": ("subgroup", "first")} if "subgroup" in frame else {}),
    )
    for condition in table.index:
        parse_condition(condition)  # syntax check, with a clear error
    if CTRL not in table.index:
        raise ValueError("perturbation dataset has no control cells (condition 'ctrl')")
    return table


def _strip_truth(uns: Mapping[str, Any], normalisation: str) -> dict[str, Any]:
    """The ``uns`` a method may see: prior knowledge only, plus the normalisation note."""
    out: dict[str, Any] = {"normalisation": normalisation}
    sim = uns.get("simulation")
    if isinstance(sim, Mapping):
        out["simulation"] = {k: sim[k] for k in PRIOR_KNOWLEDGE_KEYS if k in sim}
    return out


def vcc_score(user: Mapping[str, float], base: Mapping[str, float]) -> float:
    """cell-eval's Virtual Cell Challenge score: mean of the normalised :data:`VCC_METRICS`.

    ``user`` and ``base`` hold the mean ``mae``, ``pds`` and ``de_overlap`` of a method and
    of the mean baseline (every condition predicted as the mean of the training
    perturbations' profiles, cell-eval's ``baseline`` built from training data only); each is
    normalised by :func:`~benchmark.metrics.perturbation_field.normalised_score`. 0: no
    better than the mean baseline; 1: perfect.
    """
    return float(
        np.mean(
            [
                normalised_score(user[m], base[m], higher_is_better=HIGHER_IS_BETTER[m])
                for m in VCC_METRICS
            ]
        )
    )


# ----------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PerturbationTask(Task):
    """Predict mean expression after unseen single and double genetic perturbations.

    Parameters
    ----------
    nan_policy
        What an undefined Pearson score (a prediction equal to control) counts as when
        averaged: ``"nan"`` (undefined) or ``"zero"`` (GEARS); see :meth:`score`. The
        config's ``tasks.perturbation.metrics.nan_policy``.
    """

    nan_policy: str = "nan"

    name = "perturbation"
    metrics = (*CONDITION_METRICS, *FIELD_METRICS, "vcc_score")
    paper_table = None  # the paper reports these values only in figures (Fig. 3a)
    breakdown = tuple(
        f"{metric}_{group}"
        for group in (
            "single",
            "double",
            "single_unseen",
            "combo_seen0",
            "combo_seen1",
            "combo_seen2",
        )
        for metric in ("pearson_delta", "mse", "rank")
    ) + tuple(f"{metric}_ceiling" for metric in (*CONDITION_METRICS, *FIELD_METRICS))
    required_obs = ("condition",)
    metric_options = ("nan_policy",)

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"perturbation task: metrics.nan_policy {self.nan_policy!r}: expected one of "
                f"{sorted(NAN_POLICIES)}"
            )

    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Split into the training data a method sees and the held-out test truth.

        Returns ``args`` = ``(train, conditions)`` and the truth: ``ctrl_mean``,
        ``truth_mean`` (rows = ``conditions``), ``de_idx`` (top-20 DE gene indices per
        condition, computed on the full data against control), ``de_idx_non_dropout`` (the
        top 20 of the same ranking that are not dropouts, GEARS' definition), ``subgroup`` and
        ``n_genes`` per condition, ``normalisation`` and the log-normalised ``data``.
        """
        del seed  # the split is the dataset's; nothing here is random
        table = _condition_table(adata.obs)
        data, how = log_normalise(adata)
        data.obs["condition"] = data.obs["condition"].astype(str)

        test = table[(table["split"] == "test") & (table.index != CTRL)]
        too_small = test.index[test["n_cells"] < 2].tolist()
        if too_small:
            log.warning("skipping test conditions with fewer than 2 cells: %s", too_small)
        conditions = sorted(test.index[test["n_cells"] >= 2])
        if not conditions:
            raise ValueError("perturbation dataset has no test conditions (obs 'split' == 'test')")

        train_conditions = table.index[table["split"].isin(["train", "val"])]
        train_mask = data.obs["condition"].isin(train_conditions).to_numpy()
        train = data[train_mask].copy()
        train.obs["split"] = pd.Categorical(
            table.loc[train.obs["condition"], "split"].to_numpy(), categories=["train", "val"]
        )
        train.uns = _strip_truth(adata.uns, how)

        seen = set()
        for condition in train_conditions:
            seen.update(parse_condition(condition))
        subgroups = {}
        for condition in conditions:
            given = test.loc[condition, "subgroup"] if "subgroup" in test else None
            if isinstance(given, str) and given not in ("", "nan", "train", "ctrl"):
                subgroups[condition] = given
            else:
                subgroups[condition] = subgroup(condition, seen)

        ctrl_mean = condition_means(data, [CTRL])[0]
        truth_mean = condition_means(data, conditions)
        stats = de_statistics(data, conditions)
        ranking = {c: stats[c]["gene"].to_numpy() for c in conditions}
        de_idx = {c: ranking[c][:N_DE_GENES] for c in conditions}
        de_idx_non_dropout = {
            c: non_dropout_de(ranking[c], truth_mean[i], ctrl_mean, N_DE_GENES)
            for i, c in enumerate(conditions)
        }
        # Systema's reference: the mean of the training perturbations' mean profiles
        train_perturbed = [c for c in train_conditions if c != CTRL]
        if not train_perturbed:
            raise ValueError("perturbation dataset has no perturbed training conditions")
        reference = perturbed_centroid(condition_means(data, sorted(train_perturbed)))
        gene_index = pd.Index(data.var_names.astype(str))
        target_idx = {
            c: [int(i) for i in gene_index.get_indexer(list(parse_condition(c))) if i >= 0]
            for c in conditions
        }
        inputs = {
            "args": (train, list(conditions)),
            "conditions": list(conditions),
            "var_names": data.var_names.to_numpy().astype(str),
            "ctrl_mean": ctrl_mean,
            "truth_mean": truth_mean,
            "de_idx": de_idx,
            "de_idx_non_dropout": de_idx_non_dropout,
            "subgroup": subgroups,
            "n_genes": {c: n_genes(c) for c in conditions},
            "normalisation": how,
            "data": data,
            "reference": reference,
            "real_de": {c: significant_de_genes(stats[c]) for c in conditions},
            "target_idx": target_idx,
        }
        inputs["ceiling"] = self._ceiling(inputs)
        return inputs

    def _ceiling(self, inputs: Mapping[str, Any]) -> dict[str, float]:
        """Each metric's data ceiling: one half of each test condition's cells scored as the
        prediction of the other half (cell-eval's technical-duplicate idea).

        The halves are a seeded random split of each condition's cells (fixed seed 0: the
        ceiling is a property of the data, the same for every method and run).
        """
        data = inputs["data"]
        labels = data.obs["condition"].to_numpy()
        rng = np.random.default_rng(0)
        first, second = [], []
        for condition in inputs["conditions"]:
            rows = rng.permutation(np.flatnonzero(labels == condition))
            half = rows.size // 2
            for part, out in ((rows[:half], first), (rows[half:], second)):
                out.append(np.asarray(data.X[np.sort(part)].mean(axis=0)).ravel())
        halves = dict(inputs, truth_mean=np.vstack(second))
        table = self._score_table(np.vstack(first), halves)
        return {
            f"{k}_ceiling": v
            for k, v in mean_scores(
                table.to_dict("records"), (*CONDITION_METRICS, *FIELD_METRICS), skip_nan=True
            ).items()
            if not k.startswith("n_conditions")
        }

    # -- output handling ------------------------------------------------------------------

    @staticmethod
    def align(output: Any, inputs: Mapping[str, Any]) -> np.ndarray:
        """Check a method's output against the contract; return ``(n_conditions, n_genes)``.

        Rows follow ``inputs["conditions"]``, columns ``inputs["var_names"]``; a method may
        return rows and columns in any order (condition names are matched as spelled, then
        order-insensitively).
        """
        if not isinstance(output, ad.AnnData):
            raise TypeError(
                "a perturbation method must return an AnnData (one row per condition), got "
                f"{type(output).__name__}"
            )
        conditions = list(inputs["conditions"])
        var_names = pd.Index(inputs["var_names"])
        rows = pd.Index(output.obs_names.astype(str))
        if not rows.is_unique:
            raise ValueError("the method's output has duplicate obs_names (conditions)")
        row_of = {c: i for i, c in enumerate(rows)}
        normalised = {}
        for i, c in enumerate(rows):
            try:
                normalised.setdefault(normalise_condition(c), i)
            except ValueError:
                continue
        take = []
        missing = []
        for condition in conditions:
            i = row_of.get(condition, normalised.get(normalise_condition(condition)))
            if i is None:
                missing.append(condition)
            take.append(i)
        if missing:
            raise ValueError(
                f"the method's output lacks {len(missing)} requested condition(s), e.g. "
                f"{missing[:5]}; it has {rows.tolist()[:5]}..."
            )
        cols = pd.Index(output.var_names.astype(str)).get_indexer(var_names)
        if (cols < 0).any():
            absent = var_names[cols < 0].tolist()
            raise ValueError(
                f"the method's output lacks {len(absent)} gene(s) of train.var_names, e.g. "
                f"{absent[:5]}"
            )
        X = output.X
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        values = np.asarray(X, dtype=np.float64)[np.asarray(take)][:, cols]
        if not np.all(np.isfinite(values)):
            raise ValueError("the method's output has non-finite expression values")
        return values

    def per_condition(self, output: Any, inputs: Mapping[str, Any]) -> pd.DataFrame:
        """Scores of every test condition (rows) with its subgroup and number of genes.

        Undefined Pearson values stay NaN here (so ``per_condition.csv`` shows them); the NaN
        policy applies when they are averaged (:meth:`score`).
        """
        return self._score_table(self.align(output, inputs), inputs)

    @staticmethod
    def _score_table(pred: np.ndarray, inputs: Mapping[str, Any]) -> pd.DataFrame:
        """The per-condition table of aligned predictions ``(n_conditions, n_genes)``."""
        rows = []
        for i, condition in enumerate(inputs["conditions"]):
            row = {
                "condition": condition,
                "n_genes": inputs["n_genes"][condition],
                "subgroup": inputs["subgroup"][condition],
            }
            row.update(
                condition_scores(
                    pred[i],
                    inputs["truth_mean"][i],
                    inputs["ctrl_mean"],
                    inputs["de_idx"][condition],
                    de_idx_non_dropout=inputs["de_idx_non_dropout"][condition],
                )
            )
            rows.append(row)
        table = pd.DataFrame(rows)
        conditions = inputs["conditions"]
        field = field_scores(
            pred,
            inputs["truth_mean"],
            inputs["ctrl_mean"],
            inputs["reference"],
            np.vstack([inputs["de_idx"][c] for c in conditions]),
            [inputs["real_de"][c] for c in conditions],
            [inputs["target_idx"][c] for c in conditions],
        )
        for metric in FIELD_METRICS:
            table[metric] = field[metric]
        return table

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Write ``predictions.h5ad`` (the checked, aligned output) and ``per_condition.csv``."""
        values = self.align(output, inputs)
        pred = ad.AnnData(
            X=values.astype(np.float32),
            obs=pd.DataFrame(index=pd.Index(inputs["conditions"], name="condition")),
            var=pd.DataFrame(index=pd.Index(inputs["var_names"], name="gene")),
        )
        pred.obs["subgroup"] = [inputs["subgroup"][c] for c in inputs["conditions"]]
        pred.uns["normalisation"] = inputs["normalisation"]
        outdir = Path(outdir)
        files = [outdir / "predictions.h5ad", outdir / "per_condition.csv"]
        write_h5ad(pred, files[0])
        write_csv(self.per_condition(output, inputs), files[1], index=False)
        return files

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Mean condition scores: overall, ``_single``/``_double`` and ``_<subgroup>``.

        A prediction equal to control has an undefined Pearson score; ``n_pearson_undefined``
        counts such conditions and ``pearson_undefined`` flags them. The NaN policy
        (``nan_policy``, recorded in the scores and stated under the table) decides what they
        count as: ``"zero"`` scores them 0 as GEARS does; ``"nan"`` keeps them undefined, so a
        mean over conditions that includes one is NaN (every method's mean then covers the
        same conditions; the "no change" baseline is NaN throughout, compare it on the MSE).
        """
        del seed
        table = self.per_condition(output, inputs)
        undefined = int(table[list(PEARSON_METRICS)].isna().any(axis=1).sum())
        undefined_pert = int(table[list(FIELD_PEARSON_METRICS)].isna().any(axis=1).sum())
        every = (*PEARSON_METRICS, *FIELD_PEARSON_METRICS)
        rows = [apply_nan_policy(r, self.nan_policy, every) for r in table.to_dict("records")]
        every_metric = (*CONDITION_METRICS, *FIELD_METRICS)
        n = len(inputs["conditions"])
        base_rows = self._score_table(np.tile(inputs["reference"], (n, 1)), inputs).to_dict(
            "records"
        )
        subsets: list[tuple[str, list[int]]] = [("", list(range(n)))]
        for label, k in (("single", 1), ("double", 2)):
            subsets.append((f"_{label}", [i for i, r in enumerate(rows) if r["n_genes"] == k]))
        for name in sorted(table["subgroup"].unique()):
            subsets.append((f"_{name}", [i for i, r in enumerate(rows) if r["subgroup"] == name]))
        scores: dict[str, Any] = {}
        for suffix, idx in subsets:
            if not idx:
                continue
            part = mean_scores([rows[i] for i in idx], every_metric, suffix=suffix)
            base = mean_scores([base_rows[i] for i in idx], VCC_METRICS)
            part[f"vcc_score{suffix}"] = vcc_score(
                {m: part[f"{m}{suffix}"] for m in VCC_METRICS}, base
            )
            scores.update(part)
        scores.update(inputs.get("ceiling", {}))
        reasons = self._undefined_reasons(table)
        if reasons:
            scores["undefined"] = reasons
        scores["n_pearson_undefined"] = undefined
        scores["pearson_undefined"] = undefined > 0
        scores["n_pearson_pert_undefined"] = undefined_pert
        scores["nan_policy"] = self.nan_policy
        return scores

    @staticmethod
    def _undefined_reasons(table: pd.DataFrame) -> dict[str, str]:
        """``{score: reason}`` for the field metrics the data leave undefined (NaN)."""
        reasons: dict[str, str] = {}
        if len(table) < 2:
            for metric in ("centroid_accuracy", "pds", "rank"):
                reasons[metric] = "one test condition: no other condition to tell it apart from"
        no_de = int(table["de_overlap"].isna().sum())
        if no_de:
            reasons["de_overlap"] = (
                f"{no_de} test condition(s) without a significant DE gene (FDR < 0.05)"
            )
        if any(m in reasons for m in VCC_METRICS):
            reasons["vcc_score"] = "a metric it averages is undefined"
        return reasons

    # -- figures ----------------------------------------------------------------------------

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Pearson-delta bars per method and Fig. 3b-style plots for a few test conditions."""
        from benchmark.plots.perturbation import plot_de_changes, plot_metric_bars

        runs = []
        for run_dir in map(Path, run_dirs):
            run_file = run_dir / "run.json"
            if not run_file.exists() or not (run_dir / "predictions.h5ad").exists():
                continue
            run = read_json(run_file)
            if run.get("status") != "ok":
                continue
            scores_file = run_dir / "scores.json"
            scores = read_json(scores_file) if scores_file.exists() else {}
            runs.append((run, scores, run_dir))
        if not runs:
            return []
        out_dir = Path(out_dir)
        dataset = runs[0][0].get("dataset", Path(dataset_path).stem)
        written = []

        by_label: dict[str, list[tuple[dict[str, Any], dict[str, Any], Path]]] = {}
        for run, scores, run_dir in sorted(runs, key=lambda r: (r[0]["method"], r[0]["seed"])):
            by_label.setdefault(run.get("label", run["method"]), []).append((run, scores, run_dir))
        for metric in ("pearson_delta", "pearson_delta_de"):
            labels, means, errors = [], [], []
            for label, group in by_label.items():
                values = [s.get(metric) for _, s, _ in group]
                values = np.array([np.nan if v is None else v for v in values], dtype=float)
                finite = values[~np.isnan(values)]
                labels.append(label)
                means.append(float(finite.mean()) if finite.size else np.nan)
                errors.append(
                    float(finite.std(ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else np.nan
                )
            written.append(
                plot_metric_bars(
                    labels,
                    means,
                    errors,
                    out_dir / f"{metric}.png",
                    metric=metric,
                    title=f"{dataset}: {metric} over test perturbations",
                )
            )

        inputs = self.prepare(ad.read_h5ad(dataset_path), seed=0)
        data = inputs["data"]
        ctrl = inputs["ctrl_mean"]
        predictions = {}
        for label, group in by_label.items():
            run_dir = group[0][2]
            predictions[label] = self.align(ad.read_h5ad(run_dir / "predictions.h5ad"), inputs)
        labels_of = data.obs["condition"].to_numpy()
        for condition in self.example_conditions(inputs):
            i = inputs["conditions"].index(condition)
            de = inputs["de_idx"][condition]
            cells = data.X[labels_of == condition][:, de]
            cells = cells.toarray() if sp.issparse(cells) else np.asarray(cells)
            safe = condition.replace("+", "_").replace("/", "-")
            written.append(
                plot_de_changes(
                    condition,
                    inputs["var_names"][de].tolist(),
                    cells - ctrl[de],
                    {label: pred[i, de] - ctrl[de] for label, pred in predictions.items()},
                    out_dir / f"de_changes_{safe}.png",
                    title=f"{dataset}: {condition} ({inputs['subgroup'][condition]})",
                )
            )
        return written

    @staticmethod
    def example_conditions(inputs: Mapping[str, Any], n: int = 3) -> list[str]:
        """A few test conditions to plot: the strongest observed effect of each subgroup."""
        effect = np.abs(inputs["truth_mean"] - inputs["ctrl_mean"]).sum(axis=1)
        best: dict[str, tuple[float, str]] = {}
        for i, condition in enumerate(inputs["conditions"]):
            group = inputs["subgroup"][condition]
            if group not in best or effect[i] > best[group][0]:
                best[group] = (float(effect[i]), condition)
        ranked = sorted(best.values(), reverse=True)
        return [condition for _, condition in ranked[:n]]


TASK = PerturbationTask()
