"""Gene-network inference (scGPT paper Fig. 5 and 6), scored against known truth.

The task has two modes, chosen by the dataset (``uns["grn"]["mode"]`` of the method input):

**programs** (Fig. 5; datasets without perturbations). A method receives an AnnData of all
cells x the dataset's HVGs (``n_hvg``, the paper's 1,200; cell_ranger flavour on the
log-normalised data; every expressed gene when there are fewer) with ``X`` raw counts (CSR
float32), ``layers["log1p"]`` (10,000 per cell over all genes, then ``log1p``) and
``obs["batch"]`` (no cell types). It returns a square gene x gene similarity
(``pandas.DataFrame``, ``index == columns`` = genes it covers, a subset of ``var_names``,
e.g. the checkpoint's vocabulary). The harness, the same for every method: kNN graph (each
gene's 15 most similar genes, symmetrised), Leiden at every resolution of ``resolutions``,
programs = clusters of >= 5 genes (:mod:`benchmark.metrics.grn`). Scores:

- simulated data (``uns["simulation"]["programs"]``, the planted programs): ``ari`` (best
  over the sweep, at ``resolution``), ``pair_precision`` / ``pair_recall`` at that
  resolution, and ``pair_auroc`` = how well the similarity alone separates same-program
  gene pairs from other pairs (resolution-free: 0.5 = no program structure), with the mean
  similarity within and between programs;
- real genes: pathways enriched in a program (hypergeometric test, background = the
  clustered genes, Bonferroni ``0.05 / n_sets`` per program) on ``gene_sets`` (default: the
  real Reactome GMT in ``benchmark/data/``): ``n_enriched_pathways`` = distinct pathways
  enriched in some program, the most over the sweep (``resolution_enriched``), and per
  resolution (``n_enriched_r<res>``).

**targets** (Fig. 6; perturbation screens). The regulators are the genes perturbed alone
(``"<gene>+ctrl"``) whose true targets are known (simulator: the regulatory network's direct
targets). A method receives the control cells and those conditions' cells x the HVGs plus the
regulators (``obs["condition"]``, ``layers["log1p"]``, counts in ``X``, every gene's counts
in ``raw``; ``uns["grn"]["regulators"]`` and ``["condition_of"]``) and returns, per regulator, a score of
every other gene as its target: a DataFrame (genes x regulators) or a dict of them, one per
setting (the first is the headline; scGPT: difference, perturbed, control). Scores: mean
over regulators of precision among the top 20 genes (``precision_at_20``) and average
precision over all genes (``auprc``); per setting in the breakdown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.io import write_csv, write_npy
from benchmark.metrics.grn import (
    DEFAULT_GMT,
    average_precision,
    enrichment,
    knn_graph,
    leiden_clusters,
    precision_at_k,
    program_agreement,
    programs_from_clusters,
    read_gmt,
    scanpy_gene_graph,
)
from benchmark.tasks.base import Task

N_HVG = 1200
TARGET_SUM = 1e4
RESOLUTIONS = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0)
"""Leiden sweep; 40 (the last) is the GRN tutorial's resolution."""
SETTINGS = ("difference", "perturbed", "control")
TOP_K = 20
CONTROL = "ctrl"
GRAPHS = ("knn", "scanpy")
BACKGROUNDS = ("analysed", "gene_sets")


def _res_key(resolution: float) -> str:
    return f"r{resolution:g}"


@dataclass(frozen=True, kw_only=True)
class GrnTask(Task):
    """Gene programs from gene-gene similarities, and perturbation targets (module docstring).

    Parameters
    ----------
    n_hvg
        Genes analysed (paper: 1,200 HVGs).
    n_neighbors
        k of the gene kNN graph (scanpy's default 15, the tutorial's).
    resolutions
        Leiden resolutions (the tutorial's is 40).
    min_program_size
        Smallest cluster that counts as a program (paper: 5).
    gene_sets
        GMT file of pathways for real genes (default: the bundled real Reactome GMT).
    target_lists
        Targets mode on data without a simulator truth: regulator -> file of its known
        targets (ChIP-Atlas ``<TF>.10.tsv`` with a ``Target_genes`` column, or one gene per
        line).
    graph
        Gene graph the programs are clustered on: ``"knn"`` (each gene's ``n_neighbors``
        most similar genes, weights = rescaled similarity) or ``"scanpy"`` (the GRN
        tutorial's: scanpy's UMAP connectivities over ``n_neighbors`` neighbours, distance
        ``1 - similarity``).
    enrichment_background
        Genes the hypergeometric test draws from: ``"analysed"`` (the clustered genes) or
        ``"gene_sets"`` (every gene of the GMT plus the clustered ones: Enrichr's library
        background, which the tutorial's ``gseapy.enrichr`` call gets by default).

    ``gene_sets``, ``target_lists``, ``graph`` and ``enrichment_background`` are the
    config's ``tasks.grn.metrics``.
    """

    n_hvg: int = N_HVG
    n_neighbors: int = 15
    resolutions: tuple[float, ...] = RESOLUTIONS
    min_program_size: int = 5
    gene_sets: str | os.PathLike[str] = DEFAULT_GMT
    target_lists: Mapping[str, str] | None = None
    graph: str = "knn"
    enrichment_background: str = "analysed"

    name = "grn"
    metrics = (
        "ari",
        "pair_precision",
        "pair_recall",
        "pair_auroc",
        "n_programs",
        "n_enriched_pathways",
        "precision_at_20",
        "auprc",
    )
    breakdown = (
        *(f"ari_{_res_key(r)}" for r in RESOLUTIONS),
        *(f"n_enriched_{_res_key(r)}" for r in RESOLUTIONS),
        "similarity_within",
        "similarity_between",
        *(f"precision_at_20_{s}" for s in SETTINGS),
        *(f"auprc_{s}" for s in SETTINGS),
        "precision_at_20_expected",
    )
    required_obs = ()
    metric_options = ("gene_sets", "target_lists", "graph", "enrichment_background")

    def __post_init__(self) -> None:
        if not self.resolutions:
            raise ValueError("grn task: resolutions is empty")
        if self.graph not in GRAPHS:
            raise ValueError(f"grn task: graph {self.graph!r} is not one of {list(GRAPHS)}")
        if self.enrichment_background not in BACKGROUNDS:
            raise ValueError(
                f"grn task: enrichment_background {self.enrichment_background!r} is not one "
                f"of {list(BACKGROUNDS)}"
            )
        # frozen: the settings are normalised once, here
        object.__setattr__(self, "resolutions", tuple(float(r) for r in self.resolutions))
        object.__setattr__(self, "gene_sets", Path(self.gene_sets))
        object.__setattr__(self, "target_lists", dict(self.target_lists or {}))

    # ------------------------------------------------------------------ prepare
    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Method input (programs or targets mode) and the truth kept aside."""
        if not adata.var_names.is_unique:
            raise ValueError("grn: dataset var_names are not unique")
        counts = _counts(adata)
        log1p = _log_normalise(counts)
        simulation = adata.uns.get("simulation", {})
        conditions = (
            adata.obs["condition"].astype(str).to_numpy() if "condition" in adata.obs else None
        )
        if conditions is not None and np.any(conditions != CONTROL):
            return self._prepare_targets(adata, counts, log1p, conditions, simulation)
        return self._prepare_programs(adata, counts, log1p, simulation)

    def _prepare_programs(
        self, adata: ad.AnnData, counts: sp.csr_matrix, log1p: sp.csr_matrix, simulation: Any
    ) -> dict[str, Any]:
        genes = self._hvgs(adata.var_names, counts, log1p)
        cols = adata.var_names.get_indexer(genes)
        batch = (
            adata.obs["batch"].astype(str).to_numpy()
            if "batch" in adata.obs
            else np.full(adata.n_obs, "batch0")
        )
        method_input = ad.AnnData(
            X=counts[:, cols],
            obs=pd.DataFrame({"batch": pd.Categorical(batch)}, index=adata.obs_names.copy()),
            var=pd.DataFrame(index=pd.Index(genes)),
            layers={"log1p": log1p[:, cols]},
            uns={"grn": {"mode": "programs"}},
        )
        truth: dict[str, Any] = {}
        if isinstance(simulation, dict) and "programs" in simulation:
            truth["programs"] = {
                str(p): [str(g) for g in members] for p, members in simulation["programs"].items()
            }
        else:
            truth["gene_sets"] = read_gmt(self.gene_sets)
            truth["gene_sets_file"] = str(self.gene_sets)
        cell_type = (
            adata.obs["cell_type"].astype(str).to_numpy() if "cell_type" in adata.obs else None
        )
        return {
            "args": (method_input,),
            "mode": "programs",
            "truth": truth,
            "genes": genes,
            "cell_type": cell_type,
            "log1p": method_input.layers["log1p"],
        }

    def _prepare_targets(
        self,
        adata: ad.AnnData,
        counts: sp.csr_matrix,
        log1p: sp.csr_matrix,
        conditions: np.ndarray,
        simulation: Any,
    ) -> dict[str, Any]:
        singles = {
            c.split("+")[0]: c
            for c in np.unique(conditions)
            if c != CONTROL and c.endswith(f"+{CONTROL}") and c.count("+") == 1
        }
        truth_targets = self._known_targets(simulation, set(singles))
        regulators = sorted(r for r in truth_targets if r in singles and r in adata.var_names)
        if not regulators:
            raise ValueError(
                "grn (targets): no perturbed gene with known targets; perturbed alone: "
                f"{sorted(singles)[:10]}, with a truth: {sorted(truth_targets)[:10]} "
                "(simulated screens carry uns['simulation']['grn']; real ones need "
                "tasks.grn.metrics.target_lists)"
            )
        hvgs = self._hvgs(adata.var_names, counts, log1p)
        genes = [g for g in adata.var_names if g in set(hvgs) | set(regulators)]
        cols = adata.var_names.get_indexer(genes)
        keep = np.isin(conditions, [CONTROL, *(singles[r] for r in regulators)])
        method_input = ad.AnnData(
            X=counts[keep][:, cols],
            obs=pd.DataFrame(
                {"condition": pd.Categorical(conditions[keep])},
                index=adata.obs_names[keep].copy(),
            ),
            var=pd.DataFrame(index=pd.Index(genes)),
            layers={"log1p": log1p[keep][:, cols]},
            uns={
                "grn": {
                    "mode": "targets",
                    "regulators": regulators,
                    "condition_of": {r: singles[r] for r in regulators},
                }
            },
        )
        # Every gene of the same cells: the attention tutorial fine-tunes on all of them.
        method_input.raw = ad.AnnData(
            X=counts[keep], var=pd.DataFrame(index=adata.var_names.copy())
        )
        truth = {r: sorted(set(truth_targets[r]) & set(genes) - {r}) for r in regulators}
        return {
            "args": (method_input,),
            "mode": "targets",
            "truth": {"targets": truth},
            "genes": genes,
            "regulators": regulators,
        }

    def _known_targets(self, simulation: Any, perturbed: set[str]) -> dict[str, list[str]]:
        if self.target_lists:
            return {tf: _read_target_list(path) for tf, path in self.target_lists.items()}
        if not isinstance(simulation, dict) or "grn" not in simulation:
            return {}
        grn = simulation["grn"]
        out: dict[str, list[str]] = {}
        for source, target in zip(grn["source"], grn["target"]):
            if str(source) in perturbed:
                out.setdefault(str(source), []).append(str(target))
        return out

    def _hvgs(self, var_names: pd.Index, counts: sp.csr_matrix, log1p: sp.csr_matrix) -> list[str]:
        """The ``n_hvg`` most variable expressed genes (cell_ranger flavour), dataset order."""
        import scanpy as sc

        expressed = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
        if int(expressed.sum()) <= self.n_hvg:
            return [str(g) for g in var_names[expressed]]
        tmp = ad.AnnData(X=log1p[:, expressed], var=pd.DataFrame(index=var_names[expressed]))
        sc.pp.highly_variable_genes(tmp, flavor="cell_ranger", n_top_genes=self.n_hvg)
        chosen = set(tmp.var_names[tmp.var["highly_variable"].to_numpy()])
        return [str(g) for g in var_names if g in chosen]

    # ------------------------------------------------------------------ call/save/score
    def call(self, func: Any, inputs: dict[str, Any], *, seed: int, params: dict[str, Any]) -> Any:
        """Call the method and check its output against the mode's contract."""
        output = func(*inputs["args"], seed=seed, **params)
        return _check_output(output, inputs)

    def _programs(self, output: pd.DataFrame, inputs: dict[str, Any]) -> pd.DataFrame:
        """Leiden clusters per resolution (genes x resolutions), computed once per run."""
        cache = inputs.setdefault("_cache", {})
        if id(output) not in cache:
            build = scanpy_gene_graph if self.graph == "scanpy" else knn_graph
            graph = build(output.to_numpy(), self.n_neighbors)
            cache[id(output)] = pd.DataFrame(
                {
                    _res_key(r): leiden_clusters(graph, r, seed=inputs.get("seed", 0))
                    for r in self.resolutions
                },
                index=output.index,
            )
        return cache[id(output)]

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Programs mode: ``similarity.npy`` + ``genes.csv``, ``clusters.csv`` (per
        resolution) and ``enrichment.csv`` (real genes); targets mode: ``targets_<setting>.csv``.
        """
        outdir = Path(outdir)
        output = _check_output(output, inputs)
        if inputs["mode"] == "targets":
            paths = []
            for setting, frame in output.items():
                paths.append(outdir / f"targets_{setting}.csv")
                write_csv(frame, paths[-1], index_label="gene")
            return paths
        paths = [outdir / "similarity.npy", outdir / "genes.csv", outdir / "clusters.csv"]
        write_npy(output.to_numpy(dtype=np.float32), paths[0])
        write_csv(pd.DataFrame({"gene": output.index}), paths[1], index=False)
        write_csv(self._programs(output, inputs), paths[2], index_label="gene")
        if "gene_sets" in inputs["truth"]:
            paths.append(outdir / "enrichment.csv")
            write_csv(self._enrichment(output, inputs), paths[-1], index=False)
        return paths

    def _enrichment(self, output: pd.DataFrame, inputs: dict[str, Any]) -> pd.DataFrame:
        cache = inputs.setdefault("_cache", {})
        key = ("enrichment", id(output))
        if key not in cache:
            clusters = self._programs(output, inputs)
            frames = []
            for column in clusters.columns:
                programs = programs_from_clusters(
                    clusters.index, clusters[column].to_numpy(), self.min_program_size
                )
                gene_sets = inputs["truth"]["gene_sets"]
                background = list(clusters.index)
                if self.enrichment_background == "gene_sets":
                    background = sorted(
                        set(background).union(*(map(str, g) for g in gene_sets.values()))
                    )
                frame = enrichment(programs, gene_sets, background)
                frame.insert(0, "resolution", column)
                frames.append(frame)
            nonempty = [f for f in frames if len(f)]
            cache[key] = pd.concat(nonempty, ignore_index=True) if nonempty else frames[0]
        return cache[key]

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Program agreement / enrichment, or target precision (module docstring)."""
        output = _check_output(output, inputs)
        if inputs["mode"] == "targets":
            return self._score_targets(output, inputs)
        return self._score_programs(output, inputs)

    def _score_programs(self, output: pd.DataFrame, inputs: dict[str, Any]) -> dict[str, Any]:
        clusters = self._programs(output, inputs)
        genes = list(output.index)
        scores: dict[str, Any] = {
            "n_genes": float(len(genes)),
            "gene_coverage": len(genes) / max(len(inputs["genes"]), 1),
        }
        last = _res_key(self.resolutions[-1])
        counts = clusters[last].value_counts()
        scores["n_programs"] = float((counts >= self.min_program_size).sum())
        truth = inputs["truth"]
        if "programs" in truth:
            per_res = {
                c: program_agreement(
                    genes, clusters[c].to_numpy(), truth["programs"], min_size=self.min_program_size
                )
                for c in clusters.columns
            }
            best = max(per_res, key=lambda c: np.nan_to_num(per_res[c]["ari"], nan=-1.0))
            scores.update(
                {
                    "ari": per_res[best]["ari"],
                    "pair_precision": per_res[best]["pair_precision"],
                    "pair_recall": per_res[best]["pair_recall"],
                    "resolution": float(best[1:]),
                    "n_programs": per_res[best]["n_programs"],
                }
            )
            for c, values in per_res.items():
                scores[f"ari_{c}"] = values["ari"]
                scores[f"pair_precision_{c}"] = values["pair_precision"]
                scores[f"pair_recall_{c}"] = values["pair_recall"]
                scores[f"n_programs_{c}"] = values["n_programs"]
            scores.update(_pair_separation(output, truth["programs"]))
        else:
            table = self._enrichment(output, inputs)
            enriched = table[table["enriched"]]
            for c in clusters.columns:
                scores[f"n_enriched_{c}"] = float(
                    enriched.loc[enriched["resolution"] == c, "gene_set"].nunique()
                )
            # Headline: the sweep's best count (a small gene set splits into clusters of < 5
            # genes at the paper's resolution 40); every resolution is in the breakdown.
            best = max(clusters.columns, key=lambda c: (scores[f"n_enriched_{c}"], float(c[1:])))
            scores["n_enriched_pathways"] = scores[f"n_enriched_{best}"]
            scores["resolution_enriched"] = float(best[1:])
            sizes = clusters[best].value_counts()
            scores["n_programs"] = float((sizes >= self.min_program_size).sum())
            scores["n_gene_sets"] = float(len(truth["gene_sets"]))
        return scores

    def _score_targets(
        self, output: dict[str, pd.DataFrame], inputs: dict[str, Any]
    ) -> dict[str, Any]:
        truth = inputs["truth"]["targets"]
        scores: dict[str, Any] = {}
        for i, (setting, frame) in enumerate(output.items()):
            p20, ap = [], []
            for regulator, targets in truth.items():
                column = frame[regulator].dropna().drop(regulator, errors="ignore")
                p20.append(precision_at_k(column, targets, TOP_K))
                ap.append(average_precision(column, targets))
            scores[f"precision_at_20_{setting}"] = float(np.nanmean(p20))
            scores[f"auprc_{setting}"] = float(np.nanmean(ap))
            if i == 0:
                scores["precision_at_20"] = scores[f"precision_at_20_{setting}"]
                scores["auprc"] = scores[f"auprc_{setting}"]
                scores["setting"] = setting
        n_genes = len(inputs["genes"]) - 1
        scores["precision_at_20_expected"] = float(
            np.mean([len(t) / max(n_genes, 1) for t in truth.values()])
        )
        scores["n_regulators"] = float(len(truth))
        return scores

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Program activity heat maps, sub-networks, pathway Venn, target rankings."""
        from benchmark.plots.grn import grn_figures

        return grn_figures(run_dirs, dataset_path, out_dir, task=self)


def _pair_separation(similarity: pd.DataFrame, programs: dict[str, list[str]]) -> dict[str, float]:
    """Resolution-free program structure of a similarity: AUROC of same-program pairs.

    Over the genes that belong to a true program: the AUROC with which the similarity ranks
    same-program pairs above different-program pairs (0.5: no structure), and the mean
    similarity of each kind.
    """
    from sklearn.metrics import roc_auc_score

    program_of = {g: p for p, members in programs.items() for g in members}
    genes = [g for g in similarity.index if g in program_of]
    if len(genes) < 3:
        return {"pair_auroc": float("nan")}
    sim = similarity.loc[genes, genes].to_numpy(dtype=float)
    labels = np.array([program_of[g] for g in genes])
    upper = np.triu_indices(len(genes), k=1)
    same = (labels[:, None] == labels[None, :])[upper]
    values = sim[upper]
    if same.all() or not same.any():
        return {"pair_auroc": float("nan")}
    return {
        "pair_auroc": float(roc_auc_score(same, values)),
        "similarity_within": float(values[same].mean()),
        "similarity_between": float(values[~same].mean()),
    }


def _read_target_list(path: str | os.PathLike[str]) -> list[str]:
    """Targets of a TF: a ChIP-Atlas ``Target_genes`` column (TSV) or one gene per line."""
    text = Path(path).read_text(encoding="utf-8").splitlines()
    if text and "Target_genes" in text[0].split("\t"):
        frame = pd.read_csv(path, sep="\t")
        return frame["Target_genes"].dropna().astype(str).tolist()
    return [line.strip() for line in text if line.strip()]


def _counts(adata: ad.AnnData) -> sp.csr_matrix:
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(matrix, dtype=np.float32)
    if counts.data.size and counts.data.min() < 0:
        raise ValueError("grn: the dataset's counts (layers['counts'] or X) have negative values")
    return counts


def _log_normalise(counts: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    out = sp.diags(scale.astype(np.float32)) @ counts
    out = sp.csr_matrix(out, dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


def _check_output(output: Any, inputs: dict[str, Any]) -> Any:
    genes = set(inputs["genes"])
    if inputs["mode"] == "programs":
        if not isinstance(output, pd.DataFrame):
            raise TypeError(
                f"grn (programs) method must return a gene x gene DataFrame; got {type(output).__name__}"
            )
        if list(output.index) != list(output.columns):
            raise ValueError("grn (programs): similarity index and columns must be the same genes")
        unknown = sorted(set(map(str, output.index)) - genes)
        if unknown:
            raise ValueError(f"grn (programs): genes not in the task's input: {unknown[:5]}")
        if len(output) < 2 or not np.isfinite(output.to_numpy(dtype=float)).all():
            raise ValueError(
                f"grn (programs): similarity must be finite over >= 2 genes; got {len(output)} genes"
            )
        return output
    frames = output if isinstance(output, dict) else {"score": output}
    if not frames or not all(isinstance(f, pd.DataFrame) for f in frames.values()):
        raise TypeError("grn (targets) method must return a DataFrame or a dict of DataFrames")
    for setting, frame in frames.items():
        missing = sorted(set(inputs["regulators"]) - set(map(str, frame.columns)))
        if missing:
            raise ValueError(f"grn (targets): setting {setting!r} lacks regulators {missing}")
    return frames


TASK = GrnTask()
"""The task object the harness uses (``benchmark.tasks.get_task("grn")``)."""
