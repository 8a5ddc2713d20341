"""A small seeded simulator of count data with cell types and batches (tests, benchmarks, demos)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def synthetic_counts(
    n_cells: int = 200,
    n_genes: int = 100,
    *,
    n_cell_types: int = 3,
    n_batches: int = 1,
    mean_library: float = 2000.0,
    seed: int = 0,
) -> AnnData:
    """Simulate raw counts: per cell type a log-normal gene program, a batch scaling, NB noise.

    Parameters
    ----------
    n_cells, n_genes
        Size of the matrix.
    n_cell_types
        Cell types (``obs["cell_type"]`` as ``"type_<k>"``), each with its own marker genes.
    n_batches
        Batches (``obs["batch"]`` as ``"batch_<k>"``), each scaling genes by a random factor.
    mean_library
        Mean total counts per cell.
    seed
        Seed.

    Returns
    -------
    AnnData
        CSR float32 counts, ``var_names`` ``GENE<i>``, ``obs`` with ``cell_type`` and ``batch``.
    """
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0.0, 1.2, size=n_genes)
    programs = np.tile(base, (n_cell_types, 1))
    for k in range(n_cell_types):
        markers = rng.choice(n_genes, size=max(1, n_genes // 10), replace=False)
        programs[k, markers] *= rng.uniform(4, 12, size=markers.size)
    batch_effect = rng.lognormal(0.0, 0.3, size=(n_batches, n_genes))
    types = rng.integers(n_cell_types, size=n_cells)
    batches = rng.integers(n_batches, size=n_cells)
    rates = programs[types] * batch_effect[batches]
    rates /= rates.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(mean_library), 0.3, size=(n_cells, 1))
    mu = rates * library
    r = 2.0  # negative-binomial dispersion
    counts = rng.poisson(rng.gamma(r, mu / r))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in types]),
            "batch": pd.Categorical([f"batch_{b}" for b in batches]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)])
    return AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
