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
    import numpy as np
    from benchmark.numba_cache import cache_umap_kernels
    from benchmark.plots import umap_coordinates

    enabled = cache_umap_kernels()
    assert "umap.umap_.smooth_knn_dist" in enabled, enabled
    assert cache_umap_kernels() == [], "a second call has nothing left to enable"
    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    np.save({out!r}, umap_coordinates(x, seed=0))
    """
)


def _run(tmp_path: Path, out: Path, cache_dir: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_NUM_THREADS": "1"}
    script = tmp_path / "probe.py"
    script.write_text(_SCRIPT.format(out=str(out)))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_umap_kernels_are_cached_on_disk_and_give_the_same_layout(tmp_path):
    cache_dir = tmp_path / "numba"
    _run(tmp_path, tmp_path / "first.npy", cache_dir)
    cached = {p.name.split("-")[0] for p in cache_dir.rglob("*.nbi")}
    assert {"umap_.smooth_knn_dist", "umap_.compute_membership_strengths"} <= cached, cached
    # A second process loads the kernels from the cache and draws the same layout.
    _run(tmp_path, tmp_path / "second.npy", cache_dir)
    import numpy as np

    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"))
