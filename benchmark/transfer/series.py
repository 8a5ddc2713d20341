"""Scaling and context series of transfer learning (paper Supp. Fig. 13, section "Scaling and
context effects in transfer learning").

Corpora of the demo's series: a pool of pre-training cells (the simulated atlas and the PBMC
reference cells, minus the donors of the context target), from which every model's corpus is
a subset drawn by one seeded permutation, so that the scaling series' corpora are nested (the
first ``k`` cells of the same order) and a tissue's corpus is the first ``k`` of the tissue's
cells in that order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.failed_datasets import check_standard_file
from benchmark.io import write_h5ad
from benchmark.sources.corpus import HELD_OUT_SPLITS

log = logging.getLogger(__name__)

NO_TISSUE = "none"
"""``obs["tissue"]`` of pool cells whose dataset has no tissue column (the PBMC reference)."""


def subset_order(n: int, seed: int) -> np.ndarray:
    """The fixed order in which pool cells enter the series' corpora.

    A corpus of ``k`` cells is ``np.sort(subset_order(n, seed)[:k])``: corpora drawn with
    the same ``n`` and ``seed`` are nested (each a subset of every larger one).
    """
    if n < 0:
        raise ValueError(f"subset_order: n must be >= 0, got {n}")
    return np.random.default_rng([int(seed), 13]).permutation(n)


def nested_subsets(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Sorted row indices of nested subsets of ``range(n)``, one per size.

    Parameters
    ----------
    n
        Number of rows to draw from.
    sizes
        Subset sizes (any order; each ``<= n``).
    seed
        Seed of the order (:func:`subset_order`).

    Returns
    -------
    list of numpy.ndarray
        ``subsets[i]`` holds ``sizes[i]`` sorted row indices; a smaller subset is contained in
        every larger one.

    Raises
    ------
    ValueError
        If a size is negative or larger than ``n``.
    """
    bad = [k for k in sizes if not 0 <= k <= n]
    if bad:
        raise ValueError(f"nested_subsets: sizes must be in [0, {n}], got {bad}")
    order = subset_order(n, seed)
    return [np.sort(order[:k]) for k in sizes]


def pretraining_pool(
    dataset_paths: Sequence[str | os.PathLike[str]],
    held_out: Mapping[str, Sequence[str]] | None = None,
) -> ad.AnnData:
    """Training cells of standard datasets, minus held-out cells, in a fixed order.

    Parameters
    ----------
    dataset_paths
        Standard ``.h5ad`` files; their query/validation/test cells (``obs["split"]``) never
        enter pre-training (as in :func:`benchmark.sources.corpus.build_pretraining_corpus`).
    held_out
        ``{obs column: values}``: cells with any of these values are left out (the context
        target's donors). A dataset without the column keeps its cells.

    Returns
    -------
    anndata.AnnData
        Raw counts (CSR float32), genes the union over datasets; obs ``source`` (dataset name)
        and ``tissue`` (:data:`NO_TISSUE` where the dataset has none).
    """
    held_out = {key: set(map(str, values)) for key, values in (held_out or {}).items()}
    parts = []
    for path in dataset_paths:
        check_standard_file(path)  # a failed dataset cannot enter a corpus
        adata = ad.read_h5ad(path)
        name = os.path.splitext(os.path.basename(path))[0]
        keep = np.ones(adata.n_obs, dtype=bool)
        if "split" in adata.obs:
            keep &= ~adata.obs["split"].astype(str).isin(HELD_OUT_SPLITS).to_numpy()
        for column, values in held_out.items():
            if column in adata.obs:
                keep &= ~adata.obs[column].astype(str).isin(values).to_numpy()
        if "modality" in adata.var:
            adata = adata[:, adata.var["modality"].astype(str) == "rna"]
        adata = adata[keep]
        tissue = (
            adata.obs["tissue"].astype(str).to_numpy()
            if "tissue" in adata.obs
            else np.full(adata.n_obs, NO_TISSUE, dtype=object)
        )
        part = ad.AnnData(
            X=sp.csr_matrix(adata.X, dtype=np.float32),
            obs=pd.DataFrame(
                {"source": [name] * adata.n_obs, "tissue": tissue},
                index=[f"{name}:{cell}" for cell in adata.obs_names],
            ),
        )
        part.var_names = adata.var_names
        log.info("%s: %d pool cells (of %d)", name, part.n_obs, keep.size)
        parts.append(part)
    if not parts:
        raise ValueError("pretraining_pool: needs at least one dataset")
    pool = ad.concat(parts, join="outer", fill_value=0)
    pool.X = sp.csr_matrix(pool.X, dtype=np.float32)
    return pool


def series_corpus(
    pool: ad.AnnData,
    *,
    cells: int | None = None,
    tissues: Sequence[str] | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """One series model's corpus: pool cells of the given tissues, the first ``cells`` in order.

    The order is :func:`subset_order` over the whole pool, so corpora of one tissue set are
    nested, and every corpus follows the same draw.

    Parameters
    ----------
    pool
        From :func:`pretraining_pool`.
    cells
        Corpus size (None: every eligible cell).
    tissues
        Keep only cells of these tissues (``obs["tissue"]``; None: all cells).
    seed
        Seed of the order.

    Raises
    ------
    ValueError
        If a tissue is not in the pool or fewer than ``cells`` cells are eligible.
    """
    order = subset_order(pool.n_obs, seed)
    if tissues is not None:
        present = set(pool.obs["tissue"].astype(str))
        missing = sorted(set(tissues) - present)
        if missing:
            raise ValueError(
                f"series_corpus: tissues {missing} are not in the pool; present: {sorted(present)}"
            )
        eligible = pool.obs["tissue"].astype(str).isin(list(tissues)).to_numpy()
        order = order[eligible[order]]
    if cells is not None:
        if not 1 <= cells <= order.size:
            raise ValueError(
                f"series_corpus: {cells} cells requested, {order.size} eligible"
                + (f" in tissues {list(tissues)}" if tissues is not None else "")
            )
        order = order[:cells]
    corpus = pool[np.sort(order)].copy()
    corpus.obs["source"] = corpus.obs["source"].astype("category")
    corpus.obs["tissue"] = corpus.obs["tissue"].astype("category")
    return corpus


def build_series_corpus(
    dataset_paths: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    *,
    held_out: Mapping[str, Sequence[str]] | None = None,
    cells: int | None = None,
    tissues: Sequence[str] | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Write one series model's corpus (:func:`pretraining_pool` then :func:`series_corpus`)."""
    pool = pretraining_pool(dataset_paths, held_out)
    corpus = series_corpus(pool, cells=cells, tissues=tissues, seed=seed)
    counts = corpus.obs["tissue"].value_counts().sort_index()
    log.info(
        "corpus: %d cells x %d genes (pool %d); by tissue: %s",
        corpus.n_obs,
        corpus.n_vars,
        pool.n_obs,
        ", ".join(f"{t} {n}" for t, n in counts.items()),
    )
    write_h5ad(corpus, out_path)
    return corpus


def simulate_context_target(
    *,
    tissue: str = "tissue0",
    reference_donor: str = "donor01",
    query_donor: str = "donor02",
    n_cells: int = 1200,
    atlas_cells: int = 8000,
    seed: int = 0,
    cell_seed: int = 1,
) -> ad.AnnData:
    """The context series' target: new cells of held-out donors of one atlas tissue.

    :func:`benchmark.simulate.simulate_atlas` with the atlas' structure ``seed`` (the same
    tissues, donors and batch effects as the builtin ``sim_atlas``) and another
    ``cell_seed`` (new cells), restricted to two donors of ``tissue`` that the series'
    corpora leave out (``config/pretrain_transfer.yaml``, ``pool.held_out``). The reference
    donor's cells are the annotation reference, the query donor's the query; integration
    uses every cell (each donor's two batches).

    Parameters
    ----------
    tissue, reference_donor, query_donor
        The target tissue and its two held-out donors (atlas names).
    n_cells
        Cells kept (a seeded subsample of the two donors' cells).
    atlas_cells, seed
        ``n_cells`` and ``seed`` of the atlas the target belongs to.
    cell_seed
        Seed of the cells; must differ from ``seed`` (the atlas' own cells).

    Returns
    -------
    anndata.AnnData
        The atlas' layout, obs ``split`` reference/query.
    """
    from benchmark.simulate import simulate_atlas

    if cell_seed == seed:
        raise ValueError(
            f"simulate_context_target: cell_seed {cell_seed} draws the atlas' own cells; "
            f"give another value than seed {seed}"
        )
    atlas = simulate_atlas(n_cells=atlas_cells, seed=seed, cell_seed=cell_seed)
    donors = atlas.obs["donor"].astype(str)
    keep = (atlas.obs["tissue"].astype(str) == tissue) & donors.isin([reference_donor, query_donor])
    for donor in (reference_donor, query_donor):
        if not (keep & (donors == donor)).any():
            raise ValueError(
                f"simulate_context_target: no cells of donor {donor!r} in tissue {tissue!r}"
            )
    rows = np.flatnonzero(keep.to_numpy())
    if n_cells < rows.size:
        rows = np.sort(np.random.default_rng([int(cell_seed), 17]).choice(rows, n_cells, False))
    target = atlas[rows].copy()
    for column in ("cell_type", "donor", "batch", "tissue"):
        target.obs[column] = target.obs[column].cat.remove_unused_categories()
    split = np.where(target.obs["donor"].astype(str) == query_donor, "query", "reference")
    target.obs["split"] = pd.Categorical(split, categories=["reference", "query"])
    target.uns["simulation"]["target"] = {
        "tissue": tissue,
        "reference_donor": reference_donor,
        "query_donor": query_donor,
        "cell_seed": int(cell_seed),
    }
    return target


# --------------------------------------------------------------------------------------------
# The plan: which model is fine-tuned / evaluated on which task, dataset, method and seed
# --------------------------------------------------------------------------------------------

REFERENCE = "reference"
"""Model name of the reference runs (from scratch, PCA): one per (task, dataset, method, seed)."""

HEADLINE: dict[str, tuple[str, ...]] = {
    "annotation": ("accuracy", "macro_f1"),
    "reference_mapping": ("accuracy",),
    "integration": ("avg_bio", "avg_batch"),
}
"""Metrics of each task shown in the transfer table and figures."""


@dataclass(frozen=True)
class TransferRun:
    """One method run of a transfer series: ``<results>/transfer/<model>/<task>/...``."""

    model: str
    task: str
    dataset: str
    method: str
    seed: int

    def run_dir(self, results_dir: str) -> str:
        """``<results>/transfer/<model>/<task>/<dataset>/<method>/seed<k>``."""
        return (
            f"{results_dir}/transfer/{self.model}/{self.task}/{self.dataset}/"
            f"{self.method}/seed{self.seed}"
        )


@dataclass(frozen=True)
class TransferPlan:
    """The runs the config's ``transfer`` section implies (see :meth:`from_config`)."""

    section: dict[str, Any]
    runs: tuple[TransferRun, ...]
    results_dir: str = "results"
    data_dir: str = "data"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], registry: Any = None) -> TransferPlan:
        """Check the ``transfer`` section and list its runs.

        Every series model is fine-tuned with ``methods[task]`` on each of the series'
        (task, dataset) pairs for every seed; the ``references`` methods (from scratch, PCA)
        run once per (task, dataset) of any series under the model name :data:`REFERENCE`,
        with the architecture and vocabulary of ``reference_model`` where they need one.

        Raises
        ------
        ValueError
            ``config transfer.<key>: ...`` naming the model, task or dataset that is wrong.
        """
        section = dict(config.get("transfer") or {})
        if not section:
            return cls(section={}, runs=())
        models = section.get("models") or {}
        where = "config transfer"
        for name, spec in models.items():
            if name == REFERENCE:
                raise ValueError(f"{where}.models.{name}: the name is reserved for reference runs")
            if ("checkpoint" in spec) == ("census" in spec):
                raise ValueError(
                    f"{where}.models.{name}: give exactly one of checkpoint (a registry "
                    f"checkpoint) or census (pre-trained here on a census subset)"
                )
            if registry is not None and "checkpoint" in spec:
                if spec["checkpoint"] not in registry.checkpoints:
                    raise ValueError(
                        f"{where}.models.{name}.checkpoint: {spec['checkpoint']!r} is not a "
                        f"registry checkpoint; known: {sorted(registry.checkpoints)}"
                    )
        if section["reference_model"] not in models:
            raise ValueError(
                f"{where}.reference_model: {section['reference_model']!r} is not under "
                f"transfer.models"
            )
        runs: list[TransferRun] = []
        pairs: dict[tuple[str, str], None] = {}
        for series, spec in section["series"].items():
            for model in spec["models"]:
                if model not in models:
                    raise ValueError(
                        f"{where}.series.{series}.models: {model!r} is not under transfer.models"
                    )
            for task, datasets in spec["tasks"].items():
                if task not in section["methods"]:
                    raise ValueError(
                        f"{where}.series.{series}.tasks.{task}: no method for it under "
                        f"transfer.methods"
                    )
                for dataset in datasets:
                    if registry is not None and dataset not in registry.datasets:
                        raise ValueError(
                            f"{where}.series.{series}.tasks.{task}: {dataset!r} is not a "
                            f"registry dataset"
                        )
                    pairs[(task, dataset)] = None
                    for model in spec["models"]:
                        for seed in section["seeds"]:
                            runs.append(
                                TransferRun(model, task, dataset, section["methods"][task], seed)
                            )
        for task, dataset in pairs:
            for method in (section.get("references") or {}).get(task, []):
                for seed in section["seeds"]:
                    runs.append(TransferRun(REFERENCE, task, dataset, method, seed))
        return cls(
            section=section,
            runs=tuple(dict.fromkeys(runs)),
            results_dir=config.get("results_dir", "results"),
            data_dir=config.get("data_dir", "data"),
        )

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """The ``transfer.models`` specs."""
        return dict(self.section.get("models") or {})

    def checkpoint_dir(self, model: str) -> str:
        """Folder of a model's checkpoint: fetched from the registry or pre-trained here."""
        if model == REFERENCE:
            model = self.section["reference_model"]
        spec = self.models[model]
        if "checkpoint" in spec:
            return f"{self.data_dir}/checkpoints/{spec['checkpoint']}"
        return f"{self.results_dir}/model/transfer/{model}"

    def needs_checkpoint(self, task: str, method: str) -> bool:
        """Whether the method takes a scGPT checkpoint (then the series model's is passed)."""
        from contract.registry import get_method

        return get_method(task, method).needs_checkpoint

    def checkpoint_inputs(self, model: str, task: str, method: str) -> list[str]:
        """The checkpoint files a run waits for (none for methods without a checkpoint)."""
        if not self.needs_checkpoint(task, method):
            return []
        from benchmark.sources.checkpoints import REQUIRED_FILES

        folder = self.checkpoint_dir(model)
        return [f"{folder}/{name}" for name in REQUIRED_FILES]

    def checkpoint_param(self, model: str, task: str, method: str) -> str | None:
        """The ``checkpoint=`` a run's method receives (``None`` without one)."""
        return self.checkpoint_dir(model) if self.needs_checkpoint(task, method) else None

    @staticmethod
    def method_params(plan: Any, config: Mapping[str, Any], task: str, method: str) -> dict:
        """The method's parameters as the main config sets them (none if it lists no such method).

        ``plan`` is the workflow's :class:`~benchmark.workflow.WorkflowPlan`.
        """
        configured = config["tasks"].get(task, {}).get("methods", {})
        return plan.method_params(task, method) if method in configured else {}

    @staticmethod
    def metric_options(plan: Any, config: Mapping[str, Any], task: str) -> dict:
        """The task's metric options of the main config (defaults when it has no such task)."""
        return plan.metric_options(task) if task in config["tasks"] else {}

    def run_files(self) -> list[str]:
        """Every run's ``run.json``."""
        return [f"{run.run_dir(self.results_dir)}/run.json" for run in self.runs]

    def targets(self) -> list[str]:
        """What ``snakemake transfer`` builds: the runs, the table and the figures."""
        return [
            *self.run_files(),
            f"{self.results_dir}/tables/transfer.md",
            f"{self.results_dir}/tables/transfer.csv",
            f"{self.results_dir}/figures/transfer",
        ]
