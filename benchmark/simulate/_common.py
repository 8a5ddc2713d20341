"""Building blocks shared by the simulators: random streams, cell states and count sampling.

Nothing here draws on its own: every function takes the generator it draws from, so each
simulator's sequence of draws is the order in which it calls these steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Separate random streams per generator so that e.g. seed=0 of two generators is not the same
# sequence of draws (seeds are combined with these tags through numpy's SeedSequence).
STREAM_WORLD = 11
STREAM_CELLTYPES = 23
STREAM_PERTURBATION = 37
STREAM_MULTIOME = 41
STREAM_ATLAS = 53
STREAM_MULTIOME_SETTING = 59

# Target sum used for "log1p(normalised)" expression everywhere in the ground truth.
NORMALISE_TARGET_SUM = 1e4


def stream_rng(stream: int, seed: int) -> np.random.Generator:
    """The generator of one simulator's stream (``stream``, a ``STREAM_*`` tag) for ``seed``."""
    return np.random.default_rng([int(seed), stream])


def readonly(array: np.ndarray) -> np.ndarray:
    """``array`` as a read-only numpy array (the world and batch effects are value objects)."""
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def sample_nb(mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts (gamma-Poisson) with mean ``mu`` and inverse dispersion."""
    rate = rng.gamma(shape=theta, scale=mu / theta)
    return rng.poisson(rate)


def softmax(log_values: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (relative abundances from log-abundances)."""
    shifted = np.exp(log_values - log_values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def log1p_normalised(expected: np.ndarray) -> np.ndarray:
    """log1p of counts normalised to :data:`NORMALISE_TARGET_SUM` (expected or observed)."""
    total = expected.sum(axis=-1, keepdims=True)
    return np.log1p(NORMALISE_TARGET_SUM * expected / np.where(total > 0, total, 1.0))


def assign_cells(
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


def obs_frame(n_cells: int, prefix: str = "cell", width: int = 5) -> pd.DataFrame:
    """Empty ``obs`` of ``n_cells`` cells named ``<prefix>00000``, ... (index name ``cell``)."""
    return pd.DataFrame(
        index=pd.Index([f"{prefix}{i:0{width}d}" for i in range(n_cells)], name="cell")
    )


def peak_names(n_peaks: int) -> list[str]:
    """ATAC feature names ``peak_0001``, ... (at least four digits)."""
    width = max(4, len(str(n_peaks)))
    return [f"peak_{k + 1:0{width}d}" for k in range(n_peaks)]
