"""Every annotation method beats a majority-class predictor on a simulated data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.simulate import simulate_celltypes
from benchmark.tasks.annotation import TASK
from contract.registry import get_method

torch.set_num_threads(1)

# Tiny settings: the point is that each method learns, not the paper's numbers.
FAST_PARAMS = {
    "logreg": {"n_top_genes": 200},
    "pca_knn": {"n_comps": 20},
    "tosica": {"epochs": 10, "lr": 0.05, "drop_ratio": 0.1},
    "scbert": {
        "dim": 16,
        "depth": 1,
        "heads": 2,
        "dim_head": 8,
        "h_dim": 16,
        "epochs": 3,
        "batch_size": 16,
        "grad_acc": 1,
        "lr": 1e-3,
        "warmup_epochs": 0,
        "n_top_genes": 150,
    },
}


@pytest.fixture(scope="module")
def simulated():
    return simulate_celltypes(n_cells=500, n_batches=2, seed=3)


@pytest.mark.parametrize("method", sorted(FAST_PARAMS))
def test_method_beats_majority_class(simulated, method):
    inputs = TASK.prepare(simulated, seed=0)
    reference, _ = inputs["args"]
    labels, counts = np.unique(reference.obs["cell_type"].astype(str), return_counts=True)
    majority = float(np.mean(inputs["truth"] == labels[counts.argmax()]))
    spec = get_method("annotation", method)
    spec.check_params(FAST_PARAMS[method])
    predicted = TASK.call(spec.func, inputs, seed=0, params=FAST_PARAMS[method])
    scores = TASK.score(predicted, inputs, seed=0)
    assert scores["accuracy"] > majority + 0.2, (method, scores["accuracy"], majority)
    assert scores["macro_f1"] > 0.5


def test_registered_labels_match_the_paper_table():
    from benchmark.tables import paper_values

    paper_methods = set(paper_values("annotation.csv")["method"])
    assert get_method("annotation", "tosica").label in paper_methods
    # The paper's scBERT is pre-trained on PanglaoDB; this one is not, so it is not that row.
    assert get_method("annotation", "scbert").label == "scBERT (from scratch)"
    assert get_method("annotation", "scbert").label not in paper_methods
    assert get_method("annotation", "logreg").label == "Logistic regression"
    # Paper defaults are the function defaults.
    assert get_method("annotation", "tosica").parameters()["embed_dim"] == 48
    assert get_method("annotation", "scbert").parameters()["dim"] == 200
