"""scGLUE (Cao & Gao 2022, package ``scglue``): graph-linked unified embedding of RNA and ATAC.

GLUE trains one variational autoencoder per modality whose decoders share feature
embeddings from a guidance graph (gene <-> peak edges), with an adversarial discriminator
aligning the modalities' cell embeddings. Steps follow GLUE's RNA + ATAC tutorial:

1. RNA (cells with ``obs["has_rna"]``): raw counts in ``layers["counts"]``, highly variable
   genes (Seurat v3 flavour, ``n_hvg``), normalise / log1p / scale / PCA -> ``use_rep``.
2. ATAC (cells with ``obs["has_atac"]``): LSI (``scglue.data.lsi``) -> ``use_rep``.
3. Guidance graph, either

   - ``"proximity"`` (real data, GLUE's default): ``scglue.genomics.rna_anchored_guidance_graph``
     from genomic coordinates. Genes need ``var`` ``chrom``, ``chromStart``, ``chromEnd``
     (and ``strand``), filled by ``scglue.data.get_gene_annotation`` from the GTF file named
     by ``genome_annotation`` (the config supplies it as a registry download, e.g. GENCODE's
     ``gencode.v*.annotation.gtf.gz``; genes are matched on ``gtf_by``). Peaks take their
     coordinates from the same columns or from names like ``chr1:100-600`` / ``chr1-100-600``.
     Needs ``bedtools`` (the ``glue`` environment has it).
   - ``"linked_gene"`` (the simulator): an edge gene <-> peak (weight 1, sign 1, both
     directions) for every peak's ``var["linked_gene"]``, plus a self-loop on every feature,
     as ``scglue.graph.check_graph`` requires.

   Peaks linked to a highly variable gene are the ATAC features used (GLUE's propagation).
4. ``configure_dataset`` with the negative binomial model, ``use_batch`` when the modality
   has more than one batch; ``fit_SCGLUE`` (pre-training, balancing weights, fine-tuning).
5. Cell embeddings from each modality's encoder (posterior means).

Paired data: GLUE treats the modalities as unpaired (the standard model the paper compared
against); a cell measured in both gets the mean of its RNA and ATAC embeddings. With
``paired=True`` the cells are also matched by ``obs_names`` (``use_obs_names``) and trained
with ``PairedSCGLUEModel``. Mosaic data: RNA cells get their RNA embedding, ATAC cells their
ATAC embedding (the mean where a cell has both). Proteins are not used: GLUE's published
model and the paper's comparison are RNA + ATAC. Data without ATAC (or without RNA) is
refused with a ``ValueError``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd

from baselines._multiomics_input import (
    batch_labels,
    cells_with,
    counts_csr,
    feature_masks,
    linked_genes,
)
from contract.registry import register

if TYPE_CHECKING:
    import networkx as nx

METHOD = "scglue"
COORD_COLUMNS: tuple[str, ...] = ("chrom", "chromStart", "chromEnd")
"""``var`` columns of genomic coordinates (BED convention) the proximity graph needs."""
_PEAK_NAME = re.compile(r"^(?P<chrom>[^:\-_]+)[:\-_](?P<start>\d+)[\-_](?P<end>\d+)$")
_EPOCH_LINE = re.compile(
    r"\[Epoch (?P<epoch>\d+)\] train=(?P<train>\{.*?\}), val=.*, (?P<seconds>[\d.]+)s elapsed"
)


@dataclass
class GlueResult:
    """Output of :func:`fit_glue`.

    Attributes
    ----------
    embedding
        ``n_cells x latent_dim`` joint embedding in ``adata.obs_names`` order.
    history
        Per epoch, the training losses GLUE reports (pre-training first, then fine-tuning),
        as ``{"stage": ..., "epoch": ..., "seconds": <epoch time>, <loss name>: value}``.
    guidance
        ``"proximity"`` or ``"linked_gene"``.
    n_edges
        Gene <-> peak edges of the guidance graph used (one direction, self-loops excluded).
    """

    embedding: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    guidance: str = ""
    n_edges: int = 0


class _EpochLog(logging.Handler):
    """Collects GLUE's ``[Epoch n] train={...}`` lines (logged every epoch while fitting)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _EPOCH_LINE.search(record.getMessage())
        if match is None:
            return
        import ast

        epoch = int(match["epoch"])
        stage = "pretrain"
        if any(r["stage"] == "finetune" for r in self.records) or (
            self.records and epoch <= self.records[-1]["epoch"]
        ):
            stage = "finetune"
        self.records.append(
            {
                "stage": stage,
                "epoch": epoch,
                "seconds": float(match["seconds"]),
                **ast.literal_eval(match["train"]),
            }
        )


@contextlib.contextmanager
def _glue_settings(device: str, n_threads: int) -> Iterator[_EpochLog]:
    """Quiet, single-process GLUE with per-epoch loss capture; restores the settings after."""
    import scglue
    import torch
    from scglue.models import base
    from scglue.models import scglue as glue_models
    from threadpoolctl import threadpool_limits

    cpu_only = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{METHOD}: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    saved = {
        "CPU_ONLY": scglue.config.CPU_ONLY,
        "GRAPH_SHUFFLE_NUM_WORKERS": scglue.config.GRAPH_SHUFFLE_NUM_WORKERS,
        "ARRAY_SHUFFLE_NUM_WORKERS": scglue.config.ARRAY_SHUFFLE_NUM_WORKERS,
        "DATALOADER_NUM_WORKERS": scglue.config.DATALOADER_NUM_WORKERS,
        "PRINT_LOSS_INTERVAL": scglue.config.PRINT_LOSS_INTERVAL,
    }
    console_level = scglue.log.console_log_level
    threads = torch.get_num_threads()
    handler = _EpochLog()
    stack = contextlib.ExitStack()
    loggers = {
        cls.logger
        for cls in (base.Trainer, glue_models.SCGLUETrainer, glue_models.PairedSCGLUETrainer)
    }
    try:
        scglue.config.CPU_ONLY = cpu_only
        # Shuffling in worker processes would use more than the cores we are given.
        scglue.config.GRAPH_SHUFFLE_NUM_WORKERS = 0
        scglue.config.ARRAY_SHUFFLE_NUM_WORKERS = 0
        scglue.config.DATALOADER_NUM_WORKERS = 0
        scglue.config.PRINT_LOSS_INTERVAL = 1
        scglue.log.console_log_level = logging.WARNING
        torch.set_num_threads(n_threads)
        # BLAS / OpenMP pools too: idle pool threads spinning on a shared machine slowed
        # GLUE's training several-fold.
        stack.enter_context(threadpool_limits(limits=n_threads))
        for logger in loggers:
            logger.addHandler(handler)
        yield handler
    finally:
        stack.close()
        for logger in loggers:
            logger.removeHandler(handler)
        for key, value in saved.items():
            setattr(scglue.config, key, value)
        scglue.log.console_log_level = console_level
        torch.set_num_threads(threads)


def _peak_coordinates(atac: ad.AnnData) -> None:
    """Fill ``chrom``/``chromStart``/``chromEnd`` of peaks from their names where missing."""
    if all(c in atac.var for c in COORD_COLUMNS):
        return
    parsed = [_PEAK_NAME.match(str(n)) for n in atac.var_names]
    bad = [str(n) for n, m in zip(atac.var_names, parsed) if m is None]
    if bad:
        raise ValueError(
            f"{METHOD}: guidance='proximity' needs peak coordinates: var columns "
            f"{list(COORD_COLUMNS)} or names like 'chr1:100-600'; e.g. {bad[:3]} are neither"
        )
    atac.var["chrom"] = [m["chrom"] for m in parsed]
    atac.var["chromStart"] = [int(m["start"]) for m in parsed]
    atac.var["chromEnd"] = [int(m["end"]) for m in parsed]


def _proximity_graph(
    rna: ad.AnnData, atac: ad.AnnData, genome_annotation: str | None, gtf_by: str
) -> nx.MultiDiGraph:
    """GLUE's genomic-proximity guidance graph (also marks ATAC ``highly_variable``)."""
    import scglue

    if genome_annotation is not None:
        scglue.data.get_gene_annotation(rna, gtf=genome_annotation, gtf_by=gtf_by)
    missing = [c for c in COORD_COLUMNS if c not in rna.var]
    if missing:
        raise ValueError(
            f"{METHOD}: guidance='proximity' needs gene coordinates var {list(COORD_COLUMNS)}; "
            f"missing {missing}: pass genome_annotation=<GTF file>"
        )
    located = rna.var["chrom"].notna().to_numpy()
    if not located.any():
        raise ValueError(
            f"{METHOD}: no RNA gene was found in genome_annotation={genome_annotation!r} "
            f"(matched on {gtf_by!r})"
        )
    if not located.all():
        # Genes absent from the annotation cannot be placed; GLUE's tutorial drops them.
        rna._inplace_subset_var(located)
    for col in ("chromStart", "chromEnd"):
        rna.var[col] = rna.var[col].astype(int)
    _peak_coordinates(atac)
    return scglue.genomics.rna_anchored_guidance_graph(rna, atac)


def _linked_gene_graph(
    rna: ad.AnnData, atac: ad.AnnData, peak_genes: np.ndarray
) -> nx.MultiDiGraph:
    """Guidance graph from ``linked_gene``: gene <-> peak edges and self-loops (weight 1, sign 1).

    Marks ATAC features ``highly_variable`` where the linked gene is highly variable, as
    GLUE's ``propagate_highly_variable`` does.
    """
    import networkx as nx

    genes = set(rna.var_names)
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(rna.var_names)
    graph.add_nodes_from(atac.var_names)
    edges = [(g, p) for g, p in zip(peak_genes, atac.var_names) if g in genes]
    graph.add_edges_from((g, p, {"weight": 1.0, "sign": 1, "type": "fwd"}) for g, p in edges)
    graph.add_edges_from((p, g, {"weight": 1.0, "sign": 1, "type": "rev"}) for g, p in edges)
    graph.add_edges_from(
        (v, v, {"weight": 1.0, "sign": 1, "type": "loop"}) for v in list(graph.nodes)
    )
    hv_genes = set(rna.var_names[rna.var["highly_variable"].to_numpy()])
    hv_peaks = {p for g, p in edges if g in hv_genes}
    atac.var["highly_variable"] = [p in hv_peaks for p in atac.var_names]
    return graph


def _resolve_guidance(adata: ad.AnnData, masks: dict, guidance: str, genome: str | None) -> str:
    if guidance not in ("auto", "proximity", "linked_gene"):
        raise ValueError(
            f"{METHOD}: guidance must be 'auto', 'proximity' or 'linked_gene', got {guidance!r}"
        )
    if guidance != "auto":
        return guidance
    if genome is not None:
        return "proximity"
    has_coords = all(c in adata.var for c in COORD_COLUMNS) and all(
        adata.var.loc[masks[m], c].notna().any() for m in ("rna", "atac") for c in COORD_COLUMNS
    )
    return "proximity" if has_coords else "linked_gene"


def fit_glue(
    adata: ad.AnnData,
    *,
    seed: int,
    max_epochs: int | None = None,
    latent_dim: int = 50,
    n_hvg: int = 2000,
    n_pcs: int = 100,
    n_lsi: int = 100,
    paired: bool = False,
    guidance: str = "auto",
    genome_annotation: str | None = None,
    gtf_by: str = "gene_name",
    batch_key: str = "batch",
    skip_balance: bool = False,
    device: str = "auto",
    n_threads: int = 1,
) -> GlueResult:
    """Train GLUE on the task input; see :func:`scglue_multiomics` for the parameters."""
    import scanpy as sc
    import scglue
    import torch

    masks = feature_masks(adata, METHOD)
    has_rna = cells_with(adata, "rna", METHOD) if "rna" in masks else np.zeros(adata.n_obs, bool)
    has_atac = cells_with(adata, "atac", METHOD) if "atac" in masks else np.zeros(adata.n_obs, bool)
    if not (has_rna.any() and has_atac.any()):
        present = [m for m in masks if cells_with(adata, m, METHOD).any()]
        raise ValueError(
            f"{METHOD} needs RNA and ATAC; this dataset has {' + '.join(present) or 'neither'}"
        )
    orphan = ~(has_rna | has_atac)
    if orphan.any():
        raise ValueError(
            f"{METHOD}: {int(orphan.sum())} cells have neither RNA nor ATAC (e.g. "
            f"{list(adata.obs_names[orphan][:3])}); GLUE cannot embed them"
        )
    mode = _resolve_guidance(adata, masks, guidance, genome_annotation)
    peak_genes = (
        linked_genes(adata, masks["atac"], METHOD, "atac") if mode == "linked_gene" else None
    )

    counts = counts_csr(adata)
    batches = batch_labels(adata, batch_key, METHOD)

    def domain(cells: np.ndarray, features: np.ndarray) -> ad.AnnData:
        sub = ad.AnnData(
            X=counts[cells][:, features],
            obs=pd.DataFrame({batch_key: batches.to_numpy()[cells]}, index=adata.obs_names[cells]),
            var=adata.var.loc[features].copy(),
        )
        sub.layers["counts"] = sub.X.copy()
        return sub

    rna = domain(has_rna, masks["rna"])
    atac = domain(has_atac, masks["atac"])

    # RNA: GLUE tutorial preprocessing.
    if rna.n_vars > n_hvg:
        sc.pp.highly_variable_genes(rna, n_top_genes=n_hvg, flavor="seurat_v3")
    else:
        rna.var["highly_variable"] = True
    with contextlib.ExitStack() as stack:
        epochs = stack.enter_context(_glue_settings(device, n_threads))
        sc.pp.normalize_total(rna)
        sc.pp.log1p(rna)
        sc.pp.scale(rna)
        n_comps = min(n_pcs, rna.n_obs - 1, int(rna.var["highly_variable"].sum()) - 1)
        sc.pp.pca(rna, n_comps=n_comps, svd_solver="arpack", random_state=seed)
        scglue.data.lsi(
            atac, n_components=min(n_lsi, atac.n_obs - 1, atac.n_vars - 1), n_iter=15,
            random_state=seed,
        )  # fmt: skip

        if mode == "proximity":
            graph = _proximity_graph(rna, atac, genome_annotation, gtf_by)
        else:
            graph = _linked_gene_graph(rna, atac, peak_genes)
        hv = [
            *rna.var_names[rna.var["highly_variable"]],
            *atac.var_names[atac.var["highly_variable"]],
        ]
        if not atac.var["highly_variable"].any():
            raise ValueError(
                f"{METHOD}: no ATAC peak is linked to a highly variable gene in the guidance "
                f"graph ({mode}); nothing connects the modalities"
            )
        graph = graph.subgraph(hv).copy()
        n_edges = sum(1 for u, v in graph.edges() if u != v) // 2

        for data, rep in ((rna, "X_pca"), (atac, "X_lsi")):
            scglue.models.configure_dataset(
                data,
                "NB",
                use_highly_variable=True,
                use_layer="counts",
                use_rep=rep,
                use_batch=batch_key if data.obs[batch_key].nunique() > 1 else None,
                use_obs_names=paired,
            )
        # Numba's first parallel launch (scanpy's normalise / log1p / scale) resets the
        # process's OpenMP thread count, which torch shares: set it again before training
        # (two OpenMP threads on a contended machine made GLUE's epochs 10x slower).
        torch.set_num_threads(n_threads)
        fit_kws: dict[str, Any] = {"directory": stack.enter_context(tempfile.TemporaryDirectory())}
        if max_epochs is not None:
            fit_kws["max_epochs"] = int(max_epochs)
        model = scglue.models.fit_SCGLUE(
            {"rna": rna, "atac": atac},
            graph,
            model=scglue.models.PairedSCGLUEModel if paired else scglue.models.SCGLUEModel,
            skip_balance=skip_balance,
            init_kws={"latent_dim": latent_dim, "random_seed": seed},
            fit_kws=fit_kws,
        )
        z_rna = model.encode_data("rna", rna)
        z_atac = model.encode_data("atac", atac)

    embedding = np.zeros((adata.n_obs, latent_dim), dtype=np.float64)
    embedding[has_rna] += z_rna
    embedding[has_atac] += z_atac
    embedding /= (has_rna.astype(int) + has_atac.astype(int))[:, None]
    return GlueResult(
        embedding=embedding.astype(np.float32),
        history=list(epochs.records),
        guidance=mode,
        n_edges=n_edges,
    )


@register("multiomics", "scglue", label="scGLUE", env="glue")
def scglue_multiomics(
    adata: ad.AnnData,
    *,
    seed: int,
    max_epochs: int | None = None,
    latent_dim: int = 50,
    n_hvg: int = 2000,
    n_pcs: int = 100,
    n_lsi: int = 100,
    paired: bool = False,
    guidance: str = "auto",
    genome_annotation: str | None = None,
    gtf_by: str = "gene_name",
    batch_key: str = "batch",
    skip_balance: bool = False,
    device: str = "auto",
    n_threads: int = 1,
) -> np.ndarray:
    """scGLUE joint embedding of RNA and ATAC cells (paired or mosaic); proteins unused.

    Defaults are GLUE's tutorial (2,000 HVGs, 100 PCs, 100 LSI components, latent 50,
    ``fit_SCGLUE``'s automatic epochs). See the module docstring for the steps.

    Parameters
    ----------
    adata
        Task input: raw counts, ``var["modality"]`` (needs "rna" and "atac"),
        ``var["linked_gene"]`` (guidance ``"linked_gene"``), ``obs[batch_key]``,
        ``obs["has_rna"]`` / ``obs["has_atac"]``.
    seed
        GLUE's ``random_seed`` (initialisation, data order) and PCA / LSI random state.
    max_epochs
        Epochs of each of GLUE's two stages (pre-training and fine-tuning); ``None`` is
        GLUE's automatic choice (from the number of cells and the learning rate).
    latent_dim
        Embedding width.
    n_hvg, n_pcs, n_lsi
        Highly variable genes, RNA principal components and ATAC LSI components.
    paired
        Also match cells across modalities by ``obs_names`` (``PairedSCGLUEModel``).
    guidance
        ``"proximity"`` (genomic windows; needs coordinates, see ``genome_annotation``),
        ``"linked_gene"`` (``var["linked_gene"]``) or ``"auto"``: proximity when a GTF is
        given or genes and peaks carry ``chrom``/``chromStart``/``chromEnd``.
    genome_annotation
        GTF file (e.g. GENCODE's, a registry download the config names) giving the genes'
        coordinates via ``scglue.data.get_gene_annotation``.
    gtf_by
        GTF attribute matched to the RNA ``var_names`` (``"gene_name"`` for symbols).
    batch_key
        obs column with the batch; used as GLUE's ``use_batch`` where a modality has
        more than one batch.
    skip_balance
        Skip GLUE's cell-type balancing weights between the two training stages.
    device
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda"``.
    n_threads
        Torch CPU threads.

    Returns
    -------
    ``n_cells x latent_dim`` float32: a cell's RNA embedding, ATAC embedding, or their
    mean when it has both.
    """
    return fit_glue(
        adata,
        seed=seed,
        max_epochs=max_epochs,
        latent_dim=latent_dim,
        n_hvg=n_hvg,
        n_pcs=n_pcs,
        n_lsi=n_lsi,
        paired=paired,
        guidance=guidance,
        genome_annotation=genome_annotation,
        gtf_by=gtf_by,
        batch_key=batch_key,
        skip_balance=skip_balance,
        device=device,
        n_threads=n_threads,
    ).embedding
