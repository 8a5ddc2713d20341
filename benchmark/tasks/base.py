"""The task contract: how the harness feeds a method, stores its output and scores it."""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the job's parent process imports this module and needs no anndata
    import anndata as ad
    import scipy.sparse as sp

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
    """One benchmark task (annotation, integration, perturbation, ...).

    A task turns a standard dataset into the method's inputs (:meth:`prepare`), calls the
    method (:meth:`call`), writes what it returned (:meth:`save`) and scores it against the
    truth kept aside in :meth:`prepare` (:meth:`score`). Methods never see the truth.

    A task is a frozen dataclass: its settings (HVGs, scoring choices, ...) are keyword-only
    dataclass fields with the paper's defaults, checked in ``__post_init__``; what describes
    the task itself (the attributes below) is class-level (``ClassVar``).

    Attributes
    ----------
    name
        Task name, as in ``contract.registry.TASKS`` and the config.
    metrics
        Headline metrics, in table order; :meth:`score` returns at least these keys.
    paper_table
        File name in ``benchmark/paper/`` with the paper's values for this task, if any.
    breakdown
        Further score keys shown in a second table (e.g. per condition group); a key a
        dataset has no value for is shown as ``—``.
    required_obs
        obs columns the dataset must have for this task.
    metric_options
        The settings the config's ``tasks.<task>.metrics`` may set (field names).
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    paper_table: ClassVar[str | None] = None
    breakdown: ClassVar[tuple[str, ...]] = ()
    required_obs: ClassVar[tuple[str, ...]] = ()
    metric_options: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Split the standard dataset into method inputs and held-out truth.

        Returns a dict with at least ``"args"`` (tuple of positional method inputs) and
        whatever :meth:`score` needs (e.g. ``"truth"``).
        """

    def call(
        self, func: Callable[..., Any], inputs: dict[str, Any], *, seed: int, params: dict[str, Any]
    ) -> Any:
        """Call the method function with the task's inputs."""
        return func(*inputs["args"], seed=seed, **params)

    @abc.abstractmethod
    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Write the method's output under ``outdir`` atomically; return the files written."""

    @abc.abstractmethod
    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, float]:
        """Score the output against the truth; keys include every name in :attr:`metrics`."""

    def check_metric_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """``options`` as a dict, once every key is one of :attr:`metric_options`.

        Raises
        ------
        ValueError
            Naming the options this task does not have and the ones it has.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.metric_options))
        if unknown:
            raise ValueError(
                f"{self.name} task: unknown metrics option(s) {unknown}; "
                f"expected {list(self.metric_options)}"
            )
        return options

    def with_metric_options(self, options: dict[str, Any] | None) -> Task:
        """A copy of this task with the config's ``tasks.<task>.metrics`` options set.

        Each option is the field of that name; the copy's ``__post_init__`` checks the new
        values as the constructor does. No options: this task itself.

        Raises
        ------
        ValueError
            For a key other than :attr:`metric_options`, or a value the task refuses.
        """
        options = self.check_metric_options(options)
        if not options:
            return self
        return dataclasses.replace(self, **options)

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Draw this task's figures for one dataset from all its runs; return the files.

        ``run_dirs`` are ``results/<task>/<dataset>/<method>/seed<k>/`` folders (failed runs
        included: skip them). The default draws nothing.
        """
        return []


def drop_empty_cells(
    adata: ad.AnnData, counts: sp.csr_matrix, task: str
) -> tuple[ad.AnnData, sp.csr_matrix]:
    """The cells with at least one count, and their rows of ``counts``.

    A cell without a single count (an empty droplet left in a download) holds no expression,
    so no method can place it: scoring it would grade where each method happens to put a
    vector of zeros. Such cells are dropped for every method alike (scIB's and scanpy's
    pipelines filter them before integrating) with a warning that names how many, which the
    run records (``run.json`` ``warnings``) and the table shows beside the row.

    Parameters
    ----------
    adata
        The standard dataset.
    counts
        Its raw counts (cells x features), in ``adata``'s cell order.
    task
        Task name, for the messages.

    Returns
    -------
    ``(adata, counts)`` without the empty cells (``adata`` as a view; the inputs themselves
    when there are none).

    Raises
    ------
    ValueError
        If every cell is empty.
    """
    import numpy as np

    empty = np.asarray(counts.sum(axis=1)).ravel() <= 0
    n_empty = int(empty.sum())
    if not n_empty:
        return adata, counts
    examples = adata.obs_names[empty][:3].tolist()
    if n_empty == adata.n_obs:
        raise ValueError(
            f"{task}: all {n_empty} cells of the dataset have no counts (e.g. {examples}); "
            "nothing can be integrated or scored"
        )
    log.warning(
        "%s: %d of %d cells have no counts in any feature (e.g. %s) and are left out for "
        "every method: an empty cell cannot be placed, so it cannot be scored",
        task,
        n_empty,
        adata.n_obs,
        examples,
    )
    keep = ~empty
    return adata[keep], counts[keep]
