"""How each stage of the benchmark grows with the number of cells: seconds and peak memory.

Usage::

    .venv/bin/python benchmarks/scaling.py [--sizes 1000,3000,10000,30000,100000] [--threads 2]
        [--cap-seconds 60] [--timeout 300] [--stages all] [--out-dir benchmarks/results]
        [--keep-workdir DIR] [--from-json benchmarks/results/scaling.json]

Data: :func:`benchmark.simulate.simulate_celltypes` in a world shaped like the paper's largest
integration / annotation sets (3,000 genes, 30 gene programs, 30 cell types, 16 batches,
~700 detected genes and ~1,500 counts per cell). Each batch is simulated by its own call
(``n_batches=1``, seed ``100 + b``: its own library-size, gene-wise and dropout effects), so
that memory stays bounded at 100k cells and every size has the same 16 batches; batches 12-15
are the annotation query (25% of the cells). The first 1,165 gene symbols are renamed to the
genes of the committed demo checkpoint's vocabulary (``results/model/sim_atlas``), so that
scGPT sees ~40% of the HVGs as tokens rather than the ~13% the simulator's names would give.

Stages, each run in its own process per size, forked from a forkserver that has imported the
stages' libraries (numpy, scanpy, JAX, torch: ~5 s a process otherwise): the child loads its
inputs, warms up just-in-time compilers whose compilation does not depend on the data size
(numba in pynndescent / scanpy, torch's first call; recorded as ``warmup_s``), resets its
peak-RSS counter (``/proc/self/clear_refs``), then times the stage
(``time.perf_counter``; ``cpu_s`` = user + system CPU seconds of all its threads) and reads
its peak RSS (``VmHWM``). ``peak_mib`` is that peak, the preloaded libraries (``rss_start_mib``,
the same for every stage) and the inputs included; ``delta_mib`` = peak minus the RSS just
before the stage (what the stage itself allocates).

Growth: ``exponent`` is the least-squares slope of log(seconds) on log(cells) over the
measured sizes (``exponent_cpu`` the same of CPU seconds, which a busy machine disturbs less);
``exponent_top2`` the slope between the two largest measured sizes. Once a stage has two
measured sizes, a larger size whose predicted time exceeds ``--cap-seconds`` is not run. The
prediction, and the extrapolated value that replaces the measurement, is a fixed cost plus
``a * n**p`` through the two largest measured points, ``p`` the stage's algorithmic exponent
(2 for the silhouettes, whose pairwise distances are quadratic by definition; 1 otherwise):
fixed costs (JAX compilations per shape, process set-up) flatten the measured slope at small
sizes, and a log-log line through them would under-predict. Where the points grow faster than
``n**p`` allows (a negative fixed cost) or not at all, the two points' log-log slope (at least
0) is extended instead. Extrapolated values are marked ``extrapolated`` everywhere (JSON,
table, figure), never as measured; memory is extended along the log-log slope of the stage's
own allocation.
Stages whose outputs later stages read (standardise, task preparation, PCA, Harmony, the
neighbour graph) always run.

Outputs: ``scaling.json`` (every measurement, environment, settings), ``scaling.md`` (table),
``scaling.png`` (log-log figure) and ``compute_plan.md`` (``benchmarks/compute_plan.py``: the
paper configuration's cost from these measurements and the FLOP formula of
``model_throughput.py``; every assumption stated).
``--from-json`` re-writes the last three from a ``scaling.json`` without measuring.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHECKPOINT = ROOT / "results" / "model" / "sim_atlas"
DATASET = "scaling_sim"
N_GENES = 3000
N_PROGRAMS = 30
N_CELL_TYPES = 30
N_TFS = 30
N_BATCHES = 16
QUERY_BATCHES = range(12, 16)
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)

#: Demo settings (config/config.yaml) for the scGPT stages: the paper's (12 x 512, max_len
#: 1,201 with zero genes, 15 epochs) are costed from FLOPs in compute_plan.md instead.
SCGPT_FINETUNE = {
    "epochs": 1,
    "lr": 0.001,
    "max_len": 128,
    "include_zero_genes": False,
    "batch_size": 64,
}
SCGPT_EMBED = {"max_length": 1200, "batch_size": 64}
#: The integration tutorial's tokens (every HVG a token, zeros included, up to 1,201) for the
#: stages that hold or stream one epoch's batches.
EPOCH_BATCHES = {"max_len": 1201, "include_zero_genes": True, "batch_size": 64}

#: Table builder: runs per 1,000 "cells" on the size axis (105 = the paper configuration's
#: integration runs: 3 datasets x 7 methods x 5 seeds).
TABLE_RUNS_PER_1K = 105
TABLE_METHODS = ("scgpt", "scgpt_zeroshot", "scgpt_scratch", "pca", "harmony", "scvi", "seurat")

SCANPY = ("anndata", "scanpy")
METRICS = ("benchmark.metrics.integration", "scib_metrics", "sklearn.neighbors")
TORCH = ("torch", "scgpt", "scgpt.finetune.integration", "baselines._scgpt_common")


# ---------------------------------------------------------------------------------------------
# Memory and time probes (child side)
# ---------------------------------------------------------------------------------------------


def _status_mib(field_name: str) -> float:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else math.nan


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Data (child side, stage "simulate")
# ---------------------------------------------------------------------------------------------


def vocabulary_genes() -> list[str]:
    """Gene symbols of the demo checkpoint's vocabulary (special tokens left out)."""
    vocab = json.loads((CHECKPOINT / "vocab.json").read_text())
    return [g for g in vocab if not g.startswith("<")]


def simulate(n_cells: int, seed: int = 0) -> Any:
    """Raw counts of ``n_cells`` cells in 16 batches (see the module docstring)."""
    import anndata as ad
    import pandas as pd

    from benchmark.simulate import make_world, simulate_celltypes

    world = make_world(
        n_genes=N_GENES, n_programs=N_PROGRAMS, n_cell_types=N_CELL_TYPES, n_tfs=N_TFS, seed=seed
    )
    parts = []
    for b in range(N_BATCHES):
        m = n_cells // N_BATCHES + (1 if b < n_cells % N_BATCHES else 0)
        part = simulate_celltypes(world, n_cells=m, n_batches=1, seed=100 + b)
        part.obs_names = [f"b{b:02d}_{c}" for c in part.obs_names]
        part.obs = pd.DataFrame(
            {
                "cell_type": part.obs["cell_type"].astype(str).to_numpy(),
                "batch": f"batch{b:02d}",
                "set": "query" if b in QUERY_BATCHES else "reference",
            },
            index=part.obs_names,
        )
        part.uns = {}
        parts.append(part)
    adata = ad.concat(parts, axis=0, merge="first")
    vocab = vocabulary_genes()
    taken = set(vocab)
    names = vocab + [g for g in world.genes if g not in taken]
    adata.var_names = names[: adata.n_vars]
    adata.var = adata.var[[]]
    return adata


def write_registry(folder: Path) -> Path:
    """A registry with one downloaded-style h5ad entry for the simulated data."""
    import yaml

    body = {
        "version": 1,
        "datasets": {
            DATASET: {
                "kind": "dataset",
                "description": "Simulated cells for benchmarks/scaling.py (standardisation stage).",
                "tasks": ["annotation", "integration"],
                "format": "h5ad",
                "files": [
                    {
                        "name": "sim.h5ad",
                        "url": "https://example.org/sim.h5ad",
                        "sha256": None,
                        "format": "h5ad",
                    }
                ],
                "inputs": {"data": "sim.h5ad"},
                "obs": {"cell_type": "cell_type", "batch": "batch"},
                "split": {
                    "by": "obs",
                    "column": "set",
                    "values": {"reference": ["reference"], "query": ["query"]},
                },
                "genes": {"id_type": "symbol", "duplicates": "auto"},
                "counts": "auto",
                "verification": "unverified",
            }
        },
    }
    path = folder / "datasets.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Stages (child side): setup (untimed) -> optional warm-up -> run (timed) -> save (untimed)
# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a stage's functions know: its size folder, threads and what they report."""

    folder: Path
    n_cells: int
    threads: int
    info: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.folder / name


@dataclass(frozen=True)
class Stage:
    """One timed stage.

    ``imports`` are imported before the timer starts (a workflow job has them loaded anyway);
    ``needs`` are files of the size folder the stage reads (written by earlier stages: the
    stage is skipped when one is missing); ``required`` stages always run (later stages read
    their outputs); ``optional`` stages run only when named in ``--stages``; ``parallel``
    marks work that uses every thread (BLAS, XLA, faiss, torch), for compute_plan.md;
    ``exponent`` is the growth of its algorithm (2 for the pairwise silhouettes), used with
    a fixed cost to predict and extrapolate its time (:func:`extend`).
    """

    name: str
    label: str
    family: str
    setup: Callable[[Context], Any]
    run: Callable[[Any, Context], Any]
    save: Callable[[Any, Any, Context], None] | None = None
    warmup: Callable[[Any, Context], None] | None = None
    imports: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    required: bool = False
    optional: bool = False
    parallel: bool = False
    exponent: float = 1.0
    note: str = ""


def _read_h5ad(path: Path) -> Any:
    import anndata as ad

    return ad.read_h5ad(path)


def _truth(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(ctx.path("integration_truth.npz"), allow_pickle=False)
    return data["cell_type"], data["batch"]


def _neighbors(ctx: Context, k: int) -> Any:
    from scib_metrics.nearest_neighbors import NeighborsResults

    data = np.load(ctx.path("neighbors.npz"))
    full = NeighborsResults(indices=data["indices"], distances=data["distances"])
    return full.subset_neighbors(min(k, full.n_neighbors))


def _save_npy(name: str) -> Callable[[Any, Any, Context], None]:
    def save(inputs: Any, output: Any, ctx: Context) -> None:
        np.save(ctx.path(name), np.asarray(output, dtype=np.float32))

    return save


# -- data set-up and standardisation -------------------------------------------------------


def _simulate_run(_: Any, ctx: Context) -> Any:
    return simulate(ctx.n_cells)


def _simulate_save(_: Any, adata: Any, ctx: Context) -> None:
    from benchmark.io import write_h5ad

    ctx.path("raw").mkdir(parents=True, exist_ok=True)
    ctx.path("registry").mkdir(parents=True, exist_ok=True)
    write_h5ad(adata, ctx.path("raw/sim.h5ad"))
    write_registry(ctx.path("registry"))


def _standardise_setup(ctx: Context) -> dict[str, Any]:
    from benchmark.datasets import load_registry

    return {"registry": load_registry(ctx.path("registry/datasets.yaml"))}


def _standardise_run(inputs: dict[str, Any], ctx: Context) -> Any:
    from benchmark.datasets import prepare_standard_dataset

    adata = prepare_standard_dataset(
        DATASET,
        ctx.path("standard.h5ad"),
        raw_dir=ctx.path("raw"),
        registry=inputs["registry"],
        vocabulary=vocabulary_genes(),
    )
    ctx.info["nnz_per_cell"] = round(adata.X.nnz / adata.n_obs, 1)
    ctx.info["shape"] = list(adata.shape)


# -- task preparation -----------------------------------------------------------------------


def _standard_setup(ctx: Context) -> Any:
    return _read_h5ad(ctx.path("standard.h5ad"))


def _integration_prepare_warmup(adata: Any, ctx: Context) -> None:
    from benchmark.tasks.integration import IntegrationTask

    # Two batches of up to 400 cells: compiles scanpy's numba kernels (HVG, normalisation).
    batch = adata.obs["batch"].astype(str).to_numpy()
    first = [np.flatnonzero(batch == b)[:400] for b in np.unique(batch)[:2]]
    IntegrationTask().prepare(adata[np.concatenate(first)].copy(), seed=0)


def _integration_prepare_run(adata: Any, ctx: Context) -> Any:
    from benchmark.tasks.integration import IntegrationTask

    return IntegrationTask().prepare(adata, seed=0)


def _integration_prepare_save(inputs: Any, output: Any, ctx: Context) -> None:
    from benchmark.io import write_h5ad

    write_h5ad(output["args"][0], ctx.path("integration_input.h5ad"))
    truth = output["truth"]
    np.savez(
        ctx.path("integration_truth.npz"),
        cell_type=truth["cell_type"].astype(str),
        batch=truth["batch"].astype(str),
    )


def _annotation_prepare_run(adata: Any, ctx: Context) -> Any:
    from benchmark.tasks.annotation import AnnotationTask

    return AnnotationTask().prepare(adata, seed=0)


def _annotation_prepare_save(inputs: Any, output: Any, ctx: Context) -> None:
    from benchmark.io import write_h5ad

    reference, query = output["args"]
    write_h5ad(reference, ctx.path("reference.h5ad"))
    write_h5ad(query, ctx.path("query.h5ad"))
    np.save(ctx.path("annotation_truth.npy"), np.asarray(output["truth"]).astype(str))
    ctx.info["n_reference"], ctx.info["n_query"] = int(reference.n_obs), int(query.n_obs)


# -- baselines ------------------------------------------------------------------------------


def _method_input_setup(ctx: Context) -> Any:
    return _read_h5ad(ctx.path("integration_input.h5ad"))


def _pca_run(adata: Any, ctx: Context) -> np.ndarray:
    from baselines.pca import pca_integration

    return pca_integration(adata, seed=0)


def _harmony_run(adata: Any, ctx: Context) -> np.ndarray:
    from baselines.harmony import harmony_integration

    return harmony_integration(adata, seed=0, n_threads=ctx.threads)


def _annotation_inputs_setup(ctx: Context) -> tuple[Any, Any]:
    return _read_h5ad(ctx.path("reference.h5ad")), _read_h5ad(ctx.path("query.h5ad"))


def _logreg_run(inputs: tuple[Any, Any], ctx: Context) -> np.ndarray:
    from baselines.logreg import logreg

    return logreg(*inputs, seed=0)


def _pca_knn_run(inputs: tuple[Any, Any], ctx: Context) -> np.ndarray:
    from baselines.knn_transfer import pca_knn

    return pca_knn(*inputs, seed=0)


# -- annotation metrics ---------------------------------------------------------------------


def _annotation_metrics_setup(ctx: Context) -> dict[str, Any]:
    """The query's truth and a prediction that is wrong for a random 20% of the cells (the
    metrics' cost does not depend on which method predicted)."""
    truth = np.load(ctx.path("annotation_truth.npy"))
    rng = np.random.default_rng(0)
    predicted = truth.copy()
    wrong = rng.random(truth.size) < 0.2
    predicted[wrong] = rng.choice(np.unique(truth), int(wrong.sum()))
    return {"truth": truth, "predicted": predicted}


def _annotation_metrics_run(inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    from benchmark.metrics.annotation import row_normalised_confusion
    from benchmark.tasks.annotation import AnnotationTask

    truth, predicted = inputs["truth"], inputs["predicted"]
    labels = sorted(np.unique(truth).tolist())
    task_inputs = {"truth": truth, "query_labels": labels, "unseen_query_labels": []}
    scores = AnnotationTask().score(predicted, task_inputs, seed=0)
    row_normalised_confusion(truth, predicted)  # the confusion-matrix figure's input
    return scores


# -- scGPT ------------------------------------------------------------------------------------


def _scgpt_setup(ctx: Context) -> dict[str, Any]:
    import torch

    from baselines._scgpt_common import load_model
    from baselines._scgpt_common import vocabulary_genes as restrict

    torch.set_num_threads(ctx.threads)
    adata = _read_h5ad(ctx.path("integration_input.h5ad"))
    model, vocab = load_model(CHECKPOINT, pretrained=True, seed=0)
    data = restrict(adata, vocab, what="scaling", checkpoint=str(CHECKPOINT))
    expressed = np.asarray((data.X > 0).sum(axis=1)).ravel()
    ctx.info["genes_in_vocabulary"] = int(data.n_vars)
    ctx.info["mean_expressed_vocabulary_genes_per_cell"] = round(float(expressed.mean()), 1)
    return {"adata": adata, "data": data, "model": model, "vocab": vocab}


def _scgpt_embed_warmup(inputs: dict[str, Any], ctx: Context) -> None:
    from scgpt import embed_cells

    small = inputs["data"][: min(128, inputs["data"].n_obs)].copy()
    embed_cells(
        small, inputs["model"], vocab=inputs["vocab"], device="cpu", progress=False, obsm_key=None
    )


def _scgpt_embed_run(inputs: dict[str, Any], ctx: Context) -> np.ndarray:
    from scgpt import embed_cells

    return embed_cells(
        inputs["data"],
        inputs["model"],
        vocab=inputs["vocab"],
        device="cpu",
        progress=False,
        obsm_key=None,
        seed=0,
        **SCGPT_EMBED,
    )


def _scgpt_finetune_run(inputs: dict[str, Any], ctx: Context) -> np.ndarray:
    """The registered ``scgpt`` integration method for one epoch; the epoch itself (training
    and validation, ``run_epochs``) is timed apart from the final embedding of every cell."""
    import scgpt.finetune.integration as integration_module
    from baselines.scgpt_integration import scgpt_integration

    original = integration_module.run_epochs

    def timed_run_epochs(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            ctx.info["epoch_seconds"] = round(time.perf_counter() - start, 3)

    integration_module.run_epochs = timed_run_epochs
    try:
        return scgpt_integration(
            inputs["adata"], seed=0, checkpoint=str(CHECKPOINT), device="cpu", **SCGPT_FINETUNE
        )
    finally:
        integration_module.run_epochs = original


def _epoch_batches(inputs: dict[str, Any]) -> Any:
    """One epoch's batches as ``finetune_integration`` builds them (its dataset, per-batch
    length-bucket sampler and collator) at the integration tutorial's tokens."""
    from scgpt.data import CellDataset, Collator, LengthBucketSampler
    from scgpt.embed import batch_codes
    from scgpt.finetune._common import expression_inputs

    data, vocab, cfg = inputs["data"], inputs["vocab"], inputs["model"].config
    X, gene_ids = expression_inputs(data, vocab, gene_col=None, layer=None)
    codes = batch_codes(data, "batch")
    ds = CellDataset(
        X,
        gene_ids,
        max_len=EPOCH_BATCHES["max_len"],
        cls_id=vocab.cls_id,
        cls_value=cfg.pad_value,
        n_bins=cfg.n_bins,
        include_zero_genes=EPOCH_BATCHES["include_zero_genes"],
        obs={"batch_labels": codes},
        seed=0,
    )
    sampler = LengthBucketSampler(
        ds.lengths(), EPOCH_BATCHES["batch_size"], shuffle=True, seed=0, groups=codes
    )
    collate = Collator(vocab.pad_id, cfg.pad_value)
    return (collate([ds[i] for i in idx]) for idx in sampler)


def _batches_held_run(inputs: dict[str, Any], ctx: Context) -> int:
    """Before the fix: ``run_epochs`` built ``list(batches(epoch))`` before the first step."""
    held = list(_epoch_batches(inputs))
    ctx.info["tokens_per_cell"] = int(held[0]["gene_ids"].shape[1])
    return sum(b["gene_ids"].numel() for b in held)


def _batches_streamed_run(inputs: dict[str, Any], ctx: Context) -> int:
    """Since the fix: each batch is built when the loop reaches it and then dropped."""
    tokens = 0
    for batch in _epoch_batches(inputs):
        tokens += batch["gene_ids"].numel()
    return tokens


# -- integration metrics ---------------------------------------------------------------------


def _embedding_setup(ctx: Context) -> dict[str, Any]:
    cell_type, batch = _truth(ctx)
    return {"embedding": np.load(ctx.path("pca.npy")), "cell_type": cell_type, "batch": batch}


def _neighbors_warmup(inputs: dict[str, Any], ctx: Context) -> None:
    from benchmark.metrics.integration import EXACT_NEIGHBORS_MAX_CELLS, compute_neighbors

    if inputs["embedding"].shape[0] > EXACT_NEIGHBORS_MAX_CELLS:  # pynndescent: numba compile
        compute_neighbors(inputs["embedding"][:2000], 90, method="pynndescent")


def _neighbors_run(inputs: dict[str, Any], ctx: Context) -> Any:
    from benchmark.metrics.integration import (
        KBET_NEIGHBORS,
        LISI_NEIGHBORS,
        N_NEIGHBORS,
        compute_neighbors,
        knn_connectivities,
    )

    neighbors = compute_neighbors(
        inputs["embedding"], max(N_NEIGHBORS, LISI_NEIGHBORS, KBET_NEIGHBORS), seed=0
    )
    knn_connectivities(neighbors.subset_neighbors(N_NEIGHBORS))
    return neighbors


def _neighbors_save(inputs: Any, output: Any, ctx: Context) -> None:
    np.savez(ctx.path("neighbors.npz"), indices=output.indices, distances=output.distances)


def _graph_setup(ctx: Context) -> dict[str, Any]:
    from benchmark.metrics.integration import N_NEIGHBORS, knn_connectivities

    inputs = _embedding_setup(ctx)
    inputs["graph"] = _neighbors(ctx, N_NEIGHBORS)
    inputs["connectivities"] = knn_connectivities(inputs["graph"])
    return inputs


def _louvain_warmup(inputs: dict[str, Any], ctx: Context) -> None:
    """Import louvain / igraph and run scanpy's Louvain path once on 300 cells."""
    from benchmark.metrics.integration import cluster_nmi_ari

    keep = np.arange(min(300, inputs["connectivities"].shape[0]))
    sub = inputs["connectivities"][keep][:, keep]
    cluster_nmi_ari(sub, inputs["cell_type"][keep], clustering="louvain", resolutions=[1.0])


def _louvain_run(inputs: dict[str, Any], ctx: Context) -> Any:
    from benchmark.metrics.integration import cluster_nmi_ari

    return cluster_nmi_ari(inputs["connectivities"], inputs["cell_type"], clustering="louvain")


def _asw_cell_run(inputs: dict[str, Any], ctx: Context) -> np.ndarray:
    """As ``integration_scores``: the cell-type silhouette, then its rescaled mean."""
    from benchmark.metrics.integration import _asw_from_silhouette, _cell_type_silhouette

    silhouette = _cell_type_silhouette(inputs["embedding"], inputs["cell_type"])
    _asw_from_silhouette(silhouette)
    return silhouette


def _asw_batch_run(inputs: dict[str, Any], ctx: Context) -> float:
    import scib_metrics

    return float(
        scib_metrics.silhouette_batch(inputs["embedding"], inputs["cell_type"], inputs["batch"])
    )


def _graph_conn_run(inputs: dict[str, Any], ctx: Context) -> tuple[float, float]:
    import scib_metrics

    from benchmark.metrics.integration import graph_connectivity

    return (
        graph_connectivity(inputs["connectivities"], inputs["cell_type"]),
        float(scib_metrics.graph_connectivity(inputs["graph"], inputs["cell_type"])),
    )


def _lisi_setup(ctx: Context) -> dict[str, Any]:
    from benchmark.metrics.integration import LISI_NEIGHBORS

    cell_type, batch = _truth(ctx)
    return {"graph": _neighbors(ctx, LISI_NEIGHBORS), "cell_type": cell_type, "batch": batch}


def _lisi_run(inputs: dict[str, Any], ctx: Context) -> tuple[float, float]:
    import scib_metrics

    return (
        float(scib_metrics.ilisi_knn(inputs["graph"], inputs["batch"], scale=True)),
        float(scib_metrics.clisi_knn(inputs["graph"], inputs["cell_type"], scale=True)),
    )


def _kbet_setup(ctx: Context) -> dict[str, Any]:
    from benchmark.metrics.integration import KBET_NEIGHBORS

    cell_type, batch = _truth(ctx)
    return {"graph": _neighbors(ctx, KBET_NEIGHBORS), "cell_type": cell_type, "batch": batch}


def _kbet_warmup(inputs: dict[str, Any], ctx: Context) -> None:
    """Compile pynndescent's numba kernels (diffusion neighbours) on 2 labels of 150 cells."""
    import scib_metrics

    from benchmark.metrics.integration import compute_neighbors

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (150, 10)), rng.normal(4, 1, (150, 10))])
    labels = np.repeat(["a", "b"], 150)
    batches = np.tile(["x", "y"], 150)
    graph = compute_neighbors(x.astype(np.float32), 50, method="exact")
    scib_metrics.kbet_per_label(graph, batches, labels)


def _kbet_run(inputs: dict[str, Any], ctx: Context) -> float:
    import warnings

    import scib_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(
            scib_metrics.kbet_per_label(inputs["graph"], inputs["batch"], inputs["cell_type"])
        )


def _isolated_setup(ctx: Context) -> dict[str, Any]:
    """The cell-type silhouette the ASW stage wrote (integration_scores shares it)."""
    inputs = _embedding_setup(ctx)
    inputs["silhouette"] = np.load(ctx.path("silhouette.npy"))
    return inputs


def _isolated_run(inputs: dict[str, Any], ctx: Context) -> float:
    from benchmark.metrics.integration import _isolated_labels_from_silhouette

    return _isolated_labels_from_silhouette(
        inputs["silhouette"], inputs["cell_type"], inputs["batch"]
    )


def _isolated_library_run(inputs: dict[str, Any], ctx: Context) -> float:
    import scib_metrics

    return float(
        scib_metrics.isolated_labels(inputs["embedding"], inputs["cell_type"], inputs["batch"])
    )


def _pcr_setup(ctx: Context) -> dict[str, Any]:
    inputs = _embedding_setup(ctx)
    inputs["integrated"] = np.load(ctx.path("harmony.npy"))
    return inputs


def _pcr_run(inputs: dict[str, Any], ctx: Context) -> float:
    import warnings

    import scib_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            scib_metrics.pcr_comparison(
                inputs["embedding"], inputs["integrated"], inputs["batch"], categorical=True
            )
        )


def _scores_all_run(inputs: dict[str, Any], ctx: Context) -> dict[str, float]:
    from benchmark.metrics.integration import integration_scores

    return integration_scores(
        inputs["integrated"],
        inputs["cell_type"],
        inputs["batch"],
        seed=0,
        x_pre=inputs["embedding"],
    )


# -- table builder ----------------------------------------------------------------------------


def table_runs(n_cells: int) -> int:
    """Runs the table-builder stage aggregates at a point of the size axis."""
    return TABLE_RUNS_PER_1K * max(1, round(n_cells / 1000))


def _tables_setup(ctx: Context) -> list[Path]:
    from benchmark.io import write_json
    from benchmark.metrics.integration import EXTRA_METRICS, HEADLINE_METRICS

    rng = np.random.default_rng(0)
    n_datasets = table_runs(ctx.n_cells) // (len(TABLE_METHODS) * 5)
    root = ctx.path("table_runs")
    files = []
    for d in range(n_datasets):
        dataset = ("covid19", "pbmc10k", "perirhinal")[d] if d < 3 else f"dataset{d:04d}"
        for method in TABLE_METHODS:
            for seed in range(5):
                folder = root / dataset / method / f"seed{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                run = {
                    "task": "integration",
                    "dataset": dataset,
                    "method": method,
                    "label": method,
                    "seed": seed,
                    "status": "ok",
                    "wall_seconds": float(rng.uniform(10, 1000)),
                    "peak_memory_mb": float(rng.uniform(500, 5000)),
                }
                scores = {m: float(rng.uniform()) for m in (*HEADLINE_METRICS, *EXTRA_METRICS)}
                scores["clustering"] = "louvain"
                write_json(run, folder / "run.json")
                write_json(scores, folder / "scores.json")
                files.append(folder / "run.json")
    ctx.info["runs"] = len(files)
    return files


def _tables_run(files: list[Path], ctx: Context) -> Any:
    from benchmark.metrics.integration import HEADLINE_METRICS
    from benchmark.tables import write_task_table

    return write_task_table(
        files,
        HEADLINE_METRICS,
        ctx.path("table.csv"),
        ctx.path("table.md"),
        title="integration",
        paper_table="integration.csv",
    )


SIMULATE = Stage(
    "simulate",
    "simulate (set-up, not a workflow stage)",
    "setup",
    lambda ctx: None,
    _simulate_run,
    save=_simulate_save,
    imports=SCANPY,
    required=True,
    note="16 calls of simulate_celltypes (one per batch), each dense",
)

STAGES: tuple[Stage, ...] = (
    Stage(
        "standardise",
        "standardise: raw h5ad -> standard h5ad",
        "data",
        _standardise_setup,
        _standardise_run,
        imports=(*SCANPY, "benchmark.datasets"),
        required=True,
        note="prepare_standard_dataset of a downloaded-style h5ad entry: read, counts check, "
        "obs mapping, split, gene harmonisation, vocabulary coverage, validation, write",
    ),
    Stage(
        "integration_prepare",
        "integration task: HVGs + log1p",
        "data",
        _standard_setup,
        _integration_prepare_run,
        save=_integration_prepare_save,
        warmup=_integration_prepare_warmup,
        imports=(*SCANPY, "benchmark.tasks.integration"),
        required=True,
        note="1,200 seurat_v3 HVGs per batch, normalise + log1p, method input",
    ),
    Stage(
        "annotation_prepare",
        "annotation task: reference/query split",
        "data",
        _standard_setup,
        _annotation_prepare_run,
        save=_annotation_prepare_save,
        imports=(*SCANPY, "benchmark.tasks.annotation"),
        required=True,
    ),
    Stage(
        "pca",
        "PCA (unintegrated)",
        "baseline",
        _method_input_setup,
        _pca_run,
        save=_save_npy("pca.npy"),
        imports=(*SCANPY, "baselines.pca"),
        required=True,
        parallel=True,
        note="50 PCs, ARPACK, of the log1p HVGs",
    ),
    Stage(
        "harmony",
        "Harmony",
        "baseline",
        _method_input_setup,
        _harmony_run,
        save=_save_npy("harmony.npy"),
        imports=(*SCANPY, "harmonypy", "baselines.harmony"),
        required=True,
        parallel=True,
        note="PCA + harmonypy (10 iterations max)",
    ),
    Stage(
        "logreg",
        "logistic regression (L1)",
        "baseline",
        _annotation_inputs_setup,
        _logreg_run,
        imports=(*SCANPY, "sklearn.linear_model", "baselines.logreg"),
        note="2,000 reference HVGs (dense), saga, multinomial, max_iter 1,000; one core",
    ),
    Stage(
        "pca_knn",
        "PCA + kNN",
        "baseline",
        _annotation_inputs_setup,
        _pca_knn_run,
        imports=(*SCANPY, "faiss", "sklearn.decomposition", "baselines.knn_transfer"),
        parallel=True,
        note="2,000 reference HVGs (dense), full-SVD PCA, faiss exact cosine kNN k=10, vote",
    ),
    Stage(
        "annotation_metrics",
        "annotation metrics",
        "metric",
        _annotation_metrics_setup,
        _annotation_metrics_run,
        imports=("sklearn.metrics", "benchmark.tasks.annotation", "benchmark.metrics.annotation"),
        note="accuracy, macro P/R/F1, per-class F1, confusion matrix of the query (25% of the "
        "cells)",
    ),
    Stage(
        "scgpt_embed",
        "scGPT embedding (embed_cells)",
        "scgpt",
        _scgpt_setup,
        _scgpt_embed_run,
        warmup=_scgpt_embed_warmup,
        imports=(*SCANPY, *TORCH),
        parallel=True,
        note="demo checkpoint 2 x 128, the cell's expressed vocabulary HVGs (max_len 1,200)",
    ),
    Stage(
        "scgpt_finetune_epoch",
        "scGPT integration fine-tuning, 1 epoch",
        "scgpt",
        lambda ctx: {"adata": _read_h5ad(ctx.path("integration_input.h5ad"))},
        _scgpt_finetune_run,
        imports=(*SCANPY, *TORCH, "baselines.scgpt_integration"),
        parallel=True,
        note="demo checkpoint and settings (max_len 128, expressed genes, batch 64), "
        "GEP+GEPC+ECS+DAB+DSBN; seconds = training + validation of the epoch (the whole call, "
        "with the final embedding of every cell: total_s)",
    ),
    Stage(
        "scgpt_epoch_batches_held",
        "one epoch's batches held in memory (before the fix)",
        "scgpt",
        _scgpt_setup,
        _batches_held_run,
        imports=(*SCANPY, *TORCH),
        note="finetune_integration's tokens at the tutorial's settings (every HVG in the "
        "vocabulary a token, zeros included); what run_epochs did before the fix",
    ),
    Stage(
        "scgpt_epoch_batches_streamed",
        "one epoch's batches streamed (since the fix)",
        "scgpt",
        _scgpt_setup,
        _batches_streamed_run,
        imports=(*SCANPY, *TORCH),
        note="the same batches, each built when the loop reaches it (run_epochs now)",
    ),
    Stage(
        "neighbors",
        "kNN graph (k=90 search + 15-NN connectivities)",
        "metric",
        _embedding_setup,
        _neighbors_run,
        save=_neighbors_save,
        warmup=_neighbors_warmup,
        imports=METRICS,
        required=True,
        parallel=True,
        note="exact (brute force) up to 50,000 cells, pynndescent above (numba compile in the "
        "warm-up)",
    ),
    Stage(
        "nmi_ari",
        "NMI/ARI: Louvain sweep (20 resolutions)",
        "metric",
        _graph_setup,
        _louvain_run,
        warmup=_louvain_warmup,
        imports=(*METRICS, "scanpy"),
        note="one core",
    ),
    Stage(
        "asw_cell",
        "ASW cell type (cell-type silhouette)",
        "metric",
        _embedding_setup,
        _asw_cell_run,
        save=_save_npy("silhouette.npy"),
        imports=METRICS,
        parallel=True,
        exponent=2.0,
        note="every pairwise distance (scib-metrics, JAX, 256-row chunks)",
    ),
    Stage(
        "asw_batch",
        "ASW batch (per cell type)",
        "metric",
        _embedding_setup,
        _asw_batch_run,
        imports=METRICS,
        parallel=True,
        exponent=2.0,
        note="one silhouette per cell type, each compiled anew by JAX (30 shapes): compile-dominated at the measured sizes, so the extrapolation stays flat and the per-type quadratic part is unmeasured",
    ),
    Stage(
        "graph_conn",
        "graph connectivity (scib + scib-metrics)",
        "metric",
        _graph_setup,
        _graph_conn_run,
        imports=METRICS,
    ),
    Stage(
        "lisi",
        "iLISI + cLISI",
        "metric",
        _lisi_setup,
        _lisi_run,
        imports=METRICS,
        parallel=True,
    ),
    Stage(
        "kbet",
        "kBET per label",
        "metric",
        _kbet_setup,
        _kbet_run,
        warmup=_kbet_warmup,
        imports=METRICS,
        note="off in the workflow (IntegrationTask(kbet=False)); per cell type a diffusion map, "
        "pynndescent and one JAX compilation",
    ),
    Stage(
        "isolated_labels",
        "isolated labels (ASW)",
        "metric",
        _isolated_setup,
        _isolated_run,
        imports=METRICS,
        needs=("silhouette.npy",),
        note="from the cell-type silhouette integration_scores computes once for ASW cell type "
        "(since this script; before, a second full silhouette: see the next row)",
    ),
    Stage(
        "isolated_labels_library",
        "isolated labels, scib-metrics' own call (before the fix)",
        "metric",
        _embedding_setup,
        _isolated_library_run,
        imports=METRICS,
        parallel=True,
        exponent=2.0,
        note="scib_metrics.isolated_labels recomputes the full cell-type silhouette",
    ),
    Stage(
        "pcr_comparison",
        "PCR comparison",
        "metric",
        _pcr_setup,
        _pcr_run,
        imports=METRICS,
        parallel=True,
        note="PCA embedding vs Harmony's",
    ),
    Stage(
        "integration_scores",
        "integration_scores: all of the above as the task calls it",
        "metric",
        _pcr_setup,
        _scores_all_run,
        imports=(*METRICS, "scanpy"),
        optional=True,
        parallel=True,
        exponent=2.0,
        note="Harmony's embedding, kBET off (the task's default), its own neighbour search",
    ),
    Stage(
        "tables",
        "table builder (write_task_table)",
        "report",
        _tables_setup,
        _tables_run,
        imports=("benchmark.tables", "benchmark.io"),
        note=f"size axis = runs, not cells: {TABLE_RUNS_PER_1K} runs per 1,000 "
        "(105 = the paper's integration runs: 3 datasets x 7 methods x 5 seeds)",
    ),
)
STAGE_BY_NAME = {stage.name: stage for stage in (SIMULATE, *STAGES)}


# ---------------------------------------------------------------------------------------------
# Child process: one stage at one size
# ---------------------------------------------------------------------------------------------


def child_main(stage_name: str, n_cells: int, folder: Path, threads: int, out: Path) -> int:
    """Run one stage in this process and write its measurement to ``out`` (JSON)."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", FutureWarning)
    stage = STAGE_BY_NAME[stage_name]
    rss_start = _status_mib("VmRSS")
    for module in stage.imports:
        importlib.import_module(module)
    ctx = Context(folder=folder, n_cells=n_cells, threads=threads)
    start = time.perf_counter()
    inputs = stage.setup(ctx)
    setup_s = time.perf_counter() - start
    warmup_s = None
    if stage.warmup is not None:
        start = time.perf_counter()
        stage.warmup(inputs, ctx)
        warmup_s = time.perf_counter() - start
    gc.collect()
    rss_before = _status_mib("VmRSS")
    reset = _reset_peak()
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    output = stage.run(inputs, ctx)
    seconds = time.perf_counter() - start
    cpu_s = _cpu_seconds() - cpu_start
    peak = _status_mib("VmHWM")
    if stage.save is not None:
        stage.save(inputs, output, ctx)
    result: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_s, 3),
        "peak_mib": round(peak, 1),
        "rss_before_mib": round(rss_before, 1),
        "delta_mib": round(peak - rss_before, 1),
        "peak_is_stage_only": reset,
        "rss_start_mib": round(rss_start, 1),
        "setup_s": round(setup_s, 3),
        "warmup_s": None if warmup_s is None else round(warmup_s, 3),
        "info": ctx.info,
    }
    if "epoch_seconds" in ctx.info:  # fine-tuning: the epoch, with the whole call beside it
        result["total_s"] = result["seconds"]
        result["seconds"] = ctx.info["epoch_seconds"]
    out.write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: sizes, skipping, fits, extrapolation
# ---------------------------------------------------------------------------------------------


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x); ``None`` below two points."""
    usable = [(x, y) for x, y in points if x > 0 and y is not None and y > 0]
    if len(usable) < 2:
        return None
    xs = np.log([x for x, _ in usable])
    ys = np.log([y for _, y in usable])
    return float(np.polyfit(xs, ys, 1)[0])


def top2_slope(points: list[tuple[float, float]]) -> float | None:
    """Slope between the two largest sizes of ``points``."""
    usable = sorted((x, y) for x, y in points if y is not None and y > 0)
    return slope(usable[-2:]) if len(usable) >= 2 else None


def extend(
    points: list[tuple[float, float]], n: float, exponent: float | None = None
) -> float | None:
    """The value at ``n`` (above the measured sizes) from the two largest of ``points``.

    With ``exponent`` p: ``fixed + a * n**p`` through the two points, when both ``a`` and
    ``fixed`` come out non-negative; otherwise (and without ``exponent``) the two points'
    log-log slope, at least 0. ``None`` below two points.
    """
    usable = sorted((x, y) for x, y in points if y is not None and y > 0)
    if len(usable) < 2:
        return None
    (x1, y1), (x2, y2) = usable[-2:]
    if exponent is not None:
        a = (y2 - y1) / (x2**exponent - x1**exponent)
        fixed = y2 - a * x2**exponent
        if a > 0 and fixed >= 0:
            return fixed + a * n**exponent
    return y2 * (n / x2) ** max(slope([(x1, y1), (x2, y2)]), 0.0)


def _child_entry(stage_name: str, n_cells: int, folder: str, threads: int, out: str) -> None:
    """A forked child: its output goes to the stage's log; a failure exits with code 1."""
    import traceback

    log = os.open(Path(folder) / f"log_{stage_name}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        child_main(stage_name, n_cells, Path(folder), threads, Path(out))
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()


def start_forkserver(stages: list[Stage], threads: int) -> Any:
    """A forkserver that has imported every stage's libraries: each stage then runs in a fresh
    child forked from it (its own memory and peak-RSS counter) without paying ~5 s of imports
    (JAX, torch, scanpy) each. Thread counts are set before anything starts a thread pool."""
    import multiprocessing

    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    # No persistent JAX cache: every size compiles its own shapes, as a first job would.
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    os.environ.setdefault("TQDM_DISABLE", "1")
    context = multiprocessing.get_context("forkserver")
    modules = sorted({module for stage in (SIMULATE, *stages) for module in stage.imports})
    context.set_forkserver_preload(modules)
    return context


def run_child(
    context: Any, stage: Stage, n_cells: int, folder: Path, threads: int, timeout: int
) -> dict[str, Any]:
    """Run one stage at one size in a child process; the measurement or the failure."""
    out = folder / f"result_{stage.name}.json"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    process = context.Process(
        target=_child_entry, args=(stage.name, n_cells, str(folder), threads, str(out))
    )
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        return {"status": "timeout", "error": f"killed after {timeout} s"}
    wall = time.perf_counter() - start
    if process.exitcode != 0 or not out.is_file():
        tail = (folder / f"log_{stage.name}.txt").read_text()[-1500:]
        return {"status": "failed", "error": f"exit {process.exitcode}: {tail}"}
    result = json.loads(out.read_text())
    result["status"] = "measured"
    result["child_wall_s"] = round(wall, 2)
    return result


def _skip_reason(
    stage: Stage, history: list[dict[str, Any]], folder: Path, n: int, cap: float
) -> str | None:
    missing = [name for name in stage.needs if not (folder / name).is_file()]
    if missing:
        return f"input {', '.join(missing)} not written at this size (its stage was skipped)"
    if stage.required:
        return None
    if any(p["status"] in ("failed", "timeout") for p in history):
        return "a smaller size failed or timed out"
    points = [(p["n_cells"], p["seconds"]) for p in history if p["status"] == "measured"]
    expected = extend(points, n, stage.exponent)
    if expected is not None and expected > cap:
        return f"predicted {expected:.0f} s > cap {cap:.0f} s"
    return None


def measure(
    stages: list[Stage],
    sizes: list[int],
    workdir: Path,
    threads: int,
    cap: float,
    timeout: int,
) -> dict[str, list[dict[str, Any]]]:
    """Every stage at every size (smallest first), skipping predicted-too-slow sizes."""
    context = start_forkserver(stages, threads)
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in [SIMULATE, *stages]}
    for n in sizes:
        folder = workdir / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for stage in [SIMULATE, *stages]:
            history = results[stage.name]
            why = _skip_reason(stage, history, folder, n, cap)
            if why is not None:
                history.append({"n_cells": n, "status": "skipped", "reason": why})
                print(f"[{n:>7}] {stage.name:28s} skipped ({why})", flush=True)
                continue
            result = run_child(context, stage, n, folder, threads, timeout)
            result["n_cells"] = n
            history.append(result)
            if result["status"] == "measured":
                print(
                    f"[{n:>7}] {stage.name:28s} {result['seconds']:9.2f} s "
                    f"(cpu {result['cpu_s']:8.2f} s)  peak {result['peak_mib']:7.0f} MiB  "
                    f"(delta {result['delta_mib']:.0f})",
                    flush=True,
                )
                continue
            print(f"[{n:>7}] {stage.name:28s} {result['status']}: {result['error'][-300:]}")
            if stage.required:
                raise RuntimeError(
                    f"required stage {stage.name} {result['status']} at {n} cells; log in "
                    f"{folder / ('log_' + stage.name + '.txt')}"
                )
    return results


def summarise(stage: Stage, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Fits of one stage, with every size it did not measure extrapolated where possible."""
    measured = [p for p in history if p["status"] == "measured"]
    t_points = [(p["n_cells"], p["seconds"]) for p in measured]
    c_points = [(p["n_cells"], p["cpu_s"]) for p in measured]
    d_points = [(p["n_cells"], max(p["delta_mib"], 1.0)) for p in measured]
    b_points = [(p["n_cells"], p["rss_before_mib"]) for p in measured]
    exp_t, exp_t2 = slope(t_points), top2_slope(t_points)
    largest_delta = max((p["delta_mib"] for p in measured), default=0.0)
    points = []
    for p in history:
        seconds = extend(t_points, p["n_cells"], stage.exponent)
        if p["status"] == "measured" or seconds is None or p["n_cells"] < t_points[0][0]:
            points.append(p)
            continue
        n = p["n_cells"]
        delta, before = extend(d_points, n), extend(b_points, n)
        points.append(
            {
                **p,
                "status": "extrapolated",
                "original_status": p["status"],
                "not_run_because": p.get("reason") or p.get("error", "")[-200:],
                "seconds": round(seconds, 1),
                "cpu_s": round(extend(c_points, n, stage.exponent), 1),
                "delta_mib": round(delta, 0),
                "peak_mib": round(delta + before, 0),
                "basis": (
                    f"the two largest measured sizes ({t_points[-2][0]:,}, {t_points[-1][0]:,} "
                    f"cells): fixed + a n^{stage.exponent:g} for time where it fits, else their "
                    f"log-log slope; memory delta slope {top2_slope(d_points):.2f}"
                ),
            }
        )
    return {
        "name": stage.name,
        "label": stage.label,
        "family": stage.family,
        "note": stage.note,
        "parallel": stage.parallel,
        "exponent_model": stage.exponent,
        "exponent_time": None if exp_t is None else round(exp_t, 3),
        "exponent_time_top2": None if exp_t2 is None else round(exp_t2, 3),
        "exponent_cpu": None if slope(c_points) is None else round(slope(c_points), 3),
        "exponent_memory_delta": (
            round(slope(d_points), 3) if largest_delta >= 50 and len(d_points) >= 2 else None
        ),
        "points": points,
    }


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def _fmt_seconds(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(point: dict[str, Any] | None) -> str:
    if point is None:
        return ""
    status = point["status"]
    if status == "measured":
        return f"{_fmt_seconds(point['seconds'])} s / {point['peak_mib']:,.0f} MiB"
    if status == "extrapolated":
        return (
            f"*≈{_fmt_seconds(point['seconds'])} s / ≈{point['peak_mib']:,.0f} MiB (extrapolated)*"
        )
    return status


def _exp(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


#: What dominates each stage that grows faster than linear (from reading its code).
DIAGNOSES: dict[str, str] = {
    "asw_cell": "Every pairwise distance, by the metric's definition (scib-metrics: JAX, "
    "256-row chunks, O(n^2 d) time, O(n) memory); exact, so not reducible without changing "
    "the paper's score. Since this script, integration_scores computes it once for ASW cell "
    "type and isolated labels (before: twice).",
    "isolated_labels_library": "scib-metrics' isolated_labels recomputes the full cell-type "
    "silhouette: the duplicate integration_scores no longer runs.",
    "integration_scores": "Its two silhouettes (ASW cell type, ASW batch) and the exact "
    "neighbour search.",
    "asw_batch": "One silhouette per cell type (sum of n_t^2: quadratic in n at a fixed "
    "number of types), plus one JAX compilation per cell-type subset shape, which dominates "
    "below ~30k cells.",
    "neighbors": "Brute-force exact search up to 50,000 cells (O(n^2 d) BLAS; by design: "
    "exact equals scanpy's below 8,192 cells and avoids pynndescent's compilation), "
    "pynndescent above (~n log n).",
    "kbet": "Per cell type a diffusion map (ARPACK, 100 components) and a pynndescent search "
    "of the type's subgraph, and one JAX compilation per type.",
    "nmi_ari": "20 Louvain runs on the 15-NN graph, single-threaded. Profiled: the louvain "
    "package's own optimiser (C++) is ~90% of it and grows ~n^1.8 here (0.5 s per resolution "
    "at 10k cells, 3.7 s at 30k, the same 30 clusters); scanpy's igraph conversion, done "
    "again for every resolution, is ~7%. Only another algorithm (Leiden: scib 1.1.7's "
    "option) would be faster, and it changes the scores.",
    "integration_prepare": "Linear passes over the counts (column subsetting, sums, copies; "
    "profiled at 100k cells): the 30k -> 100k slope is memory-bound time, nothing quadratic.",
    "pca_knn": "The reference's dense HVG matrix and its full SVD (O(n d^2)), and the exact "
    "query x reference search (O(n_query n_ref d)).",
    "scgpt_epoch_batches_held": "Holds cells x max_len tokens: the memory run_epochs no "
    "longer needs (fixed).",
}

#: The library changes this script's measurements led to, for the table's footer.
FIXES = (
    "- `benchmark/metrics/integration.py`: ASW cell type and isolated labels share one "
    "cell-type silhouette (`_cell_type_silhouette`); scib-metrics' `isolated_labels` "
    "computed a second full O(n^2 d) silhouette. Same values (equal floats; "
    "`tests/test_integration_metrics.py` checks both against the library's calls). Rows "
    "'isolated labels' (now) and 'isolated labels, scib-metrics' own call' (before).",
    "- `scgpt/finetune/_common.py`: `run_epochs` builds each batch when the loop reaches it "
    "instead of `list(batches(epoch))` before the first step, whose memory grew with "
    "cells x max_len (rows 'one epoch's batches held / streamed'). Same batches in the same "
    "order (their draws never share a generator with the loss): identical histories and "
    "weights for the integration, classifier and perturbation fine-tunings.",
)


def findings(stages: list[dict[str, Any]]) -> list[str]:
    """One line per stage whose time exponent exceeds 1.2, with what dominates it."""
    lines = []
    for stage in stages:
        exponents = [stage["exponent_time"], stage["exponent_time_top2"]]
        high = [e for e in exponents if e is not None and e > 1.2]
        if high and stage["family"] != "setup":
            lines.append(
                f"- {stage['label']}: exponent {_exp(stage['exponent_time'])} (top-2 "
                f"{_exp(stage['exponent_time_top2'])}, CPU time {_exp(stage['exponent_cpu'])}). "
                f"{DIAGNOSES.get(stage['name'], '')}"
            )
    return lines or ["- none above 1.2"]


def _library_mib(report: dict[str, Any]) -> float:
    """Median RSS of a stage's process before it imports or loads anything."""
    values = [
        p["rss_start_mib"]
        for stage in report["stages"]
        for p in stage["points"]
        if p["status"] == "measured" and "rss_start_mib" in p
    ]
    return float(np.median(values)) if values else math.nan


def to_markdown(report: dict[str, Any]) -> str:
    sizes = report["settings"]["sizes"]
    env = report["environment"]
    lines = [
        "# Scaling of the benchmark's stages with the number of cells",
        "",
        f"Written by `{report['command']}`: {env['cpu_count']} CPUs, "
        f"{report['settings']['threads']} threads per stage, load average "
        f"{env['loadavg_before'][0]:.1f} before and {env['loadavg_after'][0]:.1f} after "
        f"(other work on the machine slows every row alike only when the load is steady); "
        f"{report['wall_seconds'] / 60:.1f} min in all.",
        "",
        "Each cell: wall seconds of the stage / peak resident memory of its process "
        f"(inputs and the ~{_library_mib(report):,.0f} MiB of libraries every stage's process "
        "is forked with included; the stage's own allocation is `delta_mib` in the JSON). "
        "*Italic ≈ values are extrapolated*, never measured: "
        "a fixed cost plus a n^p through the two largest measured sizes (p = 2 for the "
        "silhouettes, 1 otherwise; their log-log slope where that does not fit), because the "
        "stage was predicted to take more than "
        f"{report['settings']['cap_seconds']:.0f} s there (or failed). Exponent = "
        "least-squares slope of log(seconds) on log(cells) over the measured sizes; top-2: "
        "between the two largest; CPU: the same of CPU seconds (user + system, all threads), "
        "which other work on the machine disturbs less; memory: of the stage's own allocation "
        "(peak minus the RSS before it), shown when that reaches 50 MiB. At small sizes fixed "
        "costs (JAX compilations per shape, process-level set-up) flatten the slopes: the "
        "top-2 exponent is the closer to the asymptote. Data: simulated, 3,000 genes, 30 cell "
        "types, 16 batches, ~700 detected genes per cell (module docstring).",
        "",
        "| stage | "
        + " | ".join(f"{n:,} cells" for n in sizes)
        + " | exponent (top-2) | CPU exponent | memory exponent | note |",
        "|---|" + "---|" * len(sizes) + "---|---|---|---|",
    ]
    for stage in report["stages"]:
        by_n = {p["n_cells"]: p for p in stage["points"]}
        cells = [_cell(by_n.get(n)) for n in sizes]
        note = stage["note"]
        warm = [p["warmup_s"] for p in stage["points"] if (p.get("warmup_s") or 0) >= 0.5]
        if warm:
            note += f" (warm-up up to {max(warm):.1f} s, not in the timing)"
        lines.append(
            f"| {stage['label']} | "
            + " | ".join(cells)
            + f" | {_exp(stage['exponent_time'])} ({_exp(stage['exponent_time_top2'])}) | "
            f"{_exp(stage['exponent_cpu'])} | {_exp(stage['exponent_memory_delta'])} | {note} |"
        )
    lines += ["", "## What grows faster than linear, and why", "", *report["findings"]]
    lines += ["", "## Fixed", "", *FIXES]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in report["stages"] if s["family"] != "setup"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    cmap = plt.get_cmap("tab20")
    markers = "osD^v<>ph*"
    for i, stage in enumerate(stages):
        color, marker = cmap(i % 20), markers[i % len(markers)]
        pts = sorted(
            (p for p in stage["points"] if p["status"] in ("measured", "extrapolated")),
            key=lambda p: p["n_cells"],
        )
        for ax, key in ((axes[0], "seconds"), (axes[1], "peak_mib")):
            xs = [p["n_cells"] for p in pts]
            ys = [p[key] for p in pts]
            measured = [p["status"] == "measured" for p in pts]
            ax.plot(
                [x for x, m in zip(xs, measured) if m],
                [y for y, m in zip(ys, measured) if m],
                "-",
                color=color,
                marker=marker,
                ms=4,
                label=stage["label"][:44],
            )
            for j in range(1, len(pts)):  # extrapolated: dashed, hollow markers
                if not measured[j]:
                    ax.plot(xs[j - 1 : j + 1], ys[j - 1 : j + 1], "--", color=color, lw=1)
                    ax.plot(xs[j], ys[j], marker, mfc="none", color=color, ms=5)
    ref_x = np.array([1e3, 1e5])
    axes[0].plot(ref_x, 0.05 * (ref_x / 1e3), ":", color="grey", lw=1)
    axes[0].plot(ref_x, 0.05 * (ref_x / 1e3) ** 2, ":", color="black", lw=1)
    axes[0].text(1.1e5, 0.05 * 100, "linear", fontsize=7, color="grey")
    axes[0].text(1.1e5, 0.05 * 1e4, "quadratic", fontsize=7)
    for ax, title, unit in (
        (axes[0], "wall time per stage", "seconds"),
        (axes[1], "peak RSS of the stage's process", "MiB"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(unit)
        ax.set_title(title + " (dashed, hollow: extrapolated)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def environment(threads: int) -> dict[str, Any]:
    import importlib.metadata

    versions = {}
    for name in (
        "numpy",
        "scipy",
        "scanpy",
        "anndata",
        "scib-metrics",
        "jax",
        "torch",
        "faiss-cpu",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "versions": versions,
        "loadavg_before": list(os.getloadavg()),
    }


def resummarise(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with its fits and extrapolations redone from its measured points (the
    measurements are kept; what was not measured is extrapolated again)."""
    stages = []
    for stage in report["stages"]:
        history = []
        for p in stage["points"]:
            if p["status"] == "extrapolated":
                p = {
                    "n_cells": p["n_cells"],
                    "status": p.get("original_status", "skipped"),
                    "reason": p["not_run_because"],
                }
            history.append(p)
        stages.append(summarise(STAGE_BY_NAME[stage["name"]], history))
    return {**report, "stages": stages}


def write_outputs(report: dict[str, Any], out: Path, *, plan: bool) -> int:
    """scaling.json, scaling.md, scaling.png and (``plan``) compute_plan.md in ``out``."""
    from benchmark.io import write_json, write_text

    report["findings"] = findings(report["stages"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "scaling.json")
    write_text(to_markdown(report), out / "scaling.md")
    plot(report, out / "scaling.png")
    written = ["scaling.json", "scaling.md", "scaling.png"]
    if plan:
        from compute_plan import compute_plan

        write_text(compute_plan(report), out / "compute_plan.md")
        written.append("compute_plan.md")
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000,30000,100000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cap-seconds",
        type=float,
        default=60.0,
        help="a size predicted to take longer than this is extrapolated instead of run",
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds per child process")
    parser.add_argument(
        "--stages",
        default="all",
        help="comma list of stage names (the required ones always run), or all (optional "
        "stages only when named)",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--keep-workdir", type=Path, default=None)
    parser.add_argument("--no-plan", action="store_true", help="do not write compute_plan.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-write the table, figure and plan from an existing scaling.json (no measuring)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        report = resummarise(json.loads(args.from_json.read_text()))
        return write_outputs(report, args.out_dir, plan=not args.no_plan)

    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.stages == "all":
        stages = [s for s in STAGES if not s.optional]
    else:
        wanted = args.stages.split(",")
        unknown = sorted(set(wanted) - {s.name for s in STAGES})
        if unknown:
            parser.error(f"unknown stages {unknown}; known: {[s.name for s in STAGES]}")
        stages = [s for s in STAGES if s.name in wanted or s.required]
    workdir = args.keep_workdir or Path(tempfile.mkdtemp(prefix="scgpt_scaling_"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = environment(args.threads)
    start = time.perf_counter()
    try:
        results = measure(stages, sizes, workdir, args.threads, args.cap_seconds, args.timeout)
    finally:
        if args.keep_workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - start
    env["loadavg_after"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "command": "benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": env,
        "settings": {
            "sizes": sizes,
            "threads": args.threads,
            "cap_seconds": args.cap_seconds,
            "timeout_s": args.timeout,
            "data": {
                "genes": N_GENES,
                "programs": N_PROGRAMS,
                "cell_types": N_CELL_TYPES,
                "batches": N_BATCHES,
                "query_batches": list(QUERY_BATCHES),
            },
            "scgpt_checkpoint": str(CHECKPOINT.relative_to(ROOT)),
            "scgpt_finetune": SCGPT_FINETUNE,
            "scgpt_embed": SCGPT_EMBED,
            "epoch_batches": EPOCH_BATCHES,
        },
        "wall_seconds": round(wall, 1),
        "stages": [summarise(STAGE_BY_NAME[name], hist) for name, hist in results.items()],
    }
    print(f"measured in {wall / 60:.1f} min")
    return write_outputs(report, args.out_dir, plan=not args.no_plan)


if __name__ == "__main__":
    raise SystemExit(main())
