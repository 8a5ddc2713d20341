"""A cell atlas of tissues, donors and batches: the demo scGPT's pre-training corpus."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.simulate._common import (
    STREAM_ATLAS,
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

__all__ = ["simulate_atlas"]


def _tissue_types(
    n_tissues: int, n_types: int, per_tissue: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Cell-type sets of the tissues: windows of a random type order, spread over it.

    Tissue ``t``'s window starts at ``floor(t * n_types / n_tissues)``, so together the
    tissues cover every type; neighbouring tissues overlap when ``per_tissue`` exceeds the
    spacing and distant ones are disjoint (6 types, 4 tissues of 3: {a,b,c}, {b,c,d},
    {d,e,f}, {e,f,a}).
    """
    order = rng.permutation(n_types)
    return [
        np.sort(order[(t * n_types // n_tissues + np.arange(per_tissue)) % n_types])
        for t in range(n_tissues)
    ]


@dataclass(frozen=True, eq=False)
class _AtlasStructure:
    """What the atlas' structure seed fixes: tissues, donors and batches (not the cells)."""

    tissue_types: list[np.ndarray]
    tissue_shift: np.ndarray
    donor_shift: np.ndarray
    effects: BatchEffects
    type_props: list[np.ndarray]
    donors_per_tissue: int
    batches_per_donor: int

    @property
    def n_tissues(self) -> int:
        return len(self.tissue_types)

    @property
    def n_donors(self) -> int:
        return len(self.donor_shift)


@dataclass(frozen=True, eq=False)
class _AtlasCells:
    """The atlas' counts (CSR float32, tissue by tissue) and per-cell codes."""

    X: sp.csr_matrix
    type_code: np.ndarray
    tissue_code: np.ndarray
    donor_code: np.ndarray
    batch_code: np.ndarray


def _check_atlas_args(
    n_types: int,
    n_cells: int,
    n_tissues: int,
    types_per_tissue: int,
    donors_per_tissue: int,
    batches_per_donor: int,
) -> None:
    if n_tissues < 1 or not 1 <= types_per_tissue <= n_types:
        raise ValueError(
            f"simulate_atlas: need n_tissues >= 1 and 1 <= types_per_tissue <= {n_types}, "
            f"got {n_tissues}, {types_per_tissue}"
        )
    if donors_per_tissue < 1 or batches_per_donor < 1 or n_cells < n_tissues:
        raise ValueError(
            f"simulate_atlas: need donors_per_tissue, batches_per_donor >= 1 and n_cells >= "
            f"n_tissues, got {donors_per_tissue}, {batches_per_donor}, {n_cells}"
        )


def _draw_atlas_structure(
    world: SimulationWorld,
    rng: np.random.Generator,
    *,
    n_tissues: int,
    types_per_tissue: int,
    donors_per_tissue: int,
    batches_per_donor: int,
    tissue_sd: float,
    donor_sd: float,
    batch_gene_sigma: float,
) -> _AtlasStructure:
    """Tissues' cell types and activity shifts, donors' shifts, batch effects, type mixtures."""
    tissue_types = _tissue_types(n_tissues, len(world.cell_types), types_per_tissue, rng)
    n_programs = len(world.program_names)
    tissue_shift = rng.normal(0.0, tissue_sd, (n_tissues, n_programs))
    n_donors = n_tissues * donors_per_tissue
    donor_shift = rng.normal(0.0, donor_sd, (n_donors, n_programs))
    n_batch = n_donors * batches_per_donor
    effects = make_batch_effects(n_batch, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    type_props = [rng.dirichlet(np.full(len(types), 4.0)) for types in tissue_types]
    return _AtlasStructure(
        tissue_types=tissue_types,
        tissue_shift=tissue_shift,
        donor_shift=donor_shift,
        effects=effects,
        type_props=type_props,
        donors_per_tissue=donors_per_tissue,
        batches_per_donor=batches_per_donor,
    )


def _draw_atlas_cells(
    world: SimulationWorld,
    structure: _AtlasStructure,
    n_cells: int,
    rng: np.random.Generator,
    *,
    activity_sd: float,
    tf_sd: float,
    library_sd: float,
) -> _AtlasCells:
    """Cells tissue by tissue (about equal numbers): type, donor, batch, state and counts."""
    n_tissues = structure.n_tissues
    sizes = np.full(n_tissues, n_cells // n_tissues)
    sizes[: n_cells % n_tissues] += 1
    blocks, type_codes, tissue_codes, donor_codes, batch_codes = [], [], [], [], []
    for t, size in enumerate(sizes):
        tissue_types = structure.tissue_types[t]
        types = tissue_types[rng.choice(len(tissue_types), size, p=structure.type_props[t])]
        per_tissue, per_donor = structure.donors_per_tissue, structure.batches_per_donor
        donors = t * per_tissue + np.sort(rng.integers(0, per_tissue, size))
        batches = donors * per_donor + rng.integers(0, per_donor, size)
        activity = (
            world.type_activity[types] + structure.tissue_shift[t] + structure.donor_shift[donors]
        )
        _, log_ab = cell_states(
            world, np.clip(activity, 0.0, None), rng, activity_sd=activity_sd, tf_sd=tf_sd
        )
        counts = sample_nb(expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
        counts = apply_batch_effects(counts, batches, structure.effects, rng)
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
        type_codes.append(types)
        tissue_codes.append(np.full(size, t))
        donor_codes.append(donors)
        batch_codes.append(batches)
    return _AtlasCells(
        X=sp.vstack(blocks, format="csr"),
        type_code=np.concatenate(type_codes),
        tissue_code=np.concatenate(tissue_codes),
        donor_code=np.concatenate(donor_codes),
        batch_code=np.concatenate(batch_codes),
    )


def _atlas_obs(
    world: SimulationWorld, structure: _AtlasStructure, cells: _AtlasCells
) -> pd.DataFrame:
    n_cells = cells.X.shape[0]
    obs = obs_frame(n_cells, prefix="atlas", width=6)
    obs["cell_type"] = pd.Categorical.from_codes(cells.type_code, categories=list(world.cell_types))
    obs["tissue"] = pd.Categorical.from_codes(
        cells.tissue_code, categories=[f"tissue{t}" for t in range(structure.n_tissues)]
    )
    obs["donor"] = pd.Categorical.from_codes(
        cells.donor_code, categories=[f"donor{d:02d}" for d in range(structure.n_donors)]
    )
    obs["batch"] = pd.Categorical.from_codes(
        cells.batch_code, categories=list(structure.effects.names)
    )
    obs["split"] = pd.Categorical(np.full(n_cells, "train", dtype=object), categories=["train"])
    obs["n_counts"] = np.asarray(cells.X.sum(axis=1)).ravel().astype(np.float32)
    return obs


def simulate_atlas(
    world: SimulationWorld | None = None,
    *,
    n_cells: int = 30000,
    n_tissues: int = 4,
    types_per_tissue: int = 3,
    donors_per_tissue: int = 3,
    batches_per_donor: int = 2,
    seed: int = 0,
    cell_seed: int | None = None,
    tissue_sd: float = 0.1,
    donor_sd: float = 0.05,
    activity_sd: float = 0.15,
    tf_sd: float = 0.3,
    library_sd: float = 0.3,
    batch_gene_sigma: float = 0.4,
) -> ad.AnnData:
    """Simulate a cell atlas of several tissues, donors and batches (a pre-training corpus).

    Every tissue holds a subset of the world's cell types (neighbouring tissues share some;
    see :func:`_tissue_types`) and shifts the program activities of its cells by a tissue
    context (``tissue_sd``); each donor adds a smaller shift (``donor_sd``); each donor's
    cells are sequenced in ``batches_per_donor`` batches with their own technical effects.
    Cells are stored tissue by tissue, as atlases concatenated from studies are.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()`` (the world of the demo data sets, so a
        model pre-trained on the atlas knows their genes and programs).
    n_cells
        Number of cells (split about equally among tissues).
    n_tissues, types_per_tissue
        Number of tissues and cell types per tissue.
    donors_per_tissue, batches_per_donor
        Donors per tissue and sequencing batches per donor.
    seed
        Seed of the atlas' structure: tissues' cell types and shifts, donors, batch effects
        (the world has its own).
    cell_seed
        Seed of the cells (default ``seed``). Another value draws new cells of the same
        tissues, donors and batches: held-out cells for a model pre-trained on the atlas.
    tissue_sd, donor_sd
        SD of the per-tissue and per-donor shifts of program activities.
    activity_sd, tf_sd, library_sd, batch_gene_sigma
        As in :func:`~benchmark.simulate.simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        ``X`` raw counts (CSR float32); obs ``cell_type``, ``tissue``, ``donor``, ``batch``,
        ``split`` (all ``"train"``), ``n_counts``; var ``is_tf``, ``program``;
        ``uns["simulation"]`` the ground truth (programs, network, tissues' cell types and
        activity shifts, batch effects, parameters).
    """
    world = resolve_world(world)
    _check_atlas_args(
        len(world.cell_types),
        n_cells,
        n_tissues,
        types_per_tissue,
        donors_per_tissue,
        batches_per_donor,
    )
    structure = _draw_atlas_structure(
        world,
        stream_rng(STREAM_ATLAS, seed),
        n_tissues=n_tissues,
        types_per_tissue=types_per_tissue,
        donors_per_tissue=donors_per_tissue,
        batches_per_donor=batches_per_donor,
        tissue_sd=tissue_sd,
        donor_sd=donor_sd,
        batch_gene_sigma=batch_gene_sigma,
    )
    # The cells have their own stream, so cell_seed draws new cells of the same structure.
    cell_rng = np.random.default_rng(
        [int(seed), STREAM_ATLAS, int(seed if cell_seed is None else cell_seed)]
    )
    cells = _draw_atlas_cells(
        world,
        structure,
        n_cells,
        cell_rng,
        activity_sd=activity_sd,
        tf_sd=tf_sd,
        library_sd=library_sd,
    )

    adata = ad.AnnData(X=cells.X, obs=_atlas_obs(world, structure, cells), var=var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_atlas",
        "seed": int(seed),
        "cell_seed": int(seed if cell_seed is None else cell_seed),
        **world_uns(world),
        "params": {
            "n_cells": n_cells,
            "n_tissues": n_tissues,
            "types_per_tissue": types_per_tissue,
            "donors_per_tissue": donors_per_tissue,
            "batches_per_donor": batches_per_donor,
            "tissue_sd": tissue_sd,
            "donor_sd": donor_sd,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "batch_gene_sigma": batch_gene_sigma,
            "library_size": world.library_size,
        },
        "tissues": {
            "names": [f"tissue{t}" for t in range(n_tissues)],
            "cell_types": [[world.cell_types[i] for i in ts] for ts in structure.tissue_types],
            "activity_shift": np.asarray(structure.tissue_shift, dtype=float),
        },
        "batch_effects": structure.effects.to_uns(),
    }
    return adata
