"""Seeded single-cell simulator with known ground truth for the embedded demo.

Every simulated data set is drawn from one :class:`SimulationWorld` (genes, gene programs,
cell types and a signed transcription-factor network), so all of them share gene symbols
and the demo scGPT model can be pre-trained on a corpus of all of them.

Generative model (per cell, natural-log scale)
----------------------------------------------
1. Intrinsic state ``e = activity @ program_effect + tf_noise``: a cell type is a mixture of
   gene programs (each program raises the log-abundance of its member genes) and each cell
   jitters its program activities and its TF levels.
2. Regulation: ``l = base_log_mean + R(e)`` with the linear propagation operator
   ``R(s) = s + R(s)[:, TFs] @ W`` iterated ``propagation_steps`` times, ``W`` the signed
   TF -> target weights. TF -> TF edges only go from a lower to a higher TF index, so the
   network is a DAG and the operator is exact after a few steps.
3. Expected counts ``mu = library_size * softmax(l)``; counts are negative binomial
   (gamma-Poisson) with a per-gene inverse dispersion ``theta``.
4. Batch effects (:func:`apply_batch_effects`) act on the counts: a per-batch library-size
   factor, a per-batch gene-wise log-normal scaling and extra, low-count-biased dropout.

A CRISPRi-like knockdown of gene A multiplies A's transcription by a knockdown fraction, i.e.
adds ``log(fraction)`` to A's log-abundance. A gene program is a pathway / complex whose
output needs its members: knocking down member A of program P also lowers P's activity, in
proportion to the log knockdown (``activity_P * dependency_A * log(fraction)``), which lowers
all of P's genes (its master TFs included). Both changes travel through ``R``, so members of
one program (a screen's gene "family") have similar responses and different programs
different ones, as genes sharing a complex or pathway do in real Perturb-seq data. Because the
response is linear in the log knockdown and ``R`` is linear, a double knockdown is exactly
additive in log-abundance unless the simulator adds an explicit interaction term (synergy,
buffering or a neomorphic effect), and the ground truth records which doubles got one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "BatchEffects",
    "SimulationWorld",
    "apply_batch_effects",
    "ground_truth_targets",
    "make_batch_effects",
    "make_world",
    "simulate_atlas",
    "simulate_celltypes",
    "simulate_multiome",
    "simulate_multiome_setting",
    "simulate_perturbation",
]

# Separate random streams per generator so that e.g. seed=0 of two generators is not the same
# sequence of draws (seeds are combined with these tags through numpy's SeedSequence).
_STREAM_WORLD = 11
_STREAM_CELLTYPES = 23
_STREAM_PERTURBATION = 37
_STREAM_MULTIOME = 41
_STREAM_ATLAS = 53
_STREAM_MULTIOME_SETTING = 59

# Target sum used for "log1p(normalised)" expression everywhere in the ground truth.
NORMALISE_TARGET_SUM = 1e4


def _rng(stream: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SimulationWorld:
    """Genes, gene programs, cell types and gene network shared by all simulated data sets.

    The first ``n_tfs`` genes are the transcription factors (``"TF01"``, ...); the others are
    ``"G0001"``, ... All arrays are read-only.

    Attributes
    ----------
    seed
        Seed the world was built from.
    genes
        Gene symbols, TFs first.
    is_tf
        Boolean mask over ``genes``.
    base_log_mean
        Baseline natural-log abundance of each gene (before programs and regulation).
    theta
        Negative-binomial inverse dispersion per gene (variance ``mu + mu**2 / theta``).
    program_names
        Names of the gene programs (``"P1"``, ...).
    program_of_gene
        Index of the program each gene belongs to, ``-1`` for genes in no program.
    program_effect
        ``(n_programs, n_genes)`` log fold change of each gene when a program is fully active.
    cell_types
        Cell-type names.
    type_activity
        ``(n_cell_types, n_programs)`` program activities defining each cell type.
    perturbation_activity
        ``(n_programs,)`` program activities of the cell line used for perturbation screens.
    grn_source, grn_target, grn_weight
        Edges of the signed regulatory network (indices into ``genes``; sources are TFs).
    propagation_steps
        Number of steps a regulatory change travels through the network.
    library_size
        Median total counts per cell before batch effects.
    """

    seed: int
    genes: tuple[str, ...]
    is_tf: np.ndarray
    base_log_mean: np.ndarray
    theta: np.ndarray
    program_names: tuple[str, ...]
    program_of_gene: np.ndarray
    program_effect: np.ndarray
    cell_types: tuple[str, ...]
    type_activity: np.ndarray
    perturbation_activity: np.ndarray
    grn_source: np.ndarray
    grn_target: np.ndarray
    grn_weight: np.ndarray
    propagation_steps: int = 3
    library_size: float = 1500.0

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return len(self.genes)

    @property
    def n_tfs(self) -> int:
        """Number of transcription factors (the first genes)."""
        return int(self.is_tf.sum())

    @property
    def tfs(self) -> list[str]:
        """Transcription-factor symbols."""
        return list(self.genes[: self.n_tfs])

    def gene_index(self, genes: str | list[str] | tuple[str, ...]) -> int | np.ndarray:
        """Index of one gene symbol (an int) or of several (an int array).

        Raises
        ------
        KeyError
            If a symbol is not a gene of this world.
        """
        lookup = self._lookup()
        if isinstance(genes, str):
            if genes not in lookup:
                raise KeyError(
                    f"gene {genes!r} is not in the simulation world "
                    f"(genes are {self.genes[0]!r} ... {self.genes[-1]!r})"
                )
            return lookup[genes]
        return np.array([self.gene_index(g) for g in genes], dtype=int)

    def _lookup(self) -> dict[str, int]:
        # Built on demand (cheap) so the frozen dataclass stays a plain value object.
        return {g: i for i, g in enumerate(self.genes)}

    def programs(self) -> dict[str, list[str]]:
        """Gene symbols of each program."""
        return {
            name: [self.genes[i] for i in np.flatnonzero(self.program_of_gene == p)]
            for p, name in enumerate(self.program_names)
        }

    def grn_edges(self) -> pd.DataFrame:
        """The regulatory network as a table with columns source, target, weight."""
        return pd.DataFrame(
            {
                "source": [self.genes[i] for i in self.grn_source],
                "target": [self.genes[i] for i in self.grn_target],
                "weight": self.grn_weight.astype(float),
            }
        )

    def grn_uns(self) -> dict[str, list[Any]]:
        """The regulatory network as plain lists (writable to ``.h5ad`` ``uns``)."""
        edges = self.grn_edges()
        return {
            "source": edges["source"].tolist(),
            "target": edges["target"].tolist(),
            "weight": edges["weight"].tolist(),
        }

    def regulation_matrix(self) -> np.ndarray:
        """``(n_tfs, n_genes)`` signed weight matrix ``W`` of the network."""
        weights = np.zeros((self.n_tfs, self.n_genes))
        np.add.at(weights, (self.grn_source, self.grn_target), self.grn_weight)
        return weights

    def propagate(self, shift: np.ndarray) -> np.ndarray:
        """Propagate log-abundance shifts through the network.

        Parameters
        ----------
        shift
            ``(..., n_genes)`` direct shifts of natural-log abundance.

        Returns
        -------
        np.ndarray
            Total shifts after ``propagation_steps`` steps of ``d = shift + d[..., TFs] @ W``.
            The operator is linear, so shifts of two perturbations add.
        """
        shift = np.asarray(shift, dtype=float)
        weights = self.regulation_matrix()
        total = shift
        for _ in range(self.propagation_steps):
            total = shift + total[..., : self.n_tfs] @ weights
        return total

    def log_abundance(self, activity: np.ndarray, tf_noise: np.ndarray | None = None) -> np.ndarray:
        """Regulated natural-log abundance for program activities (and optional TF noise).

        Parameters
        ----------
        activity
            ``(..., n_programs)`` program activities.
        tf_noise
            ``(..., n_tfs)`` extra log shifts of the TFs (cell-to-cell variation), or None.
        """
        intrinsic = np.asarray(activity, dtype=float) @ self.program_effect
        if tf_noise is not None:
            intrinsic = intrinsic.copy()
            intrinsic[..., : self.n_tfs] += tf_noise
        return self.base_log_mean + self.propagate(intrinsic)


def _gene_names(n_genes: int, n_tfs: int) -> tuple[str, ...]:
    width_tf = max(2, len(str(n_tfs)))
    width_gene = max(4, len(str(n_genes - n_tfs)))
    tfs = [f"TF{i + 1:0{width_tf}d}" for i in range(n_tfs)]
    others = [f"G{i + 1:0{width_gene}d}" for i in range(n_genes - n_tfs)]
    return tuple(tfs + others)


@functools.lru_cache(maxsize=16)
def make_world(
    *,
    n_genes: int = 400,
    n_programs: int = 8,
    n_cell_types: int = 6,
    n_tfs: int = 30,
    seed: int = 0,
) -> SimulationWorld:
    """Build the shared simulation world (cached: the same arguments give the same object).

    Parameters
    ----------
    n_genes
        Number of genes, transcription factors included.
    n_programs
        Number of gene programs (co-expressed gene sets).
    n_cell_types
        Number of cell types, each a mixture of programs.
    n_tfs
        Number of transcription factors (the first ``n_tfs`` genes).
    seed
        Seed of the world.

    Returns
    -------
    SimulationWorld
    """
    if n_tfs < 1 or n_genes < n_tfs + n_programs:
        raise ValueError(
            f"make_world: need 1 <= n_tfs and n_genes >= n_tfs + n_programs, "
            f"got n_genes={n_genes}, n_tfs={n_tfs}, n_programs={n_programs}"
        )
    if n_programs < 1 or n_cell_types < 1:
        raise ValueError(
            f"make_world: n_programs and n_cell_types must be >= 1, "
            f"got {n_programs} and {n_cell_types}"
        )
    rng = _rng(_STREAM_WORLD, seed)
    genes = _gene_names(n_genes, n_tfs)
    is_tf = np.zeros(n_genes, dtype=bool)
    is_tf[:n_tfs] = True

    # Baseline abundance: log-normal means, TFs lower and less variable (as in real data).
    base = rng.normal(-0.5, 1.0, n_genes)
    base[:n_tfs] = rng.normal(-0.3, 0.5, n_tfs)
    # Highly expressed genes are less over-dispersed (larger inverse dispersion).
    theta = np.exp(np.log(3.0) + 0.5 * (base - base.mean()) + rng.normal(0.0, 0.4, n_genes))

    # Programs: ~60% of non-TF genes and ~half of the TFs belong to exactly one program; a
    # program's TFs are its "master regulators" (their targets are enriched in the program).
    program_of_gene = np.full(n_genes, -1)
    non_tf = np.arange(n_tfs, n_genes)
    in_program = rng.random(non_tf.size) < 0.6
    program_of_gene[non_tf[in_program]] = rng.integers(0, n_programs, in_program.sum())
    # Every program gets at least 3 member genes.
    for p in range(n_programs):
        free = non_tf[program_of_gene[non_tf] != p]
        need = 3 - int((program_of_gene[non_tf] == p).sum())
        if need > 0:
            program_of_gene[rng.choice(free, need, replace=False)] = p
    tf_order = rng.permutation(n_tfs)
    n_master = min(n_tfs, max(n_programs, n_tfs // 2))
    for k, tf in enumerate(tf_order[:n_master]):
        program_of_gene[tf] = k % n_programs
    program_effect = np.zeros((n_programs, n_genes))
    members = program_of_gene >= 0
    program_effect[program_of_gene[members], np.flatnonzero(members)] = rng.normal(
        1.7, 0.4, members.sum()
    ).clip(0.5, None)

    # Cell types: a primary program (distinct while there are enough programs), a secondary
    # one at partial activity and low background activity of the others.
    type_activity = rng.uniform(0.0, 0.15, (n_cell_types, n_programs))
    primaries = np.resize(rng.permutation(n_programs), n_cell_types)
    for t, primary in enumerate(primaries):
        type_activity[t, primary] = rng.uniform(0.9, 1.2)
        others = np.setdiff1d(np.arange(n_programs), [primary])
        if others.size:
            type_activity[t, rng.choice(others)] = rng.uniform(0.3, 0.6)
    perturbation_activity = rng.uniform(0.2, 0.6, n_programs)

    # Network: each TF regulates 3-14 genes, mostly in its own program and mostly positively;
    # TF -> TF edges only to TFs with a higher index (a DAG).
    sources, targets, weights = [], [], []
    for tf in range(n_tfs):
        n_targets = int(min(3 + rng.poisson(6), n_genes - n_tfs))
        own = program_of_gene[tf]
        candidates = np.concatenate([np.arange(tf + 1, n_tfs), non_tf])
        prefer = np.ones(candidates.size)
        if own >= 0:
            prefer[program_of_gene[candidates] == own] = 12.0
        chosen = rng.choice(candidates, n_targets, replace=False, p=prefer / prefer.sum())
        for target in chosen:
            same_program = own >= 0 and program_of_gene[target] == own
            positive = rng.random() < (0.9 if same_program else 0.6)
            sources.append(tf)
            targets.append(int(target))
            weights.append((1.0 if positive else -1.0) * rng.uniform(0.25, 0.6))
    order = np.lexsort((np.array(targets), np.array(sources)))

    n_letters = len(str(n_cell_types - 1))
    return SimulationWorld(
        seed=int(seed),
        genes=genes,
        is_tf=_readonly(is_tf),
        base_log_mean=_readonly(base),
        theta=_readonly(theta),
        program_names=tuple(f"P{p + 1}" for p in range(n_programs)),
        program_of_gene=_readonly(program_of_gene),
        program_effect=_readonly(program_effect),
        cell_types=tuple(f"celltype_{t:0{n_letters}d}" for t in range(n_cell_types)),
        type_activity=_readonly(type_activity),
        perturbation_activity=_readonly(perturbation_activity),
        grn_source=_readonly(np.array(sources, dtype=int)[order]),
        grn_target=_readonly(np.array(targets, dtype=int)[order]),
        grn_weight=_readonly(np.array(weights, dtype=float)[order]),
    )


def ground_truth_targets(
    world: SimulationWorld, gene: str, *, downstream: bool = False, tol: float = 1e-9
) -> dict[str, float]:
    """Targets of ``gene`` in the simulated network, with signed weights.

    Parameters
    ----------
    world
        The simulation world.
    gene
        Gene symbol (a non-TF has no targets).
    downstream
        False: direct targets and edge weights. True: every gene whose log-abundance changes
        when ``gene`` is raised by one log unit, with that change (direct and indirect
        effects, ``propagation_steps`` steps; ``gene`` itself excluded).
    tol
        Changes smaller than this are dropped (``downstream=True`` only).

    Returns
    -------
    dict[str, float]
        Target symbol -> weight (positive: activation, negative: repression).
    """
    index = world.gene_index(gene)
    if not downstream:
        mask = world.grn_source == index
        out: dict[str, float] = {}
        for target, weight in zip(world.grn_target[mask], world.grn_weight[mask]):
            out[world.genes[target]] = out.get(world.genes[target], 0.0) + float(weight)
        return out
    shift = np.zeros(world.n_genes)
    shift[index] = 1.0
    effect = world.propagate(shift)
    effect[index] = 0.0
    return {world.genes[i]: float(effect[i]) for i in np.flatnonzero(np.abs(effect) > tol)}


# --------------------------------------------------------------------------------------------
# Batch effects (shared with benchmark.demo for the real PBMC data)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BatchEffects:
    """Per-batch technical effects applied to counts by :func:`apply_batch_effects`.

    Attributes
    ----------
    names
        Batch names (``"batch0"``, ...).
    library_factor
        ``(n_batches,)`` multiplicative library-size (sequencing depth) factor.
    gene_scale
        ``(n_batches, n_genes)`` multiplicative gene-wise capture efficiency (log-normal).
    dropout
        ``(n_batches,)`` probability that a count of 1 is lost; larger counts are lost less
        often (``dropout * exp(-0.5 * (x - 1))``).
    """

    names: tuple[str, ...]
    library_factor: np.ndarray
    gene_scale: np.ndarray
    dropout: np.ndarray

    def to_uns(self) -> dict[str, Any]:
        """Plain-array form for ``uns`` (writable to ``.h5ad``)."""
        return {
            "names": list(self.names),
            "library_factor": np.asarray(self.library_factor, dtype=float),
            "gene_scale": np.asarray(self.gene_scale, dtype=float),
            "dropout": np.asarray(self.dropout, dtype=float),
        }


def make_batch_effects(
    n_batches: int,
    n_genes: int,
    rng: np.random.Generator,
    *,
    library_sigma: float = 0.35,
    gene_sigma: float = 0.4,
    max_dropout: float = 0.25,
) -> BatchEffects:
    """Draw per-batch library-size, gene-scaling and dropout effects.

    Parameters
    ----------
    n_batches
        Number of batches.
    n_genes
        Number of genes (columns the effects apply to).
    rng
        Random generator.
    library_sigma
        SD of the log library-size factor.
    gene_sigma
        SD of the log gene-wise scaling.
    max_dropout
        Dropout probabilities are uniform in ``[0.02, max_dropout]``.
    """
    if n_batches < 1:
        raise ValueError(f"make_batch_effects: n_batches must be >= 1, got {n_batches}")
    library = np.exp(rng.normal(0.0, library_sigma, n_batches))
    gene_scale = np.exp(rng.normal(0.0, gene_sigma, (n_batches, n_genes)))
    dropout = rng.uniform(0.02, max(0.02, max_dropout), n_batches)
    return BatchEffects(
        names=tuple(f"batch{b}" for b in range(n_batches)),
        library_factor=_readonly(library),
        gene_scale=_readonly(gene_scale),
        dropout=_readonly(dropout),
    )


def apply_batch_effects(
    counts: np.ndarray | sp.spmatrix | sp.sparray,
    batch_codes: np.ndarray,
    effects: BatchEffects,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply batch effects to integer counts, keeping them integer.

    Each count ``x`` of a cell in batch ``b`` is rescaled by ``f = library_factor[b] *
    gene_scale[b, gene]`` as ``floor(f) * x + Binomial(x, f - floor(f))`` (expected value
    ``f * x``; binomial thinning when ``f < 1``), then non-zero entries are dropped with
    probability ``dropout[b] * exp(-0.5 * (x - 1))``.

    Parameters
    ----------
    counts
        ``(n_cells, n_genes)`` non-negative integer-valued counts (dense or sparse).
    batch_codes
        ``(n_cells,)`` batch index of each cell, in ``range(len(effects.names))``.
    effects
        Effects from :func:`make_batch_effects` with ``n_genes`` matching ``counts``.
    rng
        Random generator.

    Returns
    -------
    np.ndarray
        Dense ``int64`` counts.
    """
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    dense = np.rint(dense).astype(np.int64)
    batch_codes = np.asarray(batch_codes, dtype=int)
    if dense.shape[1] != effects.gene_scale.shape[1]:
        raise ValueError(
            f"apply_batch_effects: counts have {dense.shape[1]} genes, batch effects "
            f"{effects.gene_scale.shape[1]}"
        )
    if batch_codes.shape != (dense.shape[0],) or (
        batch_codes.size and (batch_codes.min() < 0 or batch_codes.max() >= len(effects.names))
    ):
        raise ValueError(
            f"apply_batch_effects: batch_codes must be {dense.shape[0]} integers in "
            f"[0, {len(effects.names)}), got shape {batch_codes.shape}"
        )
    if dense.size and dense.min() < 0:
        raise ValueError("apply_batch_effects: counts must be non-negative")
    factor = effects.library_factor[batch_codes, None] * effects.gene_scale[batch_codes]
    whole = np.floor(factor)
    out = whole.astype(np.int64) * dense + rng.binomial(dense, factor - whole)
    p_drop = effects.dropout[batch_codes, None] * np.exp(-0.5 * (out - 1.0))
    out[(out > 0) & (rng.random(out.shape) < p_drop)] = 0
    return out


# --------------------------------------------------------------------------------------------
# Shared cell sampling
# --------------------------------------------------------------------------------------------


def _sample_nb(mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts (gamma-Poisson) with mean ``mu`` and inverse dispersion."""
    rate = rng.gamma(shape=theta, scale=mu / theta)
    return rng.poisson(rate)


def _softmax(log_values: np.ndarray) -> np.ndarray:
    shifted = np.exp(log_values - log_values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _cell_states(
    world: SimulationWorld,
    activity: np.ndarray,
    rng: np.random.Generator,
    *,
    activity_sd: float,
    tf_sd: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell program activities (jittered) and regulated log-abundances."""
    cell_activity = np.clip(activity + rng.normal(0.0, activity_sd, activity.shape), 0.0, None)
    tf_noise = rng.normal(0.0, tf_sd, (activity.shape[0], world.n_tfs))
    return cell_activity, world.log_abundance(cell_activity, tf_noise)


def _expected_counts(
    world: SimulationWorld, log_abundance: np.ndarray, rng: np.random.Generator, library_sd: float
) -> np.ndarray:
    library = world.library_size * np.exp(rng.normal(0.0, library_sd, log_abundance.shape[0]))
    return library[:, None] * _softmax(log_abundance)


def _log1p_normalised(expected: np.ndarray) -> np.ndarray:
    """log1p of counts normalised to :data:`NORMALISE_TARGET_SUM` (expected or observed)."""
    total = expected.sum(axis=-1, keepdims=True)
    return np.log1p(NORMALISE_TARGET_SUM * expected / np.where(total > 0, total, 1.0))


def _var_frame(world: SimulationWorld) -> pd.DataFrame:
    var = pd.DataFrame(index=pd.Index(world.genes, name="gene"))
    var["gene_name"] = list(world.genes)
    var["is_tf"] = np.asarray(world.is_tf, dtype=bool)
    programs = np.asarray((*world.program_names, "none"), dtype=object)  # index -1 -> "none"
    var["program"] = pd.Categorical(programs[world.program_of_gene])
    return var


def _world_uns(world: SimulationWorld) -> dict[str, Any]:
    return {
        "world_seed": world.seed,
        "programs": world.programs(),
        "grn": world.grn_uns(),
        "propagation_steps": world.propagation_steps,
    }


def _assign_cells(
    n_cells: int, n_types: int, n_batches: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cell types and batches: unequal type proportions, mildly batch-specific."""
    proportions = rng.dirichlet(np.full(n_types, 4.0))
    batch = np.sort(rng.integers(0, n_batches, n_cells))
    cell_type = np.empty(n_cells, dtype=int)
    for b in range(n_batches):
        idx = np.flatnonzero(batch == b)
        batch_props = rng.dirichlet(40.0 * proportions)
        cell_type[idx] = rng.choice(n_types, idx.size, p=batch_props)
    return cell_type, batch


def _check_world(world: SimulationWorld | None) -> SimulationWorld:
    if world is None:
        return make_world()
    if not isinstance(world, SimulationWorld):
        raise TypeError(f"world must be a SimulationWorld or None, got {type(world).__name__}")
    return world


# --------------------------------------------------------------------------------------------
# Cell types and batches
# --------------------------------------------------------------------------------------------


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
    world = _check_world(world)
    if n_cells < 1 or n_batches < 1:
        raise ValueError(
            f"simulate_celltypes: n_cells and n_batches must be >= 1, got {n_cells}, {n_batches}"
        )
    rng = _rng(_STREAM_CELLTYPES, seed)
    type_code, batch_code = _assign_cells(n_cells, len(world.cell_types), n_batches, rng)
    _, log_ab = _cell_states(
        world, world.type_activity[type_code], rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    counts = _sample_nb(_expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
    effects = make_batch_effects(n_batches, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    counts = apply_batch_effects(counts, batch_code, effects, rng)

    obs = pd.DataFrame(index=pd.Index([f"cell{i:05d}" for i in range(n_cells)], name="cell"))
    obs["cell_type"] = pd.Categorical.from_codes(type_code, categories=list(world.cell_types))
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    split = np.where((batch_code == n_batches - 1) & (n_batches > 1), "query", "reference").astype(
        object
    )
    obs["split"] = pd.Categorical(split, categories=["reference", "query"])
    obs["n_counts"] = counts.sum(axis=1).astype(np.float32)

    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=_var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_celltypes",
        "seed": int(seed),
        **_world_uns(world),
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


# --------------------------------------------------------------------------------------------
# Atlas (pre-training corpus)
# --------------------------------------------------------------------------------------------


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
        As in :func:`simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        ``X`` raw counts (CSR float32); obs ``cell_type``, ``tissue``, ``donor``, ``batch``,
        ``split`` (all ``"train"``), ``n_counts``; var ``is_tf``, ``program``;
        ``uns["simulation"]`` the ground truth (programs, network, tissues' cell types and
        activity shifts, batch effects, parameters).
    """
    world = _check_world(world)
    n_types = len(world.cell_types)
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
    rng = _rng(_STREAM_ATLAS, seed)
    tissue_types = _tissue_types(n_tissues, n_types, types_per_tissue, rng)
    n_programs = len(world.program_names)
    tissue_shift = rng.normal(0.0, tissue_sd, (n_tissues, n_programs))
    n_donors = n_tissues * donors_per_tissue
    donor_shift = rng.normal(0.0, donor_sd, (n_donors, n_programs))
    n_batch = n_donors * batches_per_donor
    effects = make_batch_effects(n_batch, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    type_props = [rng.dirichlet(np.full(len(types), 4.0)) for types in tissue_types]
    rng = np.random.default_rng(
        [int(seed), _STREAM_ATLAS, int(seed if cell_seed is None else cell_seed)]
    )

    sizes = np.full(n_tissues, n_cells // n_tissues)
    sizes[: n_cells % n_tissues] += 1
    blocks, type_codes, tissue_codes, donor_codes, batch_codes = [], [], [], [], []
    for t, size in enumerate(sizes):
        types = tissue_types[t][rng.choice(len(tissue_types[t]), size, p=type_props[t])]
        donors = t * donors_per_tissue + np.sort(rng.integers(0, donors_per_tissue, size))
        batches = donors * batches_per_donor + rng.integers(0, batches_per_donor, size)
        activity = world.type_activity[types] + tissue_shift[t] + donor_shift[donors]
        _, log_ab = _cell_states(
            world, np.clip(activity, 0.0, None), rng, activity_sd=activity_sd, tf_sd=tf_sd
        )
        counts = _sample_nb(_expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
        counts = apply_batch_effects(counts, batches, effects, rng)
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
        type_codes.append(types)
        tissue_codes.append(np.full(size, t))
        donor_codes.append(donors)
        batch_codes.append(batches)

    type_code = np.concatenate(type_codes)
    obs = pd.DataFrame(index=pd.Index([f"atlas{i:06d}" for i in range(n_cells)], name="cell"))
    obs["cell_type"] = pd.Categorical.from_codes(type_code, categories=list(world.cell_types))
    obs["tissue"] = pd.Categorical.from_codes(
        np.concatenate(tissue_codes), categories=[f"tissue{t}" for t in range(n_tissues)]
    )
    obs["donor"] = pd.Categorical.from_codes(
        np.concatenate(donor_codes), categories=[f"donor{d:02d}" for d in range(n_donors)]
    )
    obs["batch"] = pd.Categorical.from_codes(
        np.concatenate(batch_codes), categories=list(effects.names)
    )
    obs["split"] = pd.Categorical(np.full(n_cells, "train", dtype=object), categories=["train"])
    X = sp.vstack(blocks, format="csr")
    obs["n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.float32)

    adata = ad.AnnData(X=X, obs=obs, var=_var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_atlas",
        "seed": int(seed),
        "cell_seed": int(seed if cell_seed is None else cell_seed),
        **_world_uns(world),
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
            "cell_types": [[world.cell_types[i] for i in ts] for ts in tissue_types],
            "activity_shift": np.asarray(tissue_shift, dtype=float),
        },
        "batch_effects": effects.to_uns(),
    }
    return adata


# --------------------------------------------------------------------------------------------
# Perturbation screen
# --------------------------------------------------------------------------------------------

_INTERACTIONS = ("synergy", "buffering", "neomorphic")


def _pick_screen_families(
    world: SimulationWorld, ctrl_expected: np.ndarray, n_genes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed genes, screened family by family: (genes, program index of each gene).

    A family is one gene program (pathway / complex); its perturbed members are its expressed
    master-regulator TFs first, then expressed non-TF members. About four genes per family,
    at least two, in as many families as the world allows.
    """
    expressed = ctrl_expected >= 1.0
    members = [
        np.flatnonzero((world.program_of_gene == p) & expressed)
        for p in range(len(world.program_names))
    ]
    eligible = [p for p, m in enumerate(members) if m.size >= 2]
    n_fam = min(len(eligible), max(2, round(n_genes / 4)), n_genes // 2)
    capacity = sum(members[p].size for p in eligible)
    if n_fam < 1 or n_genes > capacity:
        raise ValueError(
            f"simulate_perturbation: n_single={n_genes} needs more expressed program genes "
            f"than the world has ({capacity} in {len(eligible)} programs with >= 2)"
        )
    families = [int(p) for p in rng.choice(eligible, n_fam, replace=False)]
    # Family sizes as equal as the programs allow.
    size = dict.fromkeys(families, 0)
    for _ in range(n_genes):
        open_ = [p for p in families if size[p] < members[p].size]
        if not open_:  # the chosen programs are full: take in one more program
            spare = [p for p in eligible if p not in size]
            families.append(int(rng.choice(spare)))
            size[families[-1]] = 0
            open_ = [families[-1]]
        size[min(open_, key=size.__getitem__)] += 1  # the first of the smallest families
    genes, family = [], []
    for p in families:
        tfs = rng.permutation(members[p][world.is_tf[members[p]]])
        others = rng.permutation(members[p][~world.is_tf[members[p]]])
        chosen = np.concatenate([tfs, others])[: size[p]]
        genes += chosen.tolist()
        family += [p] * chosen.size
    return np.asarray(genes, dtype=int), np.asarray(family, dtype=int)


def _split_screen_genes(
    genes: np.ndarray, family: np.ndarray, n_test: int, n_val: int, rng: np.random.Generator
) -> dict[str, list[int]]:
    """Test, validation and training genes, spread over the families.

    Held-out genes are taken round-robin over the families (in a random order), never the
    last training member of a family: every unseen gene has a relative seen in training,
    as in real screens where a library targets several members of each complex or pathway.
    Fewer than ``n_test + n_val`` genes are held out only when no family has one to spare.
    """
    pools = {p: list(rng.permutation(genes[family == p])) for p in pd.unique(family)}
    order = [int(p) for p in rng.permutation(list(pools))]
    held: dict[str, list[int]] = {"test": [], "val": []}
    turn = 0
    for split, n in (("test", n_test), ("val", n_val)):
        while len(held[split]) < n and any(len(pool) > 1 for pool in pools.values()):
            p = order[turn % len(order)]
            turn += 1
            if len(pools[p]) > 1:
                held[split].append(int(pools[p].pop()))
    train = [int(g) for p in order for g in pools[p]]
    return {"test": sorted(held["test"]), "val": sorted(held["val"]), "train": sorted(train)}


def _plan_doubles(
    gene_split: dict[str, list[int]], n_double: int, rng: np.random.Generator
) -> list[tuple[int, int, str, str]]:
    """Choose double perturbations: (gene a, gene b, split, subgroup).

    GEARS "simulation"-like: test doubles have 0, 1 or 2 genes seen in training (test genes
    are never perturbed in train), validation doubles use validation genes the same way, and
    the remaining doubles (both genes train) are training data.
    """
    train, val, test = gene_split["train"], gene_split["val"], gene_split["test"]
    n_test = max(3, round(0.4 * n_double)) if n_double >= 4 else max(0, n_double - 1)
    n_val = max(1, round(0.15 * n_double)) if n_double >= 4 else 0
    plan: list[tuple[str, int]] = [("test", k % 3) for k in range(n_test)]
    plan += [("val", 2 - (k % 2)) for k in range(n_val)]
    plan += [("train", 2)] * (n_double - n_test - n_val)
    # seen0 doubles need two unseen genes; fall back to more seen genes when there are few.
    pool_unseen = {"test": test, "val": val, "train": []}
    used: set[tuple[int, int]] = set()
    doubles = []
    for split, n_seen in plan:
        unseen = pool_unseen[split]
        for seen in range(n_seen, 3):
            if 2 - seen > len(unseen) or seen > len(train) or (seen == 2 and len(train) < 2):
                continue
            options = []
            for _ in range(200):
                pair = list(rng.choice(train, seen, replace=False)) if seen else []
                pair += list(rng.choice(unseen, 2 - seen, replace=False)) if seen < 2 else []
                key = (min(pair), max(pair))
                if key not in used:
                    options = pair
                    break
            if options:
                used.add((min(options), max(options)))
                subgroup = f"combo_seen{seen}" if split != "train" else "train"
                doubles.append((int(options[0]), int(options[1]), split, subgroup))
                break
    return doubles


def simulate_perturbation(
    world: SimulationWorld | None = None,
    *,
    n_ctrl_cells: int = 800,
    n_cells_per_condition: int = 40,
    n_single: int = 30,
    n_double: int = 15,
    seed: int = 0,
    knockdown_range: tuple[float, float] = (0.05, 0.3),
    dependency_range: tuple[float, float] = (0.3, 0.7),
    nonadditive_fraction: float = 0.35,
    test_gene_fraction: float = 0.25,
    val_gene_fraction: float = 0.1,
    activity_sd: float = 0.1,
    tf_sd: float = 0.2,
    library_sd: float = 0.3,
    cell_type: str = "sim_k562",
) -> ad.AnnData:
    """Simulate a Perturb-seq screen of single and double knockdowns in one cell line.

    The screen targets gene families: about four expressed members (master-regulator TFs
    first, then other members) of each of several gene programs. A knockdown of gene A
    multiplies A's abundance by a fraction ``f`` drawn from ``knockdown_range`` and lowers
    the activity of A's program by ``activity * dependency * log(f)`` (``dependency`` drawn
    from ``dependency_range``; the program needs its members, like a complex its subunits);
    both changes propagate through the world's network. Members of one family therefore
    respond alike (the program's signature, plus a TF's own targets), and families differ.
    Doubles are the sum of their singles' log-abundance shifts, except a
    ``nonadditive_fraction`` of them that get an interaction: ``synergy`` (downstream
    effects x1.8), ``buffering`` (x0.3) or ``neomorphic`` (extra effects on genes neither
    single touches).

    Splits follow GEARS' "simulation" split: perturbed genes are divided into train, val and
    test genes; singles go to their gene's split; test (val) doubles combine test (val) genes
    with train genes so that 0, 1 or 2 of their genes are seen in training (``subgroup``
    ``combo_seen0/1/2``; unseen singles are ``single_unseen``); control cells and doubles of
    two train genes are ``train`` (subgroup ``"ctrl"`` / ``"train"``). A seen gene of a test
    double always has its single in train. Held-out genes are spread over the families and
    every family keeps at least one training member, so an unseen gene always has a relative
    seen in training (what GO-graph methods such as GEARS exploit); the family of a gene is
    its program, which methods see in ``uns["simulation"]["programs"]``.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()``.
    n_ctrl_cells
        Number of control cells.
    n_cells_per_condition
        Cells per perturbation.
    n_single
        Number of perturbed genes (each has a single-gene condition ``"A+ctrl"``).
    n_double
        Number of double perturbations ``"A+B"`` (genes taken from the single genes).
    seed
        Seed of this data set.
    knockdown_range
        Range of the remaining-abundance fraction after knockdown.
    dependency_range
        Range of a program's dependency on a perturbed member: the program's activity
        changes by ``activity * dependency * log(fraction)`` when the member is knocked down.
    nonadditive_fraction
        Fraction of doubles with an interaction term.
    test_gene_fraction, val_gene_fraction
        Fractions of perturbed genes never perturbed in training (test / validation).
    activity_sd, tf_sd, library_sd
        Cell-to-cell variation (as in :func:`simulate_celltypes`).
    cell_type
        Name of the simulated cell line.

    Returns
    -------
    anndata.AnnData
        ``X`` raw counts (CSR float32); obs ``condition`` (``"ctrl"``, ``"A+ctrl"``,
        ``"A+B"``), ``condition_name``, ``control``, ``cell_type``, ``batch``, ``split``,
        ``subgroup``, ``n_counts``; var ``gene_name``, ``is_tf``; ``uns["simulation"]``
        with the network, the true effects (``conditions``, ``true_delta``: conditions x
        genes change of log1p(normalised) expected expression vs control;
        ``true_logfc``: the same in natural-log abundance), ``nonadditive`` doubles,
        ``knockdown_fraction``, ``dependency``, ``family`` (program of each perturbed
        gene), ``gene_split`` and parameters.
    """
    world = _check_world(world)
    if n_single < 3 or n_double < 0 or n_ctrl_cells < 1 or n_cells_per_condition < 1:
        raise ValueError(
            "simulate_perturbation: need n_single >= 3, n_double >= 0 and at least one cell "
            f"per group, got n_single={n_single}, n_double={n_double}, "
            f"n_ctrl_cells={n_ctrl_cells}, n_cells_per_condition={n_cells_per_condition}"
        )
    rng = _rng(_STREAM_PERTURBATION, seed)
    activity = np.asarray(world.perturbation_activity, dtype=float)
    ctrl_log = world.log_abundance(activity)
    ctrl_expected = world.library_size * _softmax(ctrl_log)

    genes, family = _pick_screen_families(world, ctrl_expected, n_single, rng)
    n_test = max(1, round(test_gene_fraction * n_single))
    n_val = max(1, round(val_gene_fraction * n_single))
    gene_split = _split_screen_genes(genes, family, n_test, n_val, rng)
    kd_fraction = dict(zip(genes.tolist(), rng.uniform(*knockdown_range, genes.size)))
    family_of = dict(zip(genes.tolist(), family.tolist()))
    dependency_of = dict(zip(genes.tolist(), rng.uniform(*dependency_range, genes.size)))

    def single_shift(gene: int) -> np.ndarray:
        # The knocked-down gene itself, and its program's output, which falls with the
        # component's log knockdown (log-linear, so shifts of two knockdowns still add).
        program = family_of[gene]
        log_kd = np.log(kd_fraction[gene])
        shift = activity[program] * dependency_of[gene] * log_kd * world.program_effect[program]
        shift[gene] += log_kd
        return world.propagate(shift)

    # Conditions: singles then doubles, each with its shift, split and subgroup.
    names: list[str] = []
    shifts: list[np.ndarray] = []
    splits: list[str] = []
    subgroups: list[str] = []
    for split in ("train", "val", "test"):
        for gene in gene_split[split]:
            names.append(f"{world.genes[gene]}+ctrl")
            shifts.append(single_shift(gene))
            splits.append(split)
            subgroups.append("train" if split == "train" else "single_unseen")

    doubles = _plan_doubles(gene_split, n_double, rng)
    if len(doubles) < n_double:
        raise ValueError(
            f"simulate_perturbation: could place only {len(doubles)} of n_double={n_double} "
            f"distinct doubles with n_single={n_single} perturbed genes; raise n_single"
        )
    n_nonadd = round(nonadditive_fraction * len(doubles))
    nonadd_idx = set(rng.choice(len(doubles), n_nonadd, replace=False).tolist())
    nonadditive: dict[str, str] = {}
    for k, (a, b, split, subgroup) in enumerate(doubles):
        direct = np.zeros(world.n_genes)
        direct[[a, b]] = [np.log(kd_fraction[a]), np.log(kd_fraction[b])]
        additive = single_shift(a) + single_shift(b)
        shift = additive
        name = f"{world.genes[a]}+{world.genes[b]}"
        if k in nonadd_idx:
            downstream = additive - direct
            kind = str(rng.choice(_INTERACTIONS))
            if kind != "neomorphic" and np.abs(downstream).max() < 0.3:
                kind = "neomorphic"  # nothing downstream to amplify or buffer
            if kind == "synergy":
                shift = direct + 1.8 * downstream
            elif kind == "buffering":
                shift = direct + 0.3 * downstream
            else:
                untouched = np.flatnonzero((np.abs(additive) < 1e-9) & (ctrl_expected >= 0.5))
                hit = rng.choice(untouched, min(untouched.size, 12), replace=False)
                extra = np.zeros(world.n_genes)
                extra[hit] = rng.choice([-1.0, 1.0], hit.size) * rng.uniform(0.8, 1.6, hit.size)
                shift = additive + extra
            nonadditive[name] = kind
        names.append(name)
        shifts.append(shift)
        splits.append(split)
        subgroups.append(subgroup)

    # Cells: control then each condition.
    n_cond = len(names)
    cond_code = np.repeat(np.arange(-1, n_cond), [n_ctrl_cells] + [n_cells_per_condition] * n_cond)
    n_cells = cond_code.size
    _, log_ab = _cell_states(
        world, np.tile(activity, (n_cells, 1)), rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    all_shifts = np.vstack([np.zeros(world.n_genes), *shifts])
    log_ab = log_ab + all_shifts[cond_code + 1]
    counts = _sample_nb(_expected_counts(world, log_ab, rng, library_sd), world.theta, rng)

    conditions = np.array(["ctrl", *names], dtype=object)[cond_code + 1]
    split_of = np.array(["train", *splits], dtype=object)[cond_code + 1]
    subgroup_of = np.array(["ctrl", *subgroups], dtype=object)[cond_code + 1]
    obs = pd.DataFrame(index=pd.Index([f"cell{i:05d}" for i in range(n_cells)], name="cell"))
    obs["condition"] = pd.Categorical(conditions, categories=["ctrl", *names])
    obs["condition_name"] = pd.Categorical(
        [f"{cell_type}_ctrl_1" if c == "ctrl" else f"{cell_type}_{c}_1+1" for c in ["ctrl", *names]]
    )[cond_code + 1]
    obs["control"] = (cond_code < 0).astype(np.int64)
    obs["cell_type"] = pd.Categorical([cell_type] * n_cells)
    obs["batch"] = pd.Categorical(["batch0"] * n_cells)
    obs["split"] = pd.Categorical(split_of, categories=["train", "val", "test"])
    obs["subgroup"] = pd.Categorical(subgroup_of)
    obs["n_counts"] = counts.sum(axis=1).astype(np.float32)

    ctrl_norm = _log1p_normalised(np.exp(ctrl_log))
    cond_log = ctrl_log + np.vstack(shifts) if shifts else np.zeros((0, world.n_genes))
    true_delta = _log1p_normalised(np.exp(cond_log)) - ctrl_norm

    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=_var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_perturbation",
        "seed": int(seed),
        **_world_uns(world),
        "params": {
            "n_ctrl_cells": n_ctrl_cells,
            "n_cells_per_condition": n_cells_per_condition,
            "n_single": n_single,
            "n_double": n_double,
            "knockdown_range": list(knockdown_range),
            "dependency_range": list(dependency_range),
            "nonadditive_fraction": nonadditive_fraction,
            "test_gene_fraction": test_gene_fraction,
            "val_gene_fraction": val_gene_fraction,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "normalise_target_sum": NORMALISE_TARGET_SUM,
        },
        "conditions": names,
        "condition_split": splits,
        "condition_subgroup": subgroups,
        "ctrl_mean": ctrl_norm,
        "true_delta": true_delta,
        "true_logfc": np.vstack(shifts) if shifts else np.zeros((0, world.n_genes)),
        "nonadditive": {
            "condition": list(nonadditive),
            "kind": list(nonadditive.values()),
        },
        "knockdown_fraction": {world.genes[g]: float(f) for g, f in kd_fraction.items()},
        "dependency": {world.genes[g]: float(d) for g, d in dependency_of.items()},
        "family": {world.genes[g]: world.program_names[p] for g, p in family_of.items()},
        "gene_split": {k: [world.genes[g] for g in v] for k, v in gene_split.items()},
    }
    return adata


# --------------------------------------------------------------------------------------------
# Multi-omics (RNA + protein + ATAC)
# --------------------------------------------------------------------------------------------


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
    protein = _sample_nb(adt_mu, np.full(n_proteins, 10.0), rng)
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

    RNA is simulated as in :func:`simulate_celltypes`. Each protein measures one program gene:
    counts are negative binomial around ``background + scale * relative RNA abundance`` with
    log-normal noise, the background mimicking ambient antibody signal. Each peak is linked to
    a program gene and is open with probability ``sigmoid(alpha + beta * activity)`` of that
    gene's program in the cell (scaled by the cell's ATAC depth); peak counts are 0, 1 or 2.
    Batches shift RNA (:func:`apply_batch_effects`), ADT background and ATAC depth.

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
        As in :func:`simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        All features in one matrix (CSR float32 counts): var ``modality`` in {"rna",
        "protein", "atac"}, ``linked_gene`` (the measured gene for RNA, the mapped / linked
        gene for proteins and peaks); obs ``cell_type``, ``batch``, ``n_counts`` (RNA);
        ``uns["simulation"]`` the ground truth (``peak_links``, ``protein_genes``, programs,
        network, batch effects, parameters).
    """
    world = _check_world(world)
    if n_cells < 1 or n_batches < 1 or n_proteins < 1 or n_peaks < 1:
        raise ValueError(
            "simulate_multiome: n_cells, n_batches, n_proteins and n_peaks must be >= 1, got "
            f"{n_cells}, {n_batches}, {n_proteins}, {n_peaks}"
        )
    rng = _rng(_STREAM_MULTIOME, seed)
    type_code, batch_code = _assign_cells(n_cells, len(world.cell_types), n_batches, rng)
    cell_activity, log_ab = _cell_states(
        world, world.type_activity[type_code], rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    rna = _sample_nb(_expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
    effects = make_batch_effects(n_batches, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    rna = apply_batch_effects(rna, batch_code, effects, rng)

    program_genes = _program_genes_for(world, n_proteins, "simulate_multiome")
    protein, prot_gene, background, batch_bg = _simulate_proteins(
        world, log_ab, batch_code, n_batches, n_proteins, program_genes, rng
    )
    atac, peak_gene = _simulate_peaks(
        world, cell_activity, batch_code, n_batches, n_peaks, program_genes, rng
    )

    prot_names = [f"prot_{world.genes[g]}" for g in prot_gene]
    width = max(4, len(str(n_peaks)))
    peak_names = [f"peak_{k + 1:0{width}d}" for k in range(n_peaks)]
    var = pd.DataFrame(index=pd.Index([*world.genes, *prot_names, *peak_names], name="feature"))
    var["modality"] = pd.Categorical(
        ["rna"] * world.n_genes + ["protein"] * n_proteins + ["atac"] * n_peaks,
        categories=["rna", "protein", "atac"],
    )
    var["linked_gene"] = [
        *world.genes,
        *(world.genes[g] for g in prot_gene),
        *(world.genes[g] for g in peak_gene),
    ]
    var["is_tf"] = np.concatenate([world.is_tf, np.zeros(n_proteins + n_peaks, dtype=bool)]).astype(
        bool
    )

    obs = pd.DataFrame(index=pd.Index([f"cell{i:05d}" for i in range(n_cells)], name="cell"))
    obs["cell_type"] = pd.Categorical.from_codes(type_code, categories=list(world.cell_types))
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    obs["n_counts"] = rna.sum(axis=1).astype(np.float32)

    X = np.hstack([rna, protein, atac]).astype(np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)
    adata.uns["simulation"] = {
        "generator": "simulate_multiome",
        "seed": int(seed),
        **_world_uns(world),
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
        "peak_links": {"peak": peak_names, "gene": [world.genes[g] for g in peak_gene]},
        "protein_genes": {"protein": prot_names, "gene": [world.genes[g] for g in prot_gene]},
        "batch_effects": effects.to_uns(),
        "protein_background": background,
        "protein_batch_background": batch_bg,
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
        As in :func:`simulate_celltypes`.

    Returns
    -------
    anndata.AnnData
        Counts (CSR float32) of the setting's features: var ``modality``, ``linked_gene``
        (RNA: the gene; protein: its gene; peak: its linked gene); obs ``cell_type`` (with
        the subtypes), ``base_cell_type`` (the RNA-level type), ``batch``, ``has_rna``,
        ``has_protein``, ``has_atac``, ``n_counts`` (RNA); ``uns["simulation"]`` the ground
        truth (``subtypes``, ``peak_links``, ``protein_genes``, batch modalities, ...).
    """
    world = _check_world(world)
    caller = "simulate_multiome_setting"
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
    modalities = ("rna", "protein", "atac") if setting == "mosaic" else tuple(setting.split("+"))
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

    rng = _rng(_STREAM_MULTIOME_SETTING, seed)
    type_code, batch_code = _assign_cells(n_cells, n_types, n_batches, rng)
    cell_activity, log_ab = _cell_states(
        world, world.type_activity[type_code], rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    rna = _sample_nb(_expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
    effects = make_batch_effects(n_batches, world.n_genes, rng, gene_sigma=batch_gene_sigma)
    rna = apply_batch_effects(rna, batch_code, effects, rng)

    # Subtypes: which types split, by what, and which cells are subtype b.
    split_types = rng.permutation(n_types)[: atac_subtypes + protein_subtypes]
    is_b = rng.random(n_cells) < 0.5
    chromatin = cell_activity.copy()
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

    program_genes = _program_genes_for(world, n_proteins, caller)
    protein, prot_gene, background, batch_bg = _simulate_proteins(
        world, log_ab, batch_code, n_batches, n_proteins, program_genes, rng, protein_log_shift
    )
    atac, peak_gene = _simulate_peaks(
        world, chromatin, batch_code, n_batches, n_peaks, program_genes, rng
    )
    prot_names = [f"prot_{world.genes[g]}" for g in prot_gene]
    for info in subtypes.values():
        if info["differs_in"] == "protein":
            info["proteins"] = [prot_names[i] for i in info.pop("protein_index")]
            info["sign"] = np.asarray(info["sign"], dtype=float)

    # Which batch measured what.
    has = {m: np.full(n_cells, m in modalities) for m in ("rna", "protein", "atac")}
    batch_modalities = {name: list(modalities) for name in effects.names}
    if setting == "mosaic":
        first_half = batch_code < n_batches // 2
        has["rna"], has["atac"] = first_half, ~first_half
        for b, name in enumerate(effects.names):
            batch_modalities[name] = (
                ["rna", "protein"] if b < n_batches // 2 else ["atac", "protein"]
            )
    rna = rna * has["rna"][:, None]
    protein = protein * has["protein"][:, None]
    atac = atac * has["atac"][:, None]

    width = max(4, len(str(n_peaks)))
    peak_names = [f"peak_{k + 1:0{width}d}" for k in range(n_peaks)]
    blocks = {
        "rna": (rna, list(world.genes), list(world.genes)),
        "protein": (protein, prot_names, [world.genes[g] for g in prot_gene]),
        "atac": (atac, peak_names, [world.genes[g] for g in peak_gene]),
    }
    kept = [m for m in ("rna", "protein", "atac") if m in modalities]
    names = [n for m in kept for n in blocks[m][1]]
    var = pd.DataFrame(index=pd.Index(names, name="feature"))
    var["modality"] = pd.Categorical(
        [m for m in kept for _ in blocks[m][1]], categories=["rna", "protein", "atac"]
    )
    var["linked_gene"] = [g for m in kept for g in blocks[m][2]]

    obs = pd.DataFrame(index=pd.Index([f"cell{i:05d}" for i in range(n_cells)], name="cell"))
    obs["cell_type"] = pd.Categorical(labels.astype(str))
    obs["base_cell_type"] = pd.Categorical.from_codes(type_code, categories=list(world.cell_types))
    obs["batch"] = pd.Categorical.from_codes(batch_code, categories=list(effects.names))
    for m in ("rna", "protein", "atac"):
        obs[f"has_{m}"] = has[m]
    obs["n_counts"] = rna.sum(axis=1).astype(np.float32)

    X = np.hstack([blocks[m][0] for m in kept]).astype(np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)
    adata.uns["simulation"] = {
        "generator": caller,
        "seed": int(seed),
        **_world_uns(world),
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
        "subtypes": subtypes,
        "peak_links": {"peak": peak_names, "gene": [world.genes[g] for g in peak_gene]},
        "protein_genes": {"protein": prot_names, "gene": [world.genes[g] for g in prot_gene]},
        "batch_effects": effects.to_uns(),
        "protein_background": background,
        "protein_batch_background": batch_bg,
    }
    return adata
