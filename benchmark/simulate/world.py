"""The simulation world: genes, gene programs, cell types and the signed TF network.

Every simulated data set is drawn from one :class:`SimulationWorld` (see the generative model in
:mod:`benchmark.simulate`); :func:`make_world` builds it from a seed and caches it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.simulate._common import STREAM_WORLD, readonly, softmax, stream_rng

__all__ = ["SimulationWorld", "ground_truth_targets", "make_world", "resolve_world"]


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
    rng = stream_rng(STREAM_WORLD, seed)
    genes = _gene_names(n_genes, n_tfs)
    is_tf = np.zeros(n_genes, dtype=bool)
    is_tf[:n_tfs] = True
    # The steps draw in this order from one stream: abundance, programs, cell types, network.
    base, theta = _draw_abundance(n_genes, n_tfs, rng)
    program_of_gene, program_effect = _draw_programs(n_genes, n_tfs, n_programs, rng)
    type_activity, perturbation_activity = _draw_cell_types(n_cell_types, n_programs, rng)
    grn_source, grn_target, grn_weight = _draw_network(n_genes, n_tfs, program_of_gene, rng)

    n_letters = len(str(n_cell_types - 1))
    return SimulationWorld(
        seed=int(seed),
        genes=genes,
        is_tf=readonly(is_tf),
        base_log_mean=readonly(base),
        theta=readonly(theta),
        program_names=tuple(f"P{p + 1}" for p in range(n_programs)),
        program_of_gene=readonly(program_of_gene),
        program_effect=readonly(program_effect),
        cell_types=tuple(f"celltype_{t:0{n_letters}d}" for t in range(n_cell_types)),
        type_activity=readonly(type_activity),
        perturbation_activity=readonly(perturbation_activity),
        grn_source=readonly(grn_source),
        grn_target=readonly(grn_target),
        grn_weight=readonly(grn_weight),
    )


def _draw_abundance(
    n_genes: int, n_tfs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline log-abundance and negative-binomial inverse dispersion of every gene."""
    # Log-normal means, TFs lower and less variable (as in real data).
    base = rng.normal(-0.5, 1.0, n_genes)
    base[:n_tfs] = rng.normal(-0.3, 0.5, n_tfs)
    # Highly expressed genes are less over-dispersed (larger inverse dispersion).
    theta = np.exp(np.log(3.0) + 0.5 * (base - base.mean()) + rng.normal(0.0, 0.4, n_genes))
    return base, theta


def _draw_programs(
    n_genes: int, n_tfs: int, n_programs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Program of each gene (-1: none) and the ``(n_programs, n_genes)`` program effects.

    ~60% of non-TF genes and ~half of the TFs belong to exactly one program; a program's TFs
    are its "master regulators" (their targets are enriched in the program).
    """
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
    return program_of_gene, program_effect


def _draw_cell_types(
    n_cell_types: int, n_programs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Program activities of each cell type and of the perturbation screens' cell line.

    A cell type has a primary program (distinct while there are enough programs), a secondary
    one at partial activity and low background activity of the others.
    """
    type_activity = rng.uniform(0.0, 0.15, (n_cell_types, n_programs))
    primaries = np.resize(rng.permutation(n_programs), n_cell_types)
    for t, primary in enumerate(primaries):
        type_activity[t, primary] = rng.uniform(0.9, 1.2)
        others = np.setdiff1d(np.arange(n_programs), [primary])
        if others.size:
            type_activity[t, rng.choice(others)] = rng.uniform(0.3, 0.6)
    perturbation_activity = rng.uniform(0.2, 0.6, n_programs)
    return type_activity, perturbation_activity


def _draw_network(
    n_genes: int, n_tfs: int, program_of_gene: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (sources, targets, weights) of the signed network, sorted by source then target.

    Each TF regulates 3-14 genes, mostly in its own program and mostly positively; TF -> TF
    edges only go to TFs with a higher index (a DAG).
    """
    non_tf = np.arange(n_tfs, n_genes)
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
    return (
        np.array(sources, dtype=int)[order],
        np.array(targets, dtype=int)[order],
        np.array(weights, dtype=float)[order],
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


def resolve_world(world: SimulationWorld | None) -> SimulationWorld:
    """``world``, or the default :func:`make_world` world for None (a simulator's argument)."""
    if world is None:
        return make_world()
    if not isinstance(world, SimulationWorld):
        raise TypeError(f"world must be a SimulationWorld or None, got {type(world).__name__}")
    return world


# --- what every simulator draws or writes from a world ------------------------------------
def cell_states(
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


def expected_counts(
    world: SimulationWorld, log_abundance: np.ndarray, rng: np.random.Generator, library_sd: float
) -> np.ndarray:
    """Expected counts per cell: a log-normal library size times the softmax of the abundance."""
    library = world.library_size * np.exp(rng.normal(0.0, library_sd, log_abundance.shape[0]))
    return library[:, None] * softmax(log_abundance)


def var_frame(world: SimulationWorld) -> pd.DataFrame:
    """``var`` of the world's genes: ``gene_name``, ``is_tf``, ``program`` ("none" outside)."""
    var = pd.DataFrame(index=pd.Index(world.genes, name="gene"))
    var["gene_name"] = list(world.genes)
    var["is_tf"] = np.asarray(world.is_tf, dtype=bool)
    programs = np.asarray((*world.program_names, "none"), dtype=object)  # index -1 -> "none"
    var["program"] = pd.Categorical(programs[world.program_of_gene])
    return var


def world_uns(world: SimulationWorld) -> dict[str, Any]:
    """The world's part of ``uns["simulation"]``: seed, programs, network, propagation steps."""
    return {
        "world_seed": world.seed,
        "programs": world.programs(),
        "grn": world.grn_uns(),
        "propagation_steps": world.propagation_steps,
    }
