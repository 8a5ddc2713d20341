"""Task settings: frozen dataclass fields, set from the config through ``with_metric_options``."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.tasks import get_task
from benchmark.tasks.embedding import EmbeddingTask
from benchmark.tasks.integration import IntegrationTask
from contract.tasks import TASKS


@pytest.mark.parametrize("name", TASKS)
def test_every_task_is_a_frozen_dataclass_whose_options_are_fields(name):
    task = get_task(name)
    assert dataclasses.is_dataclass(task)
    fields = {f.name for f in dataclasses.fields(task)}
    assert set(task.metric_options) <= fields
    # what describes the task is not a setting
    assert not fields & {"name", "metrics", "paper_table", "breakdown", "required_obs"}
    assert task.with_metric_options(None) is task
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(task, next(iter(fields)), None)


def test_with_metric_options_copies_and_checks_the_new_values_again():
    base = get_task("integration")
    leiden = base.with_metric_options({"clustering": "leiden"})
    assert leiden == dataclasses.replace(base, clustering="leiden") and leiden is not base
    assert base.clustering == "louvain"  # the registered task is unchanged
    with pytest.raises(ValueError, match=r"metrics\.clustering 'kmeans'"):
        base.with_metric_options({"clustering": "kmeans"})
    with pytest.raises(ValueError, match=r"unknown metrics option\(s\) \['n_hvg'\]"):
        base.with_metric_options({"n_hvg": 10})
    with pytest.raises(ValueError, match="n_hvg must be >= 2"):
        IntegrationTask(n_hvg=1)


def test_settings_are_normalised_on_every_copy():
    grn = get_task("grn").with_metric_options({"gene_sets": "x.gmt"})
    assert grn.gene_sets.name == "x.gmt" and grn.target_lists == {}
    expansion = get_task("perturbation_expansion").with_metric_options({"resolution": 2})
    assert isinstance(expansion.resolution, float)
    reverse = get_task("reverse_perturbation").with_metric_options({"genes": ["B", "A"]})
    assert reverse.genes == ["A", "B"] and reverse.n_genes == 2
    # a number of genes replaces the chosen genes; any other option keeps them
    assert reverse.with_metric_options({"n_splits": 2}).genes == ["A", "B"]
    chosen = reverse.with_metric_options({"n_genes": 6})
    assert chosen.genes is None and chosen.n_genes == 6


@pytest.mark.parametrize("name", ["integration", "multiomics"])
def test_embedding_tasks_share_the_output_handling(name):
    task = get_task(name)
    assert isinstance(task, EmbeddingTask)
    with pytest.raises(ValueError, match=rf"{name} method must return an array of shape \(3, d\)"):
        task.check_embedding([1.0, 2.0, 3.0], 3)
    with pytest.raises(ValueError, match=rf"{name} method returned non-finite values for 1 cells"):
        task.check_embedding([[1.0], [float("nan")], [0.0]], 3)
