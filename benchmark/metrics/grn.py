"""Gene-network scores (scGPT paper Fig. 5 / 6): gene programs from a gene-gene similarity,
their agreement with known programs, pathway enrichment, and target-ranking scores.

- Programs (Fig. 5, the GRN tutorial): a k-nearest-neighbour graph over genes (the
  ``k`` most similar genes of each gene; scanpy's default 15), symmetrised, Leiden at each
  resolution of a sweep; a program is a cluster of at least ``min_size`` (5) genes.
- Agreement with planted programs: ARI between found clusters and true programs over the
  genes that belong to a true program, and precision / recall of same-program gene pairs
  (pairs inside one found program of >= ``min_size`` genes vs pairs inside one true program).
- Enrichment: one-sided hypergeometric test of each program against each gene set, the
  background being the genes that were clustered; a set is enriched in a program when
  ``p < alpha / n_sets`` (Bonferroni over the gene sets, per program, as the paper's
  ``0.05 / 1,818``).
- Targets (Fig. 6): precision of the top ``k`` genes and the area under the
  precision-recall curve (average precision) of a score ranking against the true targets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

DEFAULT_GMT = Path(__file__).resolve().parent.parent / "data" / "reactome.gmt"
"""Real Reactome pathways (MSigDB C2 CP:Reactome), see ``benchmark/data/README.md``."""


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Gene sets of a GMT file: ``name<TAB>description<TAB>gene<TAB>gene...`` per line.

    Raises
    ------
    ValueError
        Naming the file and line of a row with fewer than three fields.
    """
    sets: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                raise ValueError(
                    f"{path}: line {number} has {len(fields)} tab-separated field(s); a GMT "
                    "row is name, description, then genes"
                )
            genes = [g.strip() for g in fields[2:] if g.strip()]
            sets[fields[0]] = list(dict.fromkeys(sets.get(fields[0], []) + genes))
    return sets


def _square_similarity(similarity: np.ndarray, who: str, *, min_genes: int) -> np.ndarray:
    """``similarity`` as a float64 genes x genes array, refused unless square and large enough."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"{who}: similarity must be square; got shape {sim.shape}")
    if sim.shape[0] < min_genes:
        raise ValueError(f"{who}: need at least {min_genes} genes; got {sim.shape[0]}")
    return sim


def knn_graph(similarity: np.ndarray, n_neighbors: int = 15) -> sp.csr_matrix:
    """Symmetric kNN graph of a gene-gene similarity (edge weight = similarity, floored > 0).

    Each gene is linked to its ``n_neighbors`` most similar other genes; the graph is the
    union of those links (an edge kept if either end chose it). Weights are the similarity
    shifted so that the weakest kept edge still counts (Leiden needs positive weights).
    """
    sim = _square_similarity(similarity, "knn_graph", min_genes=2)
    n = sim.shape[0]
    k = min(n_neighbors, n - 1)
    work = sim.copy()
    np.fill_diagonal(work, -np.inf)
    work[~np.isfinite(work)] = -np.inf
    neighbours = np.argpartition(-work, kth=k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.ravel()
    values = work[rows, cols]
    finite = np.isfinite(values)
    rows, cols, values = rows[finite], cols[finite], values[finite]
    # Shift into (0, 1]: Leiden's modularity needs positive weights, ranks are kept.
    low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
    weights = (values - low) / (high - low) * 0.99 + 0.01 if high > low else np.ones_like(values)
    graph = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


def scanpy_gene_graph(similarity: np.ndarray, n_neighbors: int = 15) -> sp.csr_matrix:
    """The GRN tutorial's gene graph: scanpy's UMAP connectivities (``sc.pp.neighbors``)
    over each gene's ``n_neighbors`` nearest genes (itself counted, as scanpy counts it),
    the distance being ``1 - similarity`` (cosine distance for cosine similarities).

    The tutorial runs ``sc.pp.neighbors`` on the embedding vectors (Euclidean); a method
    here returns similarities, so their distance is used instead.
    """
    import anndata as ad
    import scanpy as sc

    sim = _square_similarity(similarity, "scanpy_gene_graph", min_genes=3)
    n = sim.shape[0]
    finite = np.where(np.isfinite(sim), sim, -np.inf)
    distance = np.clip(1.0 - finite, 0.0, None)
    distance[~np.isfinite(distance)] = distance[np.isfinite(distance)].max(initial=1.0) + 1.0
    np.fill_diagonal(distance, 0.0)
    genes = ad.AnnData(X=distance.astype(np.float32))
    sc.pp.neighbors(genes, n_neighbors=min(n_neighbors, n - 1), use_rep="X", metric="precomputed")
    return sp.csr_matrix(genes.obsp["connectivities"])


def leiden_clusters(graph: sp.csr_matrix, resolution: float, *, seed: int = 0) -> np.ndarray:
    """Leiden clusters (RB configuration model, weighted) of an undirected graph."""
    import igraph as ig
    import leidenalg

    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=list(zip(upper.row.tolist(), upper.col.tolist())))
    g.es["weight"] = upper.data.tolist()
    partition = leidenalg.find_partition(
        g,
        leidenalg.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=float(resolution),
        seed=int(seed),
        n_iterations=-1,
    )
    return np.asarray(partition.membership, dtype=int)


def programs_from_clusters(
    genes: Sequence[str], clusters: np.ndarray, min_size: int = 5
) -> dict[str, list[str]]:
    """Clusters of at least ``min_size`` genes, named ``"G<cluster>"``, largest first."""
    frame = pd.DataFrame({"gene": list(genes), "cluster": np.asarray(clusters)})
    sizes = frame["cluster"].value_counts()
    keep = sizes[sizes >= min_size].index
    return {
        f"G{c}": frame.loc[frame["cluster"] == c, "gene"].tolist()
        for c in sorted(keep, key=lambda c: (-sizes[c], c))
    }


def _pair_count(labels: np.ndarray) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def program_agreement(
    genes: Sequence[str],
    clusters: np.ndarray,
    truth: Mapping[str, Sequence[str]],
    *,
    min_size: int = 5,
) -> dict[str, float]:
    """Agreement of found clusters with planted programs.

    Parameters
    ----------
    genes, clusters
        The clustered genes and their cluster labels.
    truth
        True program -> member genes (genes in no program are left out of it).
    min_size
        Found clusters smaller than this are not programs (their genes count as unassigned
        for the pair scores).

    Returns
    -------
    dict
        ``ari`` over the clustered genes that have a true program; ``pair_precision`` and
        ``pair_recall`` of same-program pairs (found programs of >= ``min_size`` genes vs
        true programs, over all clustered genes); ``pair_f1``; ``n_programs`` found;
        ``frac_genes_in_programs``. Precision is NaN when no pair is predicted.
    """
    from sklearn.metrics import adjusted_rand_score

    genes = [str(g) for g in genes]
    clusters = np.asarray(clusters)
    true_of = {g: p for p, members in truth.items() for g in members}
    has_truth = np.array([g in true_of for g in genes])
    true_labels = np.array([true_of.get(g, "") for g in genes], dtype=object)
    ari = (
        float(adjusted_rand_score(true_labels[has_truth], clusters[has_truth]))
        if has_truth.sum() >= 2
        else float("nan")
    )
    sizes = pd.Series(clusters).value_counts()
    in_program = np.isin(clusters, sizes[sizes >= min_size].index.to_numpy())
    # Same-pair counts: predicted pairs inside found programs, true pairs inside programs,
    # and their overlap = pairs sharing both labels (counted by the joint label).
    predicted = _pair_count(clusters[in_program])
    actual = _pair_count(true_labels[has_truth])
    both = in_program & has_truth
    joint = np.array([f"{c}|{t}" for c, t in zip(clusters[both], true_labels[both])])
    hits = _pair_count(joint) if joint.size else 0
    precision = hits / predicted if predicted else float("nan")
    recall = hits / actual if actual else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if predicted and actual and (precision + recall) > 0
        else float("nan")
    )
    return {
        "ari": ari,
        "pair_precision": float(precision),
        "pair_recall": float(recall),
        "pair_f1": float(f1),
        "n_programs": float((sizes >= min_size).sum()),
        "frac_genes_in_programs": float(in_program.mean()) if clusters.size else float("nan"),
    }


def enrichment(
    programs: Mapping[str, Sequence[str]],
    gene_sets: Mapping[str, Sequence[str]],
    background: Iterable[str],
    *,
    alpha: float = 0.05,
    min_overlap: int = 1,
) -> pd.DataFrame:
    """Hypergeometric enrichment of every gene set in every program, Bonferroni per program.

    The gene sets are restricted to ``background`` (the genes that were clustered); sets
    with no background gene are not tested but count in the Bonferroni divisor, which is
    the number of sets in ``gene_sets`` (the paper's ``0.05 / 1,818`` for Reactome_2022).

    Returns
    -------
    pandas.DataFrame
        One row per (program, gene set) with overlap >= ``min_overlap``: ``program``,
        ``gene_set``, ``overlap``, ``program_size``, ``set_size`` (in the background),
        ``background``, ``p_value`` (P[X >= overlap]), ``threshold`` and ``enriched``.
    """
    from scipy.stats import hypergeom

    universe = set(map(str, background))
    n_background = len(universe)
    sets = {name: universe.intersection(map(str, members)) for name, members in gene_sets.items()}
    threshold = alpha / max(len(gene_sets), 1)
    rows = []
    for program, members in programs.items():
        members_set = universe.intersection(map(str, members))
        n = len(members_set)
        for name, in_set in sets.items():
            overlap = len(members_set & in_set)
            if overlap < max(min_overlap, 1):
                continue
            p_value = float(hypergeom.sf(overlap - 1, n_background, len(in_set), n))
            rows.append((program, name, overlap, n, len(in_set), n_background, p_value))
    frame = pd.DataFrame(
        rows,
        columns=[
            "program",
            "gene_set",
            "overlap",
            "program_size",
            "set_size",
            "background",
            "p_value",
        ],
    )
    frame["threshold"] = threshold
    frame["enriched"] = frame["p_value"] < threshold
    return frame


def precision_at_k(scores: pd.Series, targets: Iterable[str], k: int = 20) -> float:
    """Fraction of the ``k`` highest-scored genes that are true targets (ties: gene order)."""
    targets = set(map(str, targets))
    top = scores.sort_values(ascending=False, kind="mergesort").index[:k]
    return float(np.mean([str(g) in targets for g in top])) if len(top) else float("nan")


def average_precision(scores: pd.Series, targets: Iterable[str]) -> float:
    """Area under the precision-recall curve (scikit-learn's average precision)."""
    from sklearn.metrics import average_precision_score

    targets = set(map(str, targets))
    labels = np.array([str(g) in targets for g in scores.index])
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores.to_numpy(dtype=float)))
