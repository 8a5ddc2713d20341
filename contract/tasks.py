"""The one task list, and what a method of each task receives and returns.

Every other list of tasks derives from :data:`TASKS`: the registry refuses a method for any
other task, the harness's task modules are ``benchmark.tasks.<task>``, the dataset registry
accepts these (plus ``pretraining``), and ``config/schema.yaml`` names the same keys (a test
checks that it does).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENVS", "TASKS", "TASK_CONTRACTS", "TaskContract"]

TASKS: tuple[str, ...] = (
    "annotation",
    "reference_mapping",
    "integration",
    "multiomics",
    "perturbation",
    "reverse_perturbation",
    "perturbation_expansion",
    "grn",
)
"""Task names a method can register for (the keys of ``tasks:`` in the config)."""

ENVS: tuple[str, ...] = ("base", "r", "gears", "glue")
"""Environment groups; each has an ``envs/<name>.yaml`` conda file."""


@dataclass(frozen=True)
class TaskContract:
    """What a task's method function looks like.

    Attributes
    ----------
    task
        The task's name.
    inputs
        Names of the positional parameters, in order (the harness passes them by position).
    returns
        What the function returns, in words (checked by the task when it saves the output).
    summary
        One line on the task, for errors and the contributor guide.

    Every method also takes a keyword-only ``seed: int``, and may take
    ``checkpoint: str`` (methods registered with ``needs_checkpoint=True``) and its own
    keyword-only hyper-parameters, whose defaults are the paper's.
    """

    task: str
    inputs: tuple[str, ...]
    returns: str
    summary: str

    def signature(self) -> str:
        """``f(reference, query, *, seed, **params) -> labels``, as in the guide."""
        return f"f({', '.join(self.inputs)}, *, seed, **params) -> {self.returns}"


TASK_CONTRACTS: dict[str, TaskContract] = {
    c.task: c
    for c in (
        TaskContract(
            "annotation",
            ("reference", "query"),
            "np.ndarray of labels (one str per query cell)",
            "label the query cells with the reference's cell types",
        ),
        TaskContract(
            "reference_mapping",
            ("reference", "query"),
            "np.ndarray of labels (one str per query cell)",
            "map query cells onto a reference (zero-shot or fine-tuned) and transfer labels",
        ),
        TaskContract(
            "integration",
            ("adata",),
            "np.ndarray embedding (n_cells x d)",
            "embed cells of several batches so that batches mix and cell types stay apart",
        ),
        TaskContract(
            "multiomics",
            ("adata",),
            "np.ndarray embedding (n_cells x d)",
            "embed cells measured in several modalities (var['modality']) jointly",
        ),
        TaskContract(
            "perturbation",
            ("train", "conditions"),
            "AnnData, one row per condition (obs_names), train's var_names, mean log-expression",
            "predict the mean expression after each perturbation condition",
        ),
        TaskContract(
            "reverse_perturbation",
            ("train", "candidates", "queries"),
            "pd.DataFrame of scores, queries x candidate conditions (higher = more likely)",
            "rank the candidate perturbations that could have produced each observed profile",
        ),
        TaskContract(
            "perturbation_expansion",
            ("train", "conditions"),
            "AnnData, one row per condition (obs_names), train's var_names, mean log-expression",
            "predict every single and pair perturbation of a gene set (then clustered)",
        ),
        TaskContract(
            "grn",
            ("adata",),
            "pd.DataFrame gene embedding or weighted edges (or a dict of them by name)",
            "infer gene programs (embeddings) or regulator -> target edges",
        ),
    )
}
"""Each task's method contract (see ``CONTRIBUTING.md``)."""

assert tuple(TASK_CONTRACTS) == TASKS  # one list: the contracts follow it, in order
