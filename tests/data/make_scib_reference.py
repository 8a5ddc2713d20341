"""Reference integration scores from scib itself, for ``tests/test_metrics_scib_reference.py``.

The suite's integration metrics claim to equal scib's; this script computes scib's numbers on a
small fixed input so that the tests can check that claim offline, without scib installed.
It runs outside the project's virtual environment (scib pins old dependencies), once per scib
version, each in a throwaway venv, from the repository root:

    python3.11 -m venv /tmp/scibvenv
    /tmp/scibvenv/bin/pip install scib==1.1.7 scanpy==1.11.5 louvain==0.8.2 pandas==2.3.3
    /tmp/scibvenv/bin/python tests/data/make_scib_reference.py

    python3.11 -m venv /tmp/scib103venv
    /tmp/scib103venv/bin/pip install scib==1.0.3 louvain==0.8.2
    /tmp/scib103venv/bin/pip install "numpy<2"   # scib 1.0.3's anndata2ri needs np.float_
    /tmp/scib103venv/bin/python tests/data/make_scib_reference.py

Versions used for the stored files (also written into each JSON under ``versions``):
scib 1.1.7 with scanpy 1.11.5, numpy 2.4.6, igraph 0.11.9, leidenalg 0.10.2, louvain 0.8.2,
scikit-learn 1.9.1, umap-learn 0.5.12; scib 1.0.3 with the same except numpy 1.26.4 and no
leidenalg. scib 1.0.3 is the version scGPT pins (its ``eval_scib_metrics`` calls
``scib.metrics.metrics``), so it defines the paper's numbers.

Input (``scib_input.npz``, written on the first run and read afterwards so that both versions
score the same numbers): scanpy's bundled ``pbmc68k_reduced`` (700 cells), its first 20 PCs as
the embedding, ``bulk_labels`` as the cell type and three pseudo-batches drawn with
``numpy.random.default_rng(0)``. Three embeddings: ``pca`` (as is), ``batch_shifted`` (every
batch moved by its own random offset, a strong batch effect) and ``partially_mixed`` (the same
offsets applied to half of the cells only).

Output ``scib_<version>.json``, per embedding:

- ``metrics``: ``scib.metrics.metrics(adata, adata, "batch", "cell_type", embed="X_emb",
  nmi_=True, ari_=True, silhouette_=True, graph_conn_=True)`` as scGPT calls it (without the
  PCR score, which the paper's aggregates do not use), on a fresh AnnData so that scib builds
  its own kNN graph (``sc.pp.neighbors(use_rep="X_emb")``: 15 neighbours, umap connectivities).
  In scib 1.0.3 the clustering step is Louvain (``opt_louvain``), in scib 1.1.7 Leiden
  (``cluster_optimal_resolution``).
- ``louvain``: ``opt_louvain`` on that graph: best resolution, its NMI and ARI and the NMI at
  each of the 20 resolutions 0.1..2.0.
- ``leiden`` (scib 1.1.7 only): ``cluster_optimal_resolution`` (Leiden, 10 resolutions
  0.2..2.0), the same fields.
``scib_<version>_pca_connectivities.npz``: the connectivity matrix scib's ``sc.pp.neighbors``
call built for the ``pca`` embedding (CSR arrays), to check the suite's own construction of
the same graph (both versions build the identical matrix; only 1.1.7's file is kept).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scib

HERE = Path(__file__).resolve().parent
INPUT = HERE / "scib_input.npz"
N_PCS = 20
EMBEDDINGS = ("pca", "batch_shifted", "partially_mixed")


def build_input() -> dict[str, np.ndarray]:
    """The fixed input described in the module docstring."""
    pbmc = sc.datasets.pbmc68k_reduced()
    rng = np.random.default_rng(0)
    pca = np.asarray(pbmc.obsm["X_pca"][:, :N_PCS], dtype=np.float32)
    n = pca.shape[0]
    batch = rng.integers(0, 3, n)
    offsets = rng.normal(0.0, 3.0, (3, N_PCS)).astype(np.float32)
    half = rng.random(n) < 0.5
    return {
        "cell_type": np.asarray(pbmc.obs["bulk_labels"].astype(str), dtype=str),
        "batch": np.array([f"b{b}" for b in batch], dtype=str),
        "pca": pca,
        "batch_shifted": pca + offsets[batch],
        "partially_mixed": pca + offsets[batch] * half[:, None],
    }


def load_input() -> dict[str, np.ndarray]:
    if not INPUT.exists():
        np.savez_compressed(INPUT, **build_input())
    with np.load(INPUT, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def fresh_adata(embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray) -> ad.AnnData:
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(cell_type),
            "batch": pd.Categorical(batch),
        },
        index=[f"cell{i}" for i in range(len(cell_type))],
    )
    adata = ad.AnnData(X=np.zeros((len(cell_type), 1), dtype=np.float32), obs=obs)
    adata.obsm["X_emb"] = embedding
    return adata


def clustering_record(adata: ad.AnnData, res_max: float, score_all: pd.DataFrame) -> dict:
    """Best resolution, NMI and ARI of the clustering in obs['cluster'], and the NMI profile."""
    return {
        "resolution": float(res_max),
        "nmi": float(scib.me.nmi(adata, "cluster", "cell_type")),
        "ari": float(scib.me.ari(adata, "cluster", "cell_type")),
        "resolutions": [float(r) for r in score_all["resolution"]],
        "nmi_all": [float(s) for s in score_all["score"]],
    }


def score(embedding: np.ndarray, cell_type: np.ndarray, batch: np.ndarray) -> dict:
    adata = fresh_adata(embedding, cell_type, batch)
    table = scib.metrics.metrics(
        adata,
        adata,
        batch_key="batch",
        label_key="cell_type",
        embed="X_emb",
        nmi_=True,
        ari_=True,
        silhouette_=True,
        graph_conn_=True,
    )
    values = table.iloc[:, 0]
    out = {
        "metrics": {
            "nmi": float(values["NMI_cluster/label"]),
            "ari": float(values["ARI_cluster/label"]),
            "asw_label": float(values["ASW_label"]),
            "asw_batch": float(values["ASW_label/batch"]),
            "graph_conn": float(values["graph_conn"]),
        },
        "neighbors_params": {
            k: (v if isinstance(v, (int, float, str)) else str(v))
            for k, v in adata.uns["neighbors"]["params"].items()
        },
    }

    # Same graph (scib left it in adata), each clustering search on its own.
    del adata.obs["cluster"]
    res_max, _, score_all = scib.me.opt_louvain(
        adata, label_key="cell_type", cluster_key="cluster", verbose=False, inplace=True
    )
    out["louvain"] = clustering_record(adata, res_max, score_all)
    if hasattr(scib.me, "cluster_optimal_resolution"):
        del adata.obs["cluster"]
        res_max, _, score_all = scib.me.cluster_optimal_resolution(
            adata, label_key="cell_type", cluster_key="cluster", verbose=False, return_all=True
        )
        out["leiden"] = clustering_record(adata, res_max, score_all)
    out["_connectivities"] = adata.obsp["connectivities"].tocsr()
    return out


def versions() -> dict[str, str]:
    names = (
        "scib",
        "scanpy",
        "numpy",
        "scipy",
        "pandas",
        "anndata",
        "igraph",
        "leidenalg",
        "louvain",
        "scikit-learn",
        "umap-learn",
    )
    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def main() -> None:
    data = load_input()
    record: dict = {"versions": versions(), "embeddings": {}}
    for name in EMBEDDINGS:
        result = score(data[name], data["cell_type"], data["batch"])
        conn = result.pop("_connectivities")
        if name == "pca":
            np.savez_compressed(
                HERE / f"scib_{scib.__version__}_pca_connectivities.npz",
                shape=np.array(conn.shape),
                indptr=conn.indptr.astype(np.int32),
                indices=conn.indices.astype(np.int32),
                data=conn.data.astype(np.float32),
            )
        record["embeddings"][name] = result
        print(name, json.dumps(result["metrics"]), flush=True)
    out = HERE / f"scib_{scib.__version__}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
