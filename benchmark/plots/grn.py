"""GRN figures (paper Fig. 5 and 6): program activity heat maps, gene sub-networks, the
pathway Venn of scGPT vs co-expression, and target-ranking scores.

Drawn with the shared helpers of :mod:`benchmark.plots` (matplotlib's object API on the Agg
canvas, no pyplot; PNGs written atomically). Read from the runs' files written by
:class:`benchmark.tasks.grn.GrnTask` (``similarity.npy``, ``genes.csv``, ``clusters.csv``,
``enrichment.csv``, ``targets_<setting>.csv``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.io import read_json, write_csv
from benchmark.plots import new_figure, save_figure

PAPER_VENN = {"shared": 15, "scgpt_only": 22, "coexpression_only": 6}
"""Paper (Fig. 5, Immune Human, resolution 40): Reactome pathways enriched in programs."""
CD_GENES = ("CD3D", "CD3E", "CD3G", "CD79A", "CD79B", "CD8A", "CD8B", "CD14", "CD36")
EDGE_THRESHOLD = 0.4
"""The paper's 'strong' cosine-similarity edges of the sub-network figures."""


def _ok_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not (run_dir / "run.json").is_file():
            continue
        record = read_json(run_dir / "run.json")
        if record.get("status") == "ok":
            out.append((run_dir, record))
    return out


def _program_resolution(clusters: pd.DataFrame, min_size: int) -> str:
    """The paper's resolution (last column) when it yields >= 2 programs, else the sweep's
    resolution with the most programs (a small demo gene set splits into tiny clusters)."""
    counts = {c: int((clusters[c].value_counts() >= min_size).sum()) for c in clusters.columns}
    last = clusters.columns[-1]
    return last if counts[last] >= 2 else max(counts, key=lambda c: (counts[c], c))


def grn_figures(
    run_dirs: Sequence[str | os.PathLike[str]],
    dataset_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    task: Any,
) -> list[Path]:
    """Draw every GRN figure of one dataset from its runs; return the files written."""
    out_dir = Path(out_dir)
    runs = _ok_runs(run_dirs)
    if not runs:
        return []
    written: list[Path] = []
    program_runs = [(d, r) for d, r in runs if (d / "clusters.csv").is_file()]
    target_runs = [(d, r) for d, r in runs if any(d.glob("targets_*.csv"))]
    if program_runs:
        adata = ad.read_h5ad(dataset_path)
        for run_dir, record in program_runs:
            written += _program_figures(run_dir, record, adata, out_dir, task.min_program_size)
        written += _pathway_venn(program_runs, out_dir)
    if target_runs:
        written.append(_target_scores(target_runs, out_dir / "grn_targets.png"))
    return written


def _program_figures(
    run_dir: Path, record: dict[str, Any], adata: ad.AnnData, out_dir: Path, min_size: int
) -> list[Path]:
    import scanpy as sc

    method = record["method"]
    clusters = pd.read_csv(run_dir / "clusters.csv", index_col=0)
    column = _program_resolution(clusters, min_size)
    sizes = clusters[column].value_counts()
    programs = {
        f"G{c}": clusters.index[clusters[column] == c].astype(str).tolist()
        for c in sizes[sizes >= min_size].index
    }
    written = []
    if programs and "cell_type" in adata.obs:
        data = adata.copy()
        sc.pp.normalize_total(data, target_sum=1e4)
        sc.pp.log1p(data)
        activity = {}
        for name, genes in list(programs.items())[:30]:
            genes = [g for g in genes if g in data.var_names]
            sc.tl.score_genes(data, genes, score_name="_program", random_state=0)
            activity[f"{name} ({len(genes)})"] = data.obs.groupby("cell_type", observed=True)[
                "_program"
            ].mean()
        frame = pd.DataFrame(activity).T
        fig = new_figure(1.0 + 0.45 * frame.shape[1], 1.5 + 0.3 * frame.shape[0])
        ax = fig.add_subplot(1, 1, 1)
        z = frame.sub(frame.mean(axis=1), axis=0).div(frame.std(axis=1).replace(0, 1), axis=0)
        image = ax.imshow(z.to_numpy(), cmap="RdBu_r", aspect="auto", vmin=-2, vmax=2)
        ax.set_xticks(range(frame.shape[1]), frame.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(frame.shape[0]), frame.index, fontsize=7)
        ax.set_title(f"{record['label']}: program activity per cell type ({column})", fontsize=9)
        fig.colorbar(image, ax=ax, label="z-scored mean score")
        written.append(save_figure(fig, out_dir / f"grn_program_activity_{method}.png"))
    genes = pd.read_csv(run_dir / "genes.csv")["gene"].astype(str).tolist()
    similarity = np.load(run_dir / "similarity.npy")
    family = [g for g in genes if g.startswith("HLA-")]
    named = [g for g in CD_GENES if g in genes]
    chosen = family if len(family) >= 3 else named if len(named) >= 3 else []
    title = "HLA genes" if chosen is family and chosen else "CD genes"
    if not chosen and programs:
        chosen = max(programs.values(), key=len)[:15]
        title = "largest program"
    if len(chosen) >= 2:
        written.append(
            _subnetwork(
                chosen,
                genes,
                similarity,
                out_dir / f"grn_subnetwork_{method}.png",
                title=f"{record['label']}: {title} (similarity > {EDGE_THRESHOLD})",
            )
        )
    return written


def _subnetwork(
    chosen: Sequence[str], genes: list[str], similarity: np.ndarray, path: Path, *, title: str
) -> Path:
    """Genes on a circle, an edge where their similarity exceeds :data:`EDGE_THRESHOLD`."""
    pos = {g: i for i, g in enumerate(genes)}
    angle = np.linspace(0, 2 * np.pi, len(chosen), endpoint=False)
    xy = np.c_[np.cos(angle), np.sin(angle)]
    fig = new_figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    for i, a in enumerate(chosen):
        for j in range(i + 1, len(chosen)):
            value = similarity[pos[a], pos[chosen[j]]]
            if value > EDGE_THRESHOLD:
                ax.plot(*xy[[i, j]].T, color="#1f77b4", lw=0.5 + 3 * (value - EDGE_THRESHOLD))
    ax.scatter(xy[:, 0], xy[:, 1], s=60, color="#d62728", zorder=3)
    for (x, y), gene in zip(xy, chosen):
        ax.annotate(gene, (x * 1.12, y * 1.12), ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _pathway_venn(runs: list[tuple[Path, dict[str, Any]]], out_dir: Path) -> list[Path]:
    """scGPT vs co-expression enriched pathways at the paper's resolution, beside 15/22/6."""
    enriched: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for run_dir, record in runs:
        path = run_dir / "enrichment.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        hits = table[table["enriched"].astype(bool)]
        per_res = {str(r): set(g["gene_set"]) for r, g in hits.groupby("resolution")}
        enriched[record["method"]] = (record["label"], per_res)
    if "coexpression" not in enriched:
        return []
    rows = []
    label_b, sets_b = enriched["coexpression"]
    for method, (label_a, sets_a) in enriched.items():
        if method == "coexpression":
            continue
        # The resolution where the two methods together find the most pathways (the paper
        # compares at 40 with 1,200 genes; smaller gene sets peak at lower resolutions).
        resolutions = sorted(set(sets_a) | set(sets_b), key=lambda r: float(r[1:]))
        if not resolutions:
            continue
        res = max(
            resolutions,
            key=lambda r: (len(sets_a.get(r, set()) | sets_b.get(r, set())), float(r[1:])),
        )
        set_a, set_b = sets_a.get(res, set()), sets_b.get(res, set())
        rows.append(
            {
                "method": label_a,
                "resolution": float(res[1:]),
                "shared": len(set_a & set_b),
                "method_only": len(set_a - set_b),
                "coexpression_only": len(set_b - set_a),
                "paper_shared": PAPER_VENN["shared"],
                "paper_method_only": PAPER_VENN["scgpt_only"],
                "paper_coexpression_only": PAPER_VENN["coexpression_only"],
            }
        )
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    csv = out_dir / "grn_pathway_overlap.csv"
    write_csv(frame, csv, index=False)
    fig = new_figure(4.2 * len(rows), 3.4)
    for k, row in enumerate(rows):
        ax = fig.add_subplot(1, len(rows), k + 1)
        from matplotlib.patches import Circle

        ax.add_patch(Circle((-0.45, 0), 1, alpha=0.35, color="#d62728"))
        ax.add_patch(Circle((0.45, 0), 1, alpha=0.35, color="#1f77b4"))
        ax.text(-0.95, 0, str(row["method_only"]), ha="center", va="center")
        ax.text(0, 0, str(row["shared"]), ha="center", va="center")
        ax.text(0.95, 0, str(row["coexpression_only"]), ha="center", va="center")
        ax.text(-0.45, 1.15, row["method"], ha="center", fontsize=8)
        ax.text(0.45, -1.3, label_b, ha="center", fontsize=8)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.5, 1.4)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(
            f"enriched pathways at resolution {row['resolution']:g}\n(paper, res. 40: "
            f"{PAPER_VENN['scgpt_only']} / {PAPER_VENN['shared']} / "
            f"{PAPER_VENN['coexpression_only']})",
            fontsize=8,
        )
    return [csv, save_figure(fig, out_dir / "grn_pathway_venn.png")]


def _target_scores(runs: list[tuple[Path, dict[str, Any]]], path: Path) -> Path:
    """Precision at 20 and AUPRC per method and setting (bars)."""
    rows = []
    for run_dir, record in runs:
        scores = read_json(run_dir / "scores.json")
        for target_file in sorted(run_dir.glob("targets_*.csv")):
            setting = target_file.stem.removeprefix("targets_")
            p20 = scores.get(f"precision_at_20_{setting}")
            ap = scores.get(f"auprc_{setting}")
            if p20 is not None:
                rows.append((f"{record['label']} [{setting}]", p20, ap))
    fig = new_figure(7, 0.9 + 0.3 * max(len(rows), 1))
    for k, (metric, index) in enumerate((("precision at 20", 1), ("AUPRC", 2))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.barh(range(len(rows)), [r[index] or 0.0 for r in rows], color="#1f77b4")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows] if k == 0 else [], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
    fig.suptitle("True targets of the perturbed regulators", fontsize=9)
    return save_figure(fig, path)
