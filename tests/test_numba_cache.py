"""umap-learn's kernels are compiled once per installation, not once per job process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import anndata as ad
    import numpy as np
    import scanpy as sc
    from benchmark.numba_cache import cache_umap_kernels

    enabled = cache_umap_kernels()
    assert "umap.umap_.smooth_knn_dist" in enabled, enabled
    assert cache_umap_kernels() == [], "a second call has nothing left to enable"
    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    # scanpy's neighbour graph: umap-learn's smooth_knn_dist and compute_membership_strengths,
    # the kernels every graph of the workflow compiles (the UMAP layout adds its own).
    adata = ad.AnnData(x)
    sc.pp.neighbors(adata, n_neighbors=10, use_rep="X", random_state=0)
    np.save({out!r}, adata.obsp["connectivities"].toarray())
    import umap.umap_
    print("cache hits", sum(umap.umap_.smooth_knn_dist.stats.cache_hits.values()))
    """
)


def _run(tmp_path: Path, out: Path, cache_dir: Path) -> int:
    """Run the probe; the number of times it loaded smooth_knn_dist from the disk cache."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_NUM_THREADS": "1"}
    script = tmp_path / "probe.py"
    script.write_text(_SCRIPT.format(out=str(out)))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split("cache hits")[-1])


@pytest.mark.slow
def test_umap_kernels_are_cached_on_disk_and_give_the_same_graph(tmp_path):
    cache_dir = tmp_path / "numba"
    assert _run(tmp_path, tmp_path / "first.npy", cache_dir) == 0
    cached = {p.name.split("-")[0] for p in cache_dir.rglob("*.nbi")}
    assert {"umap_.smooth_knn_dist", "umap_.compute_membership_strengths"} <= cached, cached
    # A second process loads the kernels from the cache and builds the same graph.
    assert _run(tmp_path, tmp_path / "second.npy", cache_dir) > 0
    import numpy as np

    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"))
