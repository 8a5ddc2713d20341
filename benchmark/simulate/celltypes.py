"""Cell types sequenced in batches: :func:`simulate_celltypes` and the batched cells it shares
with the multi-omic simulators."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.simulate._common import (
    STREAM_CELLTYPES,
    assign_cells,
    obs_frame,
    sample_nb,
    stream_rng,
)
from benchmark.simulate.batch_effects import BatchEffects, apply_batch_effects, make_batch_effects
from benchmark.simulate.world import (
    SimulationWorld,
    cell_states,
    expected_counts,
    resolve_world,
    var_frame,
    world_uns,
)

__all__ = ["BatchedCells", "sample_batched_cells", "simulate_celltypes"]


@dataclass(frozen=True, eq=False)
class BatchedCells:
    """Cells of the world's types in batches, as :func:`sample_batched_cells` draws them.

    Attributes
    ----------
    type_code, batch_code
        ``(n_cells,)`` cell-type and batch index of each cell.
    activity
        ``(n_cells, n_programs)`` jittered program activities.
    log_abundance
        ``(n_cells, n_genes)`` regulated natural-log abundance.
    counts
        ``(n_cells, n_genes)`` dense ``int64`` RNA counts, batch effects applied.
    effects
        The batches' technical effects.
    """

    type_code: np.ndarray
    batch_code: np.ndarray
    activity: np.ndarray
    log_abundance: np.ndarray
    counts: np.ndarray
    effects: BatchEffects


def sample_batched_cells(
    world: SimulationWorld,
    n_cells: int,
    n_batches: int,
    rng: np.random.Generator,
    *,
    activity_sd: float,
    tf_sd: float,
    library_sd: float,
    batch_gene_sigma: float,
) -> BatchedCells:
    """Draw cells of the world's types in batches and their RNA counts with batch effects.

    Draws, in order: types and batches, cell states, counts, batch effects, their application
    (the first draws of :func:`simulate_celltypes` and the multi-omic simulators).
    """
    type_code, batch_code = assign_cells(n_cells, len(world.cell_types), n_batches, rng)
    activity, log_ab = cell_states(
        world, world.type_activity[type_code], rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    counts = sample_nb(expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
    effects = make_batch_effects(n_batches, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    counts = apply_batch_effects(counts, batch_code, effects, rng)
    return BatchedCells(type_code, batch_code, activity, log_ab, counts, effects)


def simulate_celltypes(
    world: SimulationWorld | None = None,
    *,
    n_cells: int = 2000,
    n_batches: int = 3,
    seed: int = 0,
    activity_sd: float = 0.15,
    tf_sd: float = 0.3,
    library_sd: float = 0.3,
    batch_gene_sigma: float = 0.4,
) -> ad.AnnData:
    """Simulate several cell types sequenced in several batches.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()``.
    n_cells
        Number of cells.
    n_batches
        Number of batches; the last one is the annotation query (``split == "query"``), the
        others the reference. With one batch every cell is reference.
    seed
        Seed of this data set (the world has its own).
    activity_sd, tf_sd, library_sd
        Cell-to-cell SD of program activities, TF log-levels and log library size.
    batch_gene_sigma
        SD of the per-batch log gene-wise scaling (batch-effect strength).

    Returns
    -------
    anndata.AnnData
        ``X`` raw counts (CSR float32); obs ``cell_type``, ``batch``, ``split``, ``n_counts``;
        var ``is_tf``, ``program``; ``uns["simulation"]`` the ground truth (programs, network
        edges, per-batch effects, parameters).
    """
    world = resolve_world(world)
    if n_cells < 1 or n_batches < 1:
        raise ValueError(
            f"simulate_celltypes: n_cells and n_batches must be >= 1, got {n_cells}, {n_batches}"
        )
    rng = stream_rng(STREAM_CELLTYPES, seed)
    cells = sample_batched_cells(
        world,
        n_cells,
        n_batches,
        rng,
        activity_sd=activity_sd,
        tf_sd=tf_sd,
        library_sd=library_sd,
        batch_gene_sigma=batch_gene_sigma,
    )
    counts, batch_code, effects = cells.counts, cells.batch_code, cells.effects

    obs = obs_frame(n_cells)
    obs["cell_type"] = pd.Categorical.from_codes(cells.type_code, categories=list(world.cell_types))
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    split = np.where((batch_code == n_batches - 1) & (n_batches > 1), "query", "reference").astype(
        object
    )
    obs["split"] = pd.Categorical(split, categories=["reference", "query"])
    obs["n_counts"] = counts.sum(axis=1).astype(np.float32)

    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_celltypes",
        "seed": int(seed),
        **world_uns(world),
        "params": {
            "n_cells": n_cells,
            "n_batches": n_batches,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "batch_gene_sigma": batch_gene_sigma,
            "library_size": world.library_size,
        },
        "cell_type_activity": {
            "cell_types": list(world.cell_types),
            "programs": list(world.program_names),
            "activity": np.asarray(world.type_activity, dtype=float),
        },
        "batch_effects": effects.to_uns(),
    }
    return adata
