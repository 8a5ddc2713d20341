"""Multi-omic cells (RNA + surface protein + chromatin): paired profiles and the task's
settings (paired RNA + ATAC, paired RNA + protein, all three, and a mosaic of batches)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.simulate._common import (
    STREAM_MULTIOME,
    STREAM_MULTIOME_SETTING,
    obs_frame,
    peak_names,
    sample_nb,
    stream_rng,
)
from benchmark.simulate.batch_effects import BatchEffects
from benchmark.simulate.celltypes import BatchedCells, sample_batched_cells
from benchmark.simulate.world import SimulationWorld, resolve_world, world_uns

__all__ = ["MULTIOME_SETTINGS", "simulate_multiome", "simulate_multiome_setting"]

_MODALITIES = ("rna", "protein", "atac")


def _program_genes_for(world: SimulationWorld, n_proteins: int, caller: str) -> np.ndarray:
    """Indices of the world's program genes; checks that ``n_proteins`` of them exist."""
    program_genes = np.flatnonzero(world.program_of_gene >= 0)
    if n_proteins > program_genes.size:
        raise ValueError(
            f"{caller}: n_proteins={n_proteins} exceeds the {program_genes.size} "
            "program genes of the world"
        )
    return program_genes


def _simulate_proteins(
    world: SimulationWorld,
    log_ab: np.ndarray,
    batch_code: np.ndarray,
    n_batches: int,
    n_proteins: int,
    program_genes: np.ndarray,
    rng: np.random.Generator,
    signal_log_shift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ADT-like counts of ``n_proteins`` distinct program genes (see :func:`simulate_multiome`).

    ``signal_log_shift`` (cells x proteins) multiplies each protein's specific signal by
    ``exp(shift)`` after every draw, i.e. a post-transcriptional difference that leaves the
    RNA (and the random stream) unchanged. Returns counts, protein genes, per-protein
    background and per-batch background factor.
    """
    n_cells = log_ab.shape[0]
    # Proteins: program genes, distinct; relative abundance vs the gene's baseline.
    prot_gene = np.sort(rng.choice(program_genes, n_proteins, replace=False))
    relative = np.exp(log_ab[:, prot_gene] - world.base_log_mean[prot_gene])
    scale = np.exp(rng.normal(np.log(15.0), 0.4, n_proteins))
    background = np.exp(rng.normal(np.log(8.0), 0.5, n_proteins))
    batch_bg = np.exp(rng.normal(0.0, 0.3, n_batches))
    adt_depth = np.exp(rng.normal(0.0, 0.25, n_cells))
    signal = scale * relative * np.exp(rng.normal(0.0, 0.3, relative.shape))
    if signal_log_shift is not None:
        signal = signal * np.exp(signal_log_shift)
    adt_mu = adt_depth[:, None] * (background * batch_bg[batch_code, None] + signal)
    protein = sample_nb(adt_mu, np.full(n_proteins, 10.0), rng)
    return protein, prot_gene, background, batch_bg


def _simulate_peaks(
    world: SimulationWorld,
    chromatin_activity: np.ndarray,
    batch_code: np.ndarray,
    n_batches: int,
    n_peaks: int,
    program_genes: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """ATAC-like counts (0, 1, 2) of peaks linked to program genes; returns counts, genes.

    A peak is open with probability ``depth * sigmoid(alpha + beta * a)``, ``a`` the
    ``chromatin_activity`` (cells x programs) of its gene's program: the cells' program
    activities, or those plus a chromatin-only priming (:func:`simulate_multiome_setting`).
    """
    n_cells = chromatin_activity.shape[0]
    # Peaks: each linked to a program gene (genes may have several peaks).
    peak_gene = np.sort(rng.choice(program_genes, n_peaks, replace=True))
    alpha = rng.normal(-2.5, 0.4, n_peaks)
    beta = rng.uniform(3.0, 5.0, n_peaks)
    peak_activity = chromatin_activity[:, world.program_of_gene[peak_gene]]
    atac_depth = (
        np.exp(rng.normal(0.0, 0.3, n_cells)) * np.exp(rng.normal(0.0, 0.3, n_batches))[batch_code]
    )
    p_open = np.clip(atac_depth[:, None] / (1.0 + np.exp(-(alpha + beta * peak_activity))), 0, 0.95)
    atac = (rng.random(p_open.shape) < p_open).astype(np.int64)
    atac += atac * (rng.random(p_open.shape) < 0.2)
    return atac, peak_gene


@dataclass(frozen=True, eq=False)
class _Features:
    """Protein (ADT-like) and peak (ATAC-like) counts of the cells, with what they measure."""

    protein: np.ndarray
    protein_gene: np.ndarray
    protein_names: list[str]
    protein_background: np.ndarray
    protein_batch_background: np.ndarray
    atac: np.ndarray
    peak_gene: np.ndarray


def _draw_features(
    world: SimulationWorld,
    cells: BatchedCells,
    rng: np.random.Generator,
    caller: str,
    *,
    n_proteins: int,
    n_peaks: int,
    chromatin: np.ndarray,
    protein_log_shift: np.ndarray | None = None,
) -> _Features:
    """Draw the proteins, then the peaks (``chromatin``: program activities the peaks see)."""
    program_genes = _program_genes_for(world, n_proteins, caller)
    n_batches = len(cells.effects.names)
    protein, prot_gene, background, batch_bg = _simulate_proteins(
        world,
        cells.log_abundance,
        cells.batch_code,
        n_batches,
        n_proteins,
        program_genes,
        rng,
        protein_log_shift,
    )
    atac, peak_gene = _simulate_peaks(
        world, chromatin, cells.batch_code, n_batches, n_peaks, program_genes, rng
    )
    return _Features(
        protein=protein,
        protein_gene=prot_gene,
        protein_names=[f"prot_{world.genes[g]}" for g in prot_gene],
        protein_background=background,
        protein_batch_background=batch_bg,
        atac=atac,
        peak_gene=peak_gene,
    )


def _features_uns(
    world: SimulationWorld, features: _Features, peaks: list[str], effects: BatchEffects
) -> dict[str, Any]:
    """The features' part of ``uns["simulation"]`` (with the batch effects, in stored order)."""
    return {
        "peak_links": {"peak": peaks, "gene": [world.genes[g] for g in features.peak_gene]},
        "protein_genes": {
            "protein": features.protein_names,
            "gene": [world.genes[g] for g in features.protein_gene],
        },
        "batch_effects": effects.to_uns(),
        "protein_background": features.protein_background,
        "protein_batch_background": features.protein_batch_background,
    }


def simulate_multiome(
    world: SimulationWorld | None = None,
    *,
    n_cells: int = 1500,
    n_batches: int = 2,
    n_proteins: int = 30,
    n_peaks: int = 600,
    seed: int = 0,
    activity_sd: float = 0.15,
    tf_sd: float = 0.3,
    library_sd: float = 0.3,
    batch_gene_sigma: float = 0.4,
) -> ad.AnnData:
    """Simulate paired RNA, surface-protein (ADT-like) and chromatin (ATAC-like) profiles.

    RNA is simulated as in :func:`~benchmark.simulate.simulate_celltypes`. Each protein
    measures one program gene: counts are negative binomial around ``background + scale *
    relative RNA abundance`` with log-normal noise, the background mimicking ambient antibody
    signal. Each peak is linked to a program gene and is open with probability
    ``sigmoid(alpha + beta * activity)`` of that gene's program in the cell (scaled by the
    cell's ATAC depth); peak counts are 0, 1 or 2. Batches shift RNA
    (:func:`~benchmark.simulate.apply_batch_effects`), ADT background and ATAC depth.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()``.
    n_cells, n_batches
        Number of cells and batches.
    n_proteins, n_peaks
        Number of protein and peak features.
    seed
        Seed of this data set.
    activity_sd, tf_sd, library_sd, batch_gene_sigma
        As in :func:`~benchmark.simulate.simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        All features in one matrix (CSR float32 counts): var ``modality`` in {"rna",
        "protein", "atac"}, ``linked_gene`` (the measured gene for RNA, the mapped / linked
        gene for proteins and peaks); obs ``cell_type``, ``batch``, ``n_counts`` (RNA);
        ``uns["simulation"]`` the ground truth (``peak_links``, ``protein_genes``, programs,
        network, batch effects, parameters).
    """
    world = resolve_world(world)
    if n_cells < 1 or n_batches < 1 or n_proteins < 1 or n_peaks < 1:
        raise ValueError(
            "simulate_multiome: n_cells, n_batches, n_proteins and n_peaks must be >= 1, got "
            f"{n_cells}, {n_batches}, {n_proteins}, {n_peaks}"
        )
    rng = stream_rng(STREAM_MULTIOME, seed)
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
    rna, batch_code, effects = cells.counts, cells.batch_code, cells.effects
    features = _draw_features(
        world,
        cells,
        rng,
        "simulate_multiome",
        n_proteins=n_proteins,
        n_peaks=n_peaks,
        chromatin=cells.activity,
    )
    prot_names = features.protein_names

    peaks = peak_names(n_peaks)
    var = pd.DataFrame(index=pd.Index([*world.genes, *prot_names, *peaks], name="feature"))
    var["modality"] = pd.Categorical(
        ["rna"] * world.n_genes + ["protein"] * n_proteins + ["atac"] * n_peaks,
        categories=["rna", "protein", "atac"],
    )
    var["linked_gene"] = [
        *world.genes,
        *(world.genes[g] for g in features.protein_gene),
        *(world.genes[g] for g in features.peak_gene),
    ]
    var["is_tf"] = np.concatenate([world.is_tf, np.zeros(n_proteins + n_peaks, dtype=bool)]).astype(
        bool
    )

    obs = obs_frame(n_cells)
    obs["cell_type"] = pd.Categorical.from_codes(cells.type_code, categories=list(world.cell_types))
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    obs["n_counts"] = rna.sum(axis=1).astype(np.float32)

    X = np.hstack([rna, features.protein, features.atac]).astype(np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)
    adata.uns["simulation"] = {
        "generator": "simulate_multiome",
        "seed": int(seed),
        **world_uns(world),
        "params": {
            "n_cells": n_cells,
            "n_batches": n_batches,
            "n_proteins": n_proteins,
            "n_peaks": n_peaks,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "batch_gene_sigma": batch_gene_sigma,
        },
        **_features_uns(world, features, peaks, effects),
    }
    return adata


MULTIOME_SETTINGS: dict[str, str] = {
    "rna+atac": "paired RNA + ATAC in every cell (10x Multiome-like)",
    "rna+protein": "paired RNA + surface protein in every cell (CITE-seq / BMMC-like)",
    "rna+protein+atac": "all three modalities in every cell",
    "mosaic": (
        "RNA + protein in the first half of the batches, ATAC + protein in the second half "
        "(ASAP PBMC-like: no batch has all three)"
    ),
}
"""Settings of :func:`simulate_multiome_setting` and what each measures."""


@dataclass(frozen=True, eq=False)
class _Subtypes:
    """Cell types split into subtypes a / b that differ only in chromatin or in protein.

    Attributes
    ----------
    labels
        ``(n_cells,)`` cell-type label of each cell (``<type>a`` / ``<type>b`` if split).
    chromatin
        ``(n_cells, n_programs)`` program activities seen by the peaks (primed for ATAC
        subtypes b).
    protein_log_shift
        ``(n_cells, n_proteins)`` log shift of the proteins' specific signal.
    info
        Split type -> what differs (``uns["simulation"]["subtypes"]``; protein subtypes
        carry ``protein_index`` until :func:`_name_protein_subtypes` names the proteins).
    """

    labels: np.ndarray
    chromatin: np.ndarray
    protein_log_shift: np.ndarray
    info: dict[str, dict[str, Any]]


def _setting_modalities(
    world: SimulationWorld,
    caller: str,
    *,
    setting: str,
    n_cells: int,
    n_batches: int,
    n_proteins: int,
    n_peaks: int,
    atac_subtypes: int,
    protein_subtypes: int,
) -> tuple[str, ...]:
    """Check the arguments of :func:`simulate_multiome_setting`; return the modalities."""
    if setting not in MULTIOME_SETTINGS:
        raise ValueError(
            f"{caller}: setting {setting!r}: expected one of {list(MULTIOME_SETTINGS)}"
        )
    if n_cells < 1 or n_batches < 1 or n_proteins < 1 or n_peaks < 1:
        raise ValueError(
            f"{caller}: n_cells, n_batches, n_proteins and n_peaks must be >= 1, got "
            f"{n_cells}, {n_batches}, {n_proteins}, {n_peaks}"
        )
    if setting == "mosaic" and (n_batches < 2 or n_batches % 2):
        raise ValueError(
            f"{caller}: the mosaic setting needs an even n_batches >= 2; got {n_batches}"
        )
    modalities = _MODALITIES if setting == "mosaic" else tuple(setting.split("+"))
    for what, count, modality in (
        ("atac_subtypes", atac_subtypes, "atac"),
        ("protein_subtypes", protein_subtypes, "protein"),
    ):
        if count < 0:
            raise ValueError(f"{caller}: {what} must be >= 0; got {count}")
        if count and modality not in modalities:
            raise ValueError(
                f"{caller}: {what}={count} needs {modality} in the setting; {setting!r} has "
                f"{list(modalities)}"
            )
    n_types = len(world.cell_types)
    if atac_subtypes + protein_subtypes > n_types:
        raise ValueError(
            f"{caller}: atac_subtypes + protein_subtypes = {atac_subtypes + protein_subtypes} "
            f"exceeds the world's {n_types} cell types"
        )
    return modalities


def _draw_subtypes(
    world: SimulationWorld,
    cells: BatchedCells,
    rng: np.random.Generator,
    *,
    n_proteins: int,
    atac_subtypes: int,
    protein_subtypes: int,
    priming: float,
    protein_shift: float,
) -> _Subtypes:
    """Which types split, by what, and which cells are subtype b (the first ATAC splits)."""
    type_code = cells.type_code
    n_cells = type_code.size
    split_types = rng.permutation(len(world.cell_types))[: atac_subtypes + protein_subtypes]
    is_b = rng.random(n_cells) < 0.5
    chromatin = cells.activity.copy()
    protein_log_shift = np.zeros((n_cells, n_proteins))
    subtypes: dict[str, dict[str, Any]] = {}
    labels = np.asarray(world.cell_types, dtype=object)[type_code]
    for k, t in enumerate(split_types):
        name = world.cell_types[t]
        cells_b = (type_code == t) & is_b
        labels[type_code == t] = np.where(is_b[type_code == t], f"{name}b", f"{name}a")
        if k < atac_subtypes:
            program = int(np.argmin(world.type_activity[t]))
            chromatin[cells_b, program] += priming
            subtypes[name] = {"differs_in": "atac", "program": world.program_names[program]}
        else:
            n_affected = max(3, n_proteins // 4)
            which = np.sort(rng.choice(n_proteins, min(n_affected, n_proteins), replace=False))
            signs = np.where(rng.random(which.size) < 0.5, -1.0, 1.0)
            protein_log_shift[np.ix_(cells_b, which)] = signs * protein_shift
            subtypes[name] = {"differs_in": "protein", "protein_index": which, "sign": signs}
    return _Subtypes(labels, chromatin, protein_log_shift, subtypes)


def _name_protein_subtypes(subtypes: dict[str, dict[str, Any]], prot_names: list[str]) -> None:
    """Replace protein subtypes' ``protein_index`` by the proteins' names (in place)."""
    for info in subtypes.values():
        if info["differs_in"] == "protein":
            info["proteins"] = [prot_names[i] for i in info.pop("protein_index")]
            info["sign"] = np.asarray(info["sign"], dtype=float)


def _measured_modalities(
    setting: str, modalities: tuple[str, ...], cells: BatchedCells
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Which cells measured each modality, and which modalities each batch measured.

    Mosaic: the first half of the batches RNA + protein, the second half ATAC + protein.
    """
    batch_code, names = cells.batch_code, cells.effects.names
    n_batches = len(names)
    has = {m: np.full(batch_code.size, m in modalities) for m in _MODALITIES}
    batch_modalities = {name: list(modalities) for name in names}
    if setting == "mosaic":
        first_half = batch_code < n_batches // 2
        has["rna"], has["atac"] = first_half, ~first_half
        for b, name in enumerate(names):
            batch_modalities[name] = (
                ["rna", "protein"] if b < n_batches // 2 else ["atac", "protein"]
            )
    return has, batch_modalities


def _setting_anndata(
    world: SimulationWorld,
    cells: BatchedCells,
    subtypes: _Subtypes,
    features: _Features,
    peaks: list[str],
    has: dict[str, np.ndarray],
    modalities: tuple[str, ...],
) -> ad.AnnData:
    """The setting's AnnData: counts of the setting's modalities, zero where not measured."""
    blocks = {  # modality -> (counts, feature names, linked genes)
        "rna": (cells.counts * has["rna"][:, None], list(world.genes), list(world.genes)),
        "protein": (
            features.protein * has["protein"][:, None],
            features.protein_names,
            [world.genes[g] for g in features.protein_gene],
        ),
        "atac": (
            features.atac * has["atac"][:, None],
            peaks,
            [world.genes[g] for g in features.peak_gene],
        ),
    }
    kept = [m for m in _MODALITIES if m in modalities]
    names = [n for m in kept for n in blocks[m][1]]
    var = pd.DataFrame(index=pd.Index(names, name="feature"))
    var["modality"] = pd.Categorical(
        [m for m in kept for _ in blocks[m][1]], categories=["rna", "protein", "atac"]
    )
    var["linked_gene"] = [g for m in kept for g in blocks[m][2]]

    obs = obs_frame(cells.type_code.size)
    obs["cell_type"] = pd.Categorical(subtypes.labels.astype(str))
    obs["base_cell_type"] = pd.Categorical.from_codes(
        cells.type_code, categories=list(world.cell_types)
    )
    obs["batch"] = pd.Categorical.from_codes(cells.batch_code, categories=list(cells.effects.names))
    for m in _MODALITIES:
        obs[f"has_{m}"] = has[m]
    obs["n_counts"] = blocks["rna"][0].sum(axis=1).astype(np.float32)

    X = np.hstack([blocks[m][0] for m in kept]).astype(np.float32)
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)


def simulate_multiome_setting(
    world: SimulationWorld | None = None,
    *,
    setting: str = "rna+atac",
    n_cells: int = 1200,
    n_batches: int = 1,
    n_proteins: int = 30,
    n_peaks: int = 600,
    atac_subtypes: int = 1,
    protein_subtypes: int = 1,
    priming: float = 1.5,
    protein_shift: float = 2.0,
    seed: int = 0,
    activity_sd: float = 0.15,
    tf_sd: float = 0.3,
    library_sd: float = 0.3,
    batch_gene_sigma: float = 0.4,
) -> ad.AnnData:
    """Simulate one multi-omic benchmark setting, with cell types that RNA alone cannot tell.

    Cells, RNA, proteins and peaks follow :func:`simulate_multiome` (same generative model,
    its own random stream: ``sim_multiome`` is unchanged). On top of it, some cell types are
    split into two subtypes ``<type>a`` / ``<type>b`` (half of the type's cells each) with
    the *same* RNA programme:

    - ``atac_subtypes`` types differ in chromatin only: subtype b's peaks of one program the
      type does not express (its least active) see an extra activity ``priming`` (lineage
      priming: open chromatin without transcription);
    - ``protein_subtypes`` types differ in protein only: subtype b's specific signal of a
      quarter of the proteins (at least 3) is scaled by ``exp(+-protein_shift)``
      (post-transcriptional regulation).

    A joint embedding that uses the modality that carries the split separates the subtypes;
    RNA alone cannot. Every modality is drawn for every cell (so the random stream does not
    depend on ``setting``); modalities not in the setting are then left out, and in the
    mosaic setting a batch's absent modalities are zero with ``obs["has_<modality>"]``
    False.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()``.
    setting
        One of :data:`MULTIOME_SETTINGS`.
    n_cells, n_batches
        Number of cells and batches (mosaic: an even number >= 2).
    n_proteins, n_peaks
        Protein and peak features (drawn even when the setting leaves them out).
    atac_subtypes, protein_subtypes
        Number of cell types split by chromatin / by protein (distinct types). A split
        needs its modality in the setting.
    priming
        Chromatin-only program activity of an ATAC subtype b.
    protein_shift
        Natural-log fold change of a protein subtype b's affected proteins.
    seed
        Seed of this data set.
    activity_sd, tf_sd, library_sd, batch_gene_sigma
        As in :func:`~benchmark.simulate.simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        Counts (CSR float32) of the setting's features: var ``modality``, ``linked_gene``
        (RNA: the gene; protein: its gene; peak: its linked gene); obs ``cell_type`` (with
        the subtypes), ``base_cell_type`` (the RNA-level type), ``batch``, ``has_rna``,
        ``has_protein``, ``has_atac``, ``n_counts`` (RNA); ``uns["simulation"]`` the ground
        truth (``subtypes``, ``peak_links``, ``protein_genes``, batch modalities, ...).
    """
    world = resolve_world(world)
    caller = "simulate_multiome_setting"
    modalities = _setting_modalities(
        world,
        caller,
        setting=setting,
        n_cells=n_cells,
        n_batches=n_batches,
        n_proteins=n_proteins,
        n_peaks=n_peaks,
        atac_subtypes=atac_subtypes,
        protein_subtypes=protein_subtypes,
    )
    # The steps draw from one stream in this order: cells, subtypes, proteins, peaks.
    rng = stream_rng(STREAM_MULTIOME_SETTING, seed)
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
    subtypes = _draw_subtypes(
        world,
        cells,
        rng,
        n_proteins=n_proteins,
        atac_subtypes=atac_subtypes,
        protein_subtypes=protein_subtypes,
        priming=priming,
        protein_shift=protein_shift,
    )
    features = _draw_features(
        world,
        cells,
        rng,
        caller,
        n_proteins=n_proteins,
        n_peaks=n_peaks,
        chromatin=subtypes.chromatin,
        protein_log_shift=subtypes.protein_log_shift,
    )
    _name_protein_subtypes(subtypes.info, features.protein_names)

    has, batch_modalities = _measured_modalities(setting, modalities, cells)
    peaks = peak_names(n_peaks)
    adata = _setting_anndata(world, cells, subtypes, features, peaks, has, modalities)
    adata.uns["simulation"] = {
        "generator": caller,
        "seed": int(seed),
        **world_uns(world),
        "params": {
            "setting": setting,
            "n_cells": n_cells,
            "n_batches": n_batches,
            "n_proteins": n_proteins,
            "n_peaks": n_peaks,
            "atac_subtypes": atac_subtypes,
            "protein_subtypes": protein_subtypes,
            "priming": priming,
            "protein_shift": protein_shift,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "batch_gene_sigma": batch_gene_sigma,
        },
        "modalities": list(modalities),
        "batch_modalities": batch_modalities,
        "subtypes": subtypes.info,
        **_features_uns(world, features, peaks, cells.effects),
    }
    return adata
