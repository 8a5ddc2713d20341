"""GEARS (Roohani et al. 2023) through the ``cell-gears`` 0.1.2 package, trained for real.

GEARS is built from our training AnnData in a temporary working directory per call and
never downloads anything (see ``/work/shared/reference/gears_offline.md``):

- ``gene2go_all.pkl`` (gene symbol -> set of GO term ids) is written into GEARS' data
  folder before ``PertData`` is created, so its download is skipped. It comes from the
  ``gene2go`` parameter (a path; the paper configuration downloads GEARS' own file,
  Dataverse 6153417) or, for the simulated demo sets, from the simulation's prior
  knowledge (:func:`gene2go_from_simulation`).
- ``default_pert_graph=False`` with a ``gene_set_path`` listing the measured genes, the
  training perturbations and the requested ones, so the perturbation graph holds every gene
  GEARS is asked to predict (in GEARS' own workflow the test genes are in the data too).
- The GO similarity graph is computed here, exactly as ``gears.utils.make_GO`` and
  ``get_similarity_network`` do (Jaccard index of GO term sets, edges above 0.1, the
  ``k + 1`` most similar sources per target), vectorised instead of GEARS' 25-process pool,
  and handed to ``model_initialize`` (no ``./data`` file relative to the working directory).
- Our split is GEARS' ``custom`` split: ``train`` = control and the training conditions,
  ``val`` = the validation conditions (model selection on the validation DE MSE, as GEARS
  does), ``test`` empty (the harness scores the predictions itself).
- After ``new_data_process`` the expression matrix is wrapped in :class:`_SeriesIndexableCSR`
  because ``GEARS.__init__`` indexes it with a boolean pandas Series, which today's scipy
  rejects, and its co-expression step needs ``.toarray()``.

GEARS prints its own progress (``print_sys`` to stderr, tqdm bars); it is left in the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from contract.conditions import CTRL, format_condition, parse_condition
from contract.registry import register

log = logging.getLogger(__name__)

GO_JACCARD_THRESHOLD = 0.1
"""GEARS keeps GO-graph edges whose Jaccard index exceeds this (``gears.utils.make_GO``)."""


class _SeriesIndexableCSR(sp.csr_matrix):
    """CSR matrix that accepts a boolean pandas Series as a row index (GEARS needs this)."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, pd.Series):
            key = key.to_numpy()
        elif isinstance(key, tuple):
            key = tuple(k.to_numpy() if isinstance(k, pd.Series) else k for k in key)
        return super().__getitem__(key)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(np.asarray(value).tolist())


def gene2go_from_simulation(simulation: Mapping[str, Any], genes: list[str]) -> dict[str, set[str]]:
    """GO-like annotations of the simulated genes, from the world's programs and network.

    A gene's "GO terms" are what a curated annotation would know about it:

    - ``program:<P>`` for the gene program it belongs to (a biological process),
    - ``regulon:<T>`` for every transcription factor ``T`` that regulates it, and for ``T``
      itself (the TF and its targets share a "regulation of ..." term),
    - ``gene:<g>`` alone for a gene with neither, so that every gene is in GEARS' graph.

    Two genes are then similar in GEARS' GO graph (Jaccard index of these sets) when they
    share a program or regulators. No effect size or split information is used.

    Parameters
    ----------
    simulation
        ``uns["simulation"]`` of a simulated dataset (keys ``programs``: program -> genes,
        ``grn``: ``source``/``target`` lists).
    genes
        Genes to annotate (the dataset's genes).
    """
    if "programs" not in simulation and "grn" not in simulation:
        raise KeyError(
            "uns['simulation'] has neither 'programs' nor 'grn' to build GEARS' gene2go "
            f"from; it has {sorted(simulation)}"
        )
    terms: dict[str, set[str]] = {g: set() for g in genes}
    for program, members in dict(simulation.get("programs", {})).items():
        for gene in _as_list(members):
            if gene in terms:
                terms[gene].add(f"program:{program}")
    grn = dict(simulation.get("grn", {}))
    sources = _as_list(grn.get("source"))
    targets = _as_list(grn.get("target"))
    if len(sources) != len(targets):
        raise ValueError(
            f"uns['simulation']['grn'] has {len(sources)} sources and {len(targets)} targets"
        )
    for source, target in zip(sources, targets):
        if target in terms:
            terms[target].add(f"regulon:{source}")
        if source in terms:
            terms[source].add(f"regulon:{source}")
    for gene, gene_terms in terms.items():
        if not gene_terms:
            gene_terms.add(f"gene:{gene}")
    return terms


def load_gene2go(path: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Read GEARS' ``gene2go_all.pkl`` (a pickled dict gene symbol -> set of GO ids)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"gene2go file {path} does not exist; the paper configuration downloads GEARS' "
            "gene2go_all.pkl (Harvard Dataverse file 6153417) through the dataset registry"
        )
    from scgpt.safe_pickle import load_pickle

    # A downloaded pickle: only plain dicts, sets and lists are built, nothing is run.
    gene2go = load_pickle(path)
    if not isinstance(gene2go, Mapping):
        raise ValueError(f"{path}: expected a pickled dict gene -> GO terms, got {type(gene2go)}")
    return {str(g): set(t) for g, t in gene2go.items()}


def go_similarity_edges(
    gene2go: Mapping[str, set[str]], pert_list: list[str], k: int
) -> pd.DataFrame:
    """GEARS' GO graph over ``pert_list``: Jaccard edges > 0.1, top ``k + 1`` per target.

    Same result as ``gears.utils.make_GO`` followed by the ``"go"`` branch of
    ``get_similarity_network`` (edges listed source-major in ``pert_list`` order, self
    edges included, then ``nlargest(k + 1)`` per target), computed with a sparse product.

    Returns
    -------
    DataFrame with columns ``source``, ``target``, ``importance``.
    """
    term_index: dict[str, int] = {}
    rows, cols = [], []
    for i, gene in enumerate(pert_list):
        for term in gene2go[gene]:
            rows.append(i)
            cols.append(term_index.setdefault(term, len(term_index)))
    M = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)),
        shape=(len(pert_list), max(len(term_index), 1)),
    )
    M.data[:] = 1.0  # a gene listing a term twice counts it once
    inter = (M @ M.T).toarray()
    size = np.asarray(M.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, inter / union, 0.0)
    src, dst = np.nonzero(jaccard > GO_JACCARD_THRESHOLD)
    names = np.asarray(pert_list, dtype=object)
    edges = pd.DataFrame(
        {"source": names[src], "target": names[dst], "importance": jaccard[src, dst]}
    )
    return (
        edges.groupby("target")
        .apply(lambda x: x.nlargest(k + 1, ["importance"]))
        .reset_index(drop=True)
    )


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _gears_adata(train: ad.AnnData, keep: np.ndarray, labels: np.ndarray) -> ad.AnnData:
    """The AnnData GEARS' ``new_data_process`` expects (CSR, condition, cell_type, gene_name)."""
    X = train.X[keep]
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    if "cell_type" in train.obs:
        cell_type = train.obs["cell_type"].astype(str).to_numpy()[keep]
    else:
        cell_type = np.full(int(keep.sum()), "cell", dtype=object)
    obs = pd.DataFrame(
        {"condition": labels[keep], "cell_type": cell_type},
        index=pd.Index(train.obs_names[keep].astype(str)),
    )
    var = pd.DataFrame(
        {"gene_name": train.var_names.astype(str)}, index=train.var_names.astype(str)
    )
    return ad.AnnData(X=X, obs=obs, var=var)


def resolve_gene2go(
    train: ad.AnnData, gene2go: str | os.PathLike[str] | None
) -> dict[str, set[str]]:
    """GO annotations for GEARS: GEARS' pickle at ``gene2go``, else the simulation's prior."""
    if gene2go is not None:
        return load_gene2go(gene2go)
    if isinstance(train.uns.get("simulation"), Mapping):
        return gene2go_from_simulation(
            train.uns["simulation"], train.var_names.astype(str).tolist()
        )
    raise ValueError(
        "gears needs GO annotations: set the method parameter gene2go to GEARS' "
        "gene2go_all.pkl (paper configuration) or use a simulated dataset whose "
        "uns['simulation'] has 'programs' and 'grn'"
    )


def build_pert_data(
    train: ad.AnnData,
    conditions: list[str],
    root: str | os.PathLike[str],
    *,
    gene2go: Mapping[str, set[str]],
    seed: int = 0,
    batch_size: int = 32,
    test_batch_size: int = 128,
    val_fraction: float = 0.1,
) -> tuple[Any, dict[str, Any]]:
    """Build GEARS' ``PertData`` (processed, split, with data loaders) from our training data.

    Writes ``<root>/data/gene2go_all.pkl``, the perturbation gene set and GEARS' custom split
    dict under ``root``. Training conditions with a gene lacking GO terms are dropped (GEARS'
    own loader filters them too); without ``val`` conditions a seeded ``val_fraction`` of
    the training conditions is held out for model selection.

    Returns
    -------
    pert_data
        ``gears.PertData`` ready for ``gears.GEARS`` (no test loader; ``adata.X`` wrapped).
    info
        ``split`` (GEARS' set2conditions), ``dropped`` training conditions, ``requested``
        (condition -> sorted genes), ``ctrl_mean`` and ``labels`` (GEARS' spelling per cell).
    """
    from gears import PertData

    if "condition" not in train.obs:
        raise KeyError(f"training data lacks obs 'condition'; it has {list(train.obs.columns)}")
    root = Path(root)
    genes = train.var_names.astype(str).tolist()
    # Conditions in GEARS' spelling ("A+ctrl", "A+B" with sorted genes).
    labels = np.array(
        [format_condition(parse_condition(c)) for c in train.obs["condition"].astype(str)],
        dtype=object,
    )
    parsed = {c: parse_condition(c) for c in pd.unique(labels)}
    usable = {c for c, g in parsed.items() if all(x in gene2go for x in g)}
    dropped = sorted(set(parsed) - usable)
    if dropped:
        log.warning(
            "GEARS: %d training conditions have genes without GO terms, dropped: %s",
            len(dropped),
            dropped[:10],
        )
    if CTRL not in usable:
        raise ValueError("training data has no control cells (obs 'condition' == 'ctrl')")
    keep = np.isin(labels, sorted(usable))

    split = (
        train.obs["split"].astype(str).to_numpy()
        if "split" in train.obs
        else np.full(train.n_obs, "train", dtype=object)
    )
    cond_split = dict(zip(labels[keep], split[keep]))
    cond_split[CTRL] = "train"
    train_conds = sorted(c for c, s in cond_split.items() if s != "val")
    val_conds = sorted(c for c, s in cond_split.items() if s == "val")
    if not val_conds:
        candidates = [c for c in train_conds if c != CTRL]
        if len(candidates) < 2:
            raise ValueError("gears needs at least two perturbed training conditions")
        n_val = max(1, round(val_fraction * len(candidates)))
        rng = np.random.default_rng(seed)
        val_conds = sorted(rng.choice(candidates, n_val, replace=False).tolist())
        train_conds = [c for c in train_conds if c not in val_conds]
    set2conditions = {"train": train_conds, "val": val_conds, "test": []}

    requested = {c: parse_condition(c) for c in conditions}
    wanted_genes = set(genes)
    for g in [*parsed.values(), *requested.values()]:
        wanted_genes.update(g)

    gadata = _gears_adata(train, keep, labels)
    ctrl_mean = np.asarray(gadata.X[labels[keep] == CTRL].mean(axis=0), dtype=np.float64).ravel()

    data_path = root / "data"
    data_path.mkdir(parents=True, exist_ok=True)
    with open(data_path / "gene2go_all.pkl", "wb") as fh:
        pickle.dump(dict(gene2go), fh)
    gene_set = root / "pert_gene_set.pkl"
    with open(gene_set, "wb") as fh:
        pickle.dump(sorted(wanted_genes), fh)
    split_file = root / "split.pkl"
    with open(split_file, "wb") as fh:
        pickle.dump(set2conditions, fh)

    pert_data = PertData(str(data_path), gene_set_path=str(gene_set), default_pert_graph=False)
    pert_data.new_data_process(dataset_name="benchmark", adata=gadata)
    pert_data.prepare_split(split="custom", split_dict_path=str(split_file))
    pert_data.get_dataloader(batch_size=batch_size, test_batch_size=test_batch_size)
    pert_data.dataloader.pop("test_loader", None)  # the harness scores the test set itself
    pert_data.adata.X = _SeriesIndexableCSR(pert_data.adata.X)
    info = {
        "split": set2conditions,
        "dropped": dropped,
        "requested": requested,
        "ctrl_mean": ctrl_mean,
        "labels": labels[keep],
    }
    return pert_data, info


@register("perturbation", "gears", label="GEARS", env="gears")
def gears(
    train: ad.AnnData,
    conditions: list[str],
    *,
    seed: int,
    epochs: int = 20,
    batch_size: int = 32,
    test_batch_size: int = 128,
    hidden_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    num_similar_genes_go_graph: int = 20,
    num_similar_genes_co_express_graph: int = 20,
    coexpress_threshold: float = 0.4,
    gene2go: str | None = None,
    val_fraction: float = 0.1,
    device: str = "auto",
    workdir: str | None = None,
) -> ad.AnnData:
    """Train GEARS on the training conditions and predict the mean of each requested one.

    Parameters
    ----------
    epochs, batch_size, test_batch_size, hidden_size, lr, weight_decay
        GEARS' training settings (defaults: GEARS' own, as in the scGPT paper's comparison).
    num_similar_genes_go_graph, num_similar_genes_co_express_graph, coexpress_threshold
        GEARS' graph settings (its defaults).
    gene2go
        Path to GEARS' ``gene2go_all.pkl``; None builds it from ``train.uns["simulation"]``
        (simulated sets only).
    val_fraction
        Share of training conditions held out for model selection when the data has no
        ``val`` conditions.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    workdir
        Folder for GEARS' files; None uses a temporary folder removed afterwards.

    Returns
    -------
    AnnData with one row per condition; ``uns["gears"]`` lists conditions GEARS could not
    predict (a gene without GO annotation), which are given the control mean.
    """
    # Before GEARS' imports (~10 s): data without GO annotations is refused at once.
    go = resolve_gene2go(train, gene2go)

    import torch
    from gears import GEARS
    from gears.utils import GeneSimNetwork

    # gears.gears seeds torch with 0 at import time: seed again after importing it.
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (GEARS samples control cells with np.random)
    torch.manual_seed(seed)

    genes = train.var_names.astype(str).tolist()
    device = _resolve_device(device)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gears_")))
        else:
            root = Path(workdir)
        # GEARS writes some files relative to the working directory: keep them in root.
        root.mkdir(parents=True, exist_ok=True)
        stack.enter_context(contextlib.chdir(root))
        pert_data, info = build_pert_data(
            train,
            conditions,
            root,
            gene2go=go,
            seed=seed,
            batch_size=batch_size,
            test_batch_size=test_batch_size,
            val_fraction=val_fraction,
        )
        requested = info["requested"]
        ctrl_mean = info["ctrl_mean"]

        model = GEARS(pert_data, device=device)
        pert_list = model.pert_list
        edges = go_similarity_edges(go, pert_list, num_similar_genes_go_graph)
        go_net = GeneSimNetwork(edges, pert_list, node_map=pert_data.node_map_pert)
        model.model_initialize(
            hidden_size=hidden_size,
            num_similar_genes_go_graph=num_similar_genes_go_graph,
            num_similar_genes_co_express_graph=num_similar_genes_co_express_graph,
            coexpress_threshold=coexpress_threshold,
            G_go=go_net.edge_index,
            G_go_weight=go_net.edge_weight,
        )
        model.train(epochs=epochs, lr=lr, weight_decay=weight_decay)

        in_graph = set(pert_list)
        predictable = sorted({g for g in requested.values() if g and all(x in in_graph for x in g)})
        preds = model.predict([list(g) for g in predictable]) if predictable else {}

    rows, unpredictable = [], []
    for condition, g in requested.items():
        key = "_".join(g)
        if g and key in preds:
            rows.append(np.asarray(preds[key], dtype=np.float64).ravel())
        else:
            if g:
                unpredictable.append(condition)
            rows.append(ctrl_mean)
    if unpredictable:
        log.warning(
            "GEARS cannot predict %d condition(s) whose genes lack GO terms (given the "
            "control mean): %s",
            len(unpredictable),
            unpredictable[:10],
        )
    out = ad.AnnData(
        X=np.vstack(rows).astype(np.float32) if rows else np.zeros((0, len(genes)), np.float32),
        obs=pd.DataFrame(index=pd.Index([str(c) for c in conditions], name="condition")),
        var=pd.DataFrame(index=train.var_names.copy()),
    )
    out.uns["gears"] = {
        "not_in_go_graph": unpredictable,
        "dropped_training_conditions": info["dropped"],
        "val_conditions": info["split"]["val"],
        "device": device,
    }
    return out
