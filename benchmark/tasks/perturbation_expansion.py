"""Perturbation-space expansion (scGPT paper, Fig. 3c-e).

A perturbation model trained on a screen's training conditions predicts the mean response of
every single and pairwise combination of the screen's target genes (Norman: 105 genes ->
5,565 conditions, of which ~5% were observed). The predicted responses (change over the
control mean) are embedded (UMAP for the figure), clustered with Leiden on their kNN graph,
and each cluster is named by its dominant gene: the gene shared by most of its combinations.

The paper can only show the map. On a simulated screen the task also scores it:

- ``ari_programs`` / ``nmi_programs``: agreement of the Leiden clusters with the true response
  programs of the combinations (the set of gene programs their genes belong to: ``"P3"`` for a
  single or a within-family pair, ``"P3+P7"`` for a pair across families; the simulator's
  ``uns["simulation"]["family"]``);
- ``pearson_delta_truth`` (``_double``): held-out accuracy of the predicted unseen
  combinations (the screen's ``test`` conditions) against the simulated noise-free change
  (``uns["simulation"]["true_delta"]``); ``pearson_delta`` / ``pearson_delta_de`` score them
  against the observed cells, as the perturbation task does (also on real data). An
  undefined correlation (a prediction equal to control) counts 0, as in GEARS' evaluation.
- ``dominant_share``: the mean share of a cluster's combinations that contain its dominant
  gene (1 = every cluster is "gene X + anything", the structure the paper describes).

Method contract: the perturbation task's ``f(train, conditions, *, seed, **params) ->
AnnData``; ``conditions`` are all the combinations.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.io import read_json, write_csv, write_h5ad
from benchmark.metrics.perturbation import condition_scores, pearson
from benchmark.tasks.base import Task
from benchmark.tasks.perturbation import PerturbationTask
from benchmark.tasks.reverse_perturbation import candidate_conditions
from contract.conditions import normalise_condition, parse_condition, perturbed_genes

log = logging.getLogger(__name__)

#: Target genes whose predicted expression the paper draws over the map (Fig. 3e).
PAPER_MARKER_GENES: tuple[str, ...] = ("KLF1", "CNN1")


def dominant_gene(conditions: Sequence[str]) -> tuple[str, float]:
    """The gene perturbed in most of ``conditions`` and the share of them that contain it.

    Ties go to the alphabetically first gene.

    Raises
    ------
    ValueError
        For an empty list or conditions that perturb no gene.
    """
    counts: Counter[str] = Counter()
    for condition in conditions:
        counts.update(parse_condition(condition))
    if not counts:
        raise ValueError("dominant_gene: no perturbed gene among the conditions")
    gene = min(counts, key=lambda g: (-counts[g], g))
    return gene, counts[gene] / len(conditions)


def label_clusters(conditions: Sequence[str], clusters: Sequence[str]) -> dict[str, str]:
    """Dominant gene of each cluster (cluster id -> gene)."""
    frame = pd.DataFrame({"condition": list(conditions), "cluster": list(map(str, clusters))})
    return {
        str(c): dominant_gene(group["condition"].tolist())[0]
        for c, group in frame.groupby("cluster", sort=True)
    }


def program_labels(conditions: Sequence[str], family: Mapping[str, str]) -> list[str]:
    """True response program of each condition: the sorted set of its genes' programs."""
    out = []
    for condition in conditions:
        genes = parse_condition(condition)
        missing = [g for g in genes if g not in family]
        if missing:
            raise KeyError(f"genes {missing} of {condition!r} have no program in 'family'")
        out.append("+".join(sorted({family[g] for g in genes})))
    return out


def cluster_responses(
    delta: np.ndarray,
    *,
    seed: int,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    n_pcs: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Leiden clusters and UMAP coordinates of predicted responses (rows of ``delta``).

    PCA (up to ``n_pcs`` components), scanpy's kNN graph, Leiden (leidenalg, scanpy's
    defaults otherwise) and UMAP, all seeded.
    """
    import scanpy as sc

    from benchmark.numba_cache import cache_umap_kernels

    cache_umap_kernels()  # before scanpy's graph and UMAP compile umap-learn's kernels
    delta = np.asarray(delta, dtype=np.float32)
    adata = ad.AnnData(X=delta)
    n_comps = int(min(n_pcs, delta.shape[0] - 1, delta.shape[1] - 1))
    if n_comps >= 2:
        sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
        use_rep = "X_pca"
    else:
        use_rep = "X"
    sc.pp.neighbors(
        adata, n_neighbors=min(n_neighbors, delta.shape[0] - 1), use_rep=use_rep, random_state=seed
    )
    with warnings.catch_warnings():
        # scanpy announces a future change of its defaults; leidenalg is chosen explicitly.
        warnings.simplefilter("ignore", FutureWarning)
        sc.tl.leiden(
            adata,
            resolution=resolution,
            random_state=seed,
            flavor="leidenalg",
            key_added="leiden",
        )
    sc.tl.umap(adata, random_state=seed)
    return adata.obs["leiden"].astype(str).to_numpy(), np.asarray(adata.obsm["X_umap"])


@dataclass(frozen=True, kw_only=True)
class PerturbationExpansionTask(Task):
    """Predict every single and pairwise combination of a screen's genes; map and cluster them.

    Parameters
    ----------
    resolution
        Leiden resolution of the response map (> 0).
    n_neighbors
        k of its kNN graph (an integer >= 2).

    Both are the config's ``tasks.perturbation_expansion.metrics``.
    """

    resolution: float = 1.0
    n_neighbors: int = 15

    name = "perturbation_expansion"
    metrics = (
        "ari_programs",
        "nmi_programs",
        "pearson_delta_truth",
        "pearson_delta",
        "dominant_share",
    )
    paper_table = None  # the paper shows the map only (Fig. 3c-e)
    breakdown = (
        "pearson_delta_truth_double",
        "pearson_delta_double",
        "pearson_delta_de",
        "n_clusters",
        "n_conditions",
    )
    required_obs = ("condition",)
    metric_options = ("resolution", "n_neighbors")

    def __post_init__(self) -> None:
        if not self.resolution > 0:
            raise ValueError(f"perturbation_expansion: metrics.resolution {self.resolution!r} <= 0")
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise ValueError(
                f"perturbation_expansion: metrics.n_neighbors {self.n_neighbors!r} < 2"
            )
        object.__setattr__(self, "resolution", float(self.resolution))  # frozen: set once

    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """The perturbation task's split, with every combination of the genes requested.

        Returns ``args`` = ``(train, conditions)`` (all singles and pairs of the perturbed
        genes), the perturbation task's held-out truth under ``heldout`` (its test
        conditions), ``programs`` (true program of each condition, simulated data only) and
        ``true_delta`` (noise-free change of the held-out conditions, simulated data only).
        """
        heldout = PerturbationTask().prepare(adata, seed=seed)
        train = heldout["args"][0]
        genes = sorted(perturbed_genes(adata.obs["condition"].astype(str).unique()))
        conditions = candidate_conditions(genes)
        heldout_names = [normalise_condition(c) for c in heldout["conditions"]]
        sim = adata.uns.get("simulation")
        programs = true_delta = None
        if isinstance(sim, Mapping) and "family" in sim:
            programs = program_labels(conditions, dict(sim["family"]))
        if isinstance(sim, Mapping) and "true_delta" in sim and "conditions" in sim:
            row = {normalise_condition(str(c)): i for i, c in enumerate(sim["conditions"])}
            rows = [row.get(c) for c in heldout_names]
            if all(r is not None for r in rows):
                true_delta = np.asarray(sim["true_delta"], dtype=np.float64)[rows]
        log.info(
            "perturbation_expansion: %d genes -> %d combinations (%d held out)",
            len(genes),
            len(conditions),
            len(heldout_names),
        )
        return {
            "args": (train, conditions),
            "conditions": conditions,
            "genes": genes,
            "var_names": heldout["var_names"],
            "heldout": heldout,
            "heldout_names": heldout_names,
            "programs": programs,
            "true_delta": true_delta,
            "seed": seed,
            "data": heldout["data"],
        }

    def _analyse(self, output: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """Aligned predictions, responses, clusters, UMAP and labels (computed once per output)."""
        cached = inputs.get("_analysis")
        if cached is not None and cached["output"] is output:
            return cached
        pred = PerturbationTask.align(output, {**inputs, "conditions": inputs["conditions"]})
        ctrl = inputs["heldout"]["ctrl_mean"]
        delta = pred - ctrl
        clusters, umap = cluster_responses(
            delta,
            seed=inputs["seed"],
            n_neighbors=self.n_neighbors,
            resolution=self.resolution,
        )
        dominant = label_clusters(inputs["conditions"], clusters)
        analysis = {
            "output": output,
            "pred": pred,
            "delta": delta,
            "clusters": clusters,
            "umap": umap,
            "dominant": dominant,
        }
        inputs["_analysis"] = analysis
        return analysis

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Write ``predictions.h5ad`` (all combinations: cluster, dominant gene, UMAP)."""
        analysis = self._analyse(output, inputs)
        pred = ad.AnnData(
            X=analysis["pred"].astype(np.float32),
            obs=pd.DataFrame(index=pd.Index(inputs["conditions"], name="condition")),
            var=pd.DataFrame(index=pd.Index(inputs["var_names"], name="gene")),
        )
        pred.obs["leiden"] = pd.Categorical(analysis["clusters"])
        pred.obs["dominant_gene"] = [analysis["dominant"][c] for c in analysis["clusters"]]
        pred.obs["heldout"] = pred.obs_names.isin(inputs["heldout_names"])
        if inputs["programs"] is not None:
            pred.obs["program"] = pd.Categorical(inputs["programs"])
        pred.obsm["X_umap"] = analysis["umap"].astype(np.float32)
        pred.uns["ctrl_mean"] = np.asarray(inputs["heldout"]["ctrl_mean"], dtype=np.float32)
        outdir = Path(outdir)
        files = [outdir / "predictions.h5ad", outdir / "clusters.csv"]
        write_h5ad(pred, files[0])
        counts = pred.obs.groupby("leiden", observed=True).size()
        shares = {
            c: dominant_gene(pred.obs_names[pred.obs["leiden"] == c].tolist())[1]
            for c in counts.index
        }
        table = pd.DataFrame(
            {
                "cluster": counts.index.astype(str),
                "n_conditions": counts.to_numpy(),
                "dominant_gene": [analysis["dominant"][str(c)] for c in counts.index],
                "dominant_share": [shares[c] for c in counts.index],
            }
        )
        write_csv(table, files[1], index=False)
        return files

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Cluster agreement with the true programs and held-out accuracy (module docstring)."""
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

        del seed
        analysis = self._analyse(output, inputs)
        clusters = analysis["clusters"]
        scores: dict[str, Any] = {
            "n_clusters": len(set(clusters)),
            "n_conditions": len(inputs["conditions"]),
            "resolution": self.resolution,
            "n_neighbors": self.n_neighbors,
        }
        shares = [
            dominant_gene([c for c, k in zip(inputs["conditions"], clusters) if k == cl])[1]
            for cl in sorted(set(clusters))
        ]
        scores["dominant_share"] = float(np.mean(shares))
        if inputs["programs"] is not None:
            scores["ari_programs"] = float(adjusted_rand_score(inputs["programs"], clusters))
            scores["nmi_programs"] = float(
                normalized_mutual_info_score(inputs["programs"], clusters)
            )
        else:
            scores["ari_programs"] = scores["nmi_programs"] = float("nan")

        held = inputs["heldout"]
        index = {c: i for i, c in enumerate(inputs["conditions"])}
        rows = [index[c] for c in inputs["heldout_names"]]
        pred = analysis["pred"][rows]
        per = [
            condition_scores(
                pred[i],
                held["truth_mean"][i],
                held["ctrl_mean"],
                held["de_idx"][c],
                de_idx_non_dropout=held["de_idx_non_dropout"][c],
            )
            for i, c in enumerate(held["conditions"])
        ]
        doubles = np.array([held["n_genes"][c] == 2 for c in held["conditions"]])
        # An undefined Pearson (a prediction equal to control) counts 0, as in GEARS'
        # evaluation: the expansion map has no NaN policy option, and dropping such
        # conditions would reward a method for not predicting them.
        for key in ("pearson_delta", "pearson_delta_de"):
            values = np.nan_to_num(np.array([p[key] for p in per], dtype=float), nan=0.0)
            scores[key] = float(values.mean())
            if key == "pearson_delta":
                scores["pearson_delta_double"] = (
                    float(values[doubles].mean()) if doubles.any() else float("nan")
                )
        if inputs["true_delta"] is not None:
            truth = [
                pearson(pred[i] - held["ctrl_mean"], inputs["true_delta"][i])
                for i in range(len(rows))
            ]
            truth = np.nan_to_num(np.array(truth, dtype=float), nan=0.0)
            scores["pearson_delta_truth"] = float(truth.mean())
            scores["pearson_delta_truth_double"] = (
                float(truth[doubles].mean()) if doubles.any() else float("nan")
            )
        else:
            scores["pearson_delta_truth"] = scores["pearson_delta_truth_double"] = float("nan")
        return scores

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Per method: the map coloured by cluster with dominant genes (Fig. 3c-d), and the
        predicted expression of two target genes over it (Fig. 3e: KLF1 and CNN1 on Norman;
        elsewhere the dominant genes of the two largest clusters)."""
        from benchmark.plots.perturbation_space import plot_expansion_map, plot_gene_over_map

        written: list[Path] = []
        for run_dir in sorted(map(Path, run_dirs)):
            run_file, pred_file = run_dir / "run.json", run_dir / "predictions.h5ad"
            if not run_file.exists() or not pred_file.exists():
                continue
            run = read_json(run_file)
            if run.get("status") != "ok":
                continue
            pred = ad.read_h5ad(pred_file)
            label = run.get("label", run["method"])
            tag = f"{run['method']}_seed{run['seed']}"
            title = f"{run.get('dataset', Path(dataset_path).stem)}: {label}"
            written.append(
                plot_expansion_map(
                    pred.obsm["X_umap"],
                    pred.obs["leiden"].astype(str).to_numpy(),
                    pred.obs["dominant_gene"].astype(str).to_numpy(),
                    Path(out_dir) / f"clusters_{tag}.png",
                    title=title,
                )
            )
            genes = [g for g in PAPER_MARKER_GENES if g in pred.var_names]
            if len(genes) < 2:
                sizes = pred.obs["dominant_gene"].value_counts()
                genes = [g for g in sizes.index if g in pred.var_names][:2]
            if genes:
                X = np.asarray(pred[:, genes].X, dtype=float)
                written.append(
                    plot_gene_over_map(
                        pred.obsm["X_umap"],
                        {g: X[:, j] for j, g in enumerate(genes)},
                        Path(out_dir) / f"genes_{tag}.png",
                        title=title,
                    )
                )
        return written


TASK = PerturbationExpansionTask()
"""The task contract: how the harness feeds a method, stores its output and scores it."""
