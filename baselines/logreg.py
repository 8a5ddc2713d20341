"""L1-regularised logistic regression on log-normalised HVGs (the reviewer's simple baseline).

Features: log1p(CP10k) expression of the reference's top ``n_top_genes`` highly variable
genes (chosen on the reference only), standardised with the reference's means and SDs and
clipped at +-10. Model: scikit-learn ``LogisticRegression`` with an L1 penalty
(``l1_ratio=1``, the saga solver, multinomial loss). The harness's validation cells
(``reference.obs["train_val"] == "val"``) are not held out: a linear model has no early
stopping to tune, so it trains on the whole reference.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from baselines.knn_transfer import log_normalised_hvg
from contract.registry import register

log = logging.getLogger(__name__)


@register("reference_mapping", "logreg", label="Logistic regression")
@register("annotation", "logreg", label="Logistic regression")
def logreg(
    reference,
    query,
    *,
    seed: int,
    n_top_genes: int | None = 2000,
    C: float = 1.0,
    l1_ratio: float = 1.0,
    solver: str = "saga",
    max_iter: int = 1000,
    tol: float = 1e-3,
) -> np.ndarray:
    """Logistic regression (L1) on standardised log-normalised HVGs of the reference."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    ref_x, query_x, genes = log_normalised_hvg(reference, query, n_top_genes=n_top_genes)
    mean, sd = ref_x.mean(axis=0), ref_x.std(axis=0)
    sd[sd == 0] = 1.0
    ref_x = np.clip((ref_x - mean) / sd, -10, 10)
    query_x = np.clip((query_x - mean) / sd, -10, 10)
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    model = LogisticRegression(
        C=C, l1_ratio=l1_ratio, solver=solver, max_iter=max_iter, tol=tol, random_state=seed
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(ref_x, labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logreg: %s did not converge in max_iter=%d (tol=%g)", solver, max_iter, tol)
    n_used = int((np.abs(model.coef_) > 0).any(axis=0).sum())
    log.info("logreg: %d of %d genes have a non-zero coefficient", n_used, len(genes))
    return model.predict(query_x).astype(str)
