"""GRN task: attention rank normalisation and settings, enrichment, program scores, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import hypergeom, rankdata

from baselines.grn import tree_importances
from baselines.scgpt_grn import attention_influence, mean_attention, rank_normalise
from benchmark.metrics.grn import (
    average_precision,
    enrichment,
    knn_graph,
    leiden_clusters,
    precision_at_k,
    program_agreement,
    programs_from_clusters,
    read_gmt,
    scanpy_gene_graph,
)
from benchmark.runner import run_method
from benchmark.simulate import make_world, simulate_celltypes, simulate_perturbation
from benchmark.tasks import get_task
from tests._models import random_checkpoint


# ----------------------------------------------------------------------------- attention
def test_rank_normalise_hand_matrix() -> None:
    # Row ranks: [1,5,3] -> [0,2,1]; [4,2,6] -> [1,0,2]; [9,8,7] -> [2,1,0] (then / 3);
    # column ranks of those: col 0 [0,1,2] -> [0,1,2], col 1 [2,0,1] -> [2,0,1], col 2
    # [1,2,0] -> [1,2,0] (then / 3).
    scores = torch.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0], [9.0, 8.0, 7.0]])[None, None]
    expected = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]]) / 3
    assert torch.equal(rank_normalise(scores)[0, 0], expected)
    # A matrix where the column step changes the row ranks.
    scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0]])[None, None]
    rows = np.array([[0, 1, 2], [0, 2, 1], [2, 0, 1]])  # row ranks
    cols = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])  # ranks of each column of `rows`
    # column 0 of rows = [0,0,2]: ties broken by position -> [0,1,2]
    assert torch.equal(rank_normalise(scores)[0, 0], torch.tensor(cols / 3, dtype=torch.float32))
    assert rows.shape == (3, 3)


def test_rank_normalise_matches_rankdata_and_column_path() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (2, 3, 6, 6), generator=gen).float()  # many ties
    full = rank_normalise(scores)
    m = scores.shape[-1]
    x = scores.numpy()
    rows = rankdata(x, axis=-1, method="ordinal") - 1  # ordinal = ties by position
    expected = (rankdata(rows / m, axis=-2, method="ordinal") - 1) / m
    np.testing.assert_allclose(full.numpy(), expected, atol=1e-7)
    # The few-column path (what the GRN uses) equals the full matrix's columns.
    part = rank_normalise(scores, [4, 0, 2])
    assert torch.equal(part, full[..., [4, 0, 2]])


def test_three_settings_on_hand_attention() -> None:
    genes = ["TF", "A", "B", "C"]
    control = np.array([0.9, 0.1, 0.5, 0.3])  # column TF of the mean control attention
    perturbed = np.array([0.8, 0.6, 0.4, 0.3])
    out = attention_influence(control, perturbed, genes, "TF")
    assert list(out["control"].index) == ["A", "B", "C"]  # the regulator's own row dropped
    np.testing.assert_allclose(out["control"], [0.1, 0.5, 0.3])
    np.testing.assert_allclose(out["perturbed"], [0.6, 0.4, 0.3])
    np.testing.assert_allclose(out["difference"], [0.5, -0.1, 0.0])
    assert out["difference"].idxmax() == "A"


def test_mean_attention_averages_raw_scores_of_the_last_layer(tmp_path: Path) -> None:
    from scgpt import load_pretrained

    genes = [f"G{i}" for i in range(6)]
    folder = random_checkpoint(tmp_path / "ckpt", genes, seed=0, nlayers=2)
    model, vocab, _ = load_pretrained(folder)
    ids = np.array([vocab[g] for g in genes])
    values = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    got = mean_attention(model, ids, values, columns=[1, 3], batch_size=2)
    with torch.inference_mode():
        raw = model.attention_scores(
            torch.as_tensor(ids).expand(5, -1), torch.as_tensor(values), None, softmax=False
        )
        probs = model.attention_scores(torch.as_tensor(ids).expand(5, -1), torch.as_tensor(values))
    # Raw q.k^T keeps the probabilities' order within each row (softmax is monotone).
    assert torch.equal(torch.argsort(raw, -1), torch.argsort(probs, -1))
    expected = rank_normalise(raw)[..., [1, 3]].mean(1).mean(0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


# ----------------------------------------------------------------------------- enrichment
def test_enrichment_matches_scipy_hypergeom(tmp_path: Path) -> None:
    gmt = tmp_path / "tiny.gmt"
    gmt.write_text(
        "SET_A\thttp://a\tg1\tg2\tg3\tg4\tOUTSIDE\n"
        "SET_B\tdesc\tg5\tg6\n"
        "SET_C\tdesc\tg7\tg8\tg9\tg10\tg11\tg12\n"
    )
    sets = read_gmt(gmt)
    assert sets["SET_A"] == ["g1", "g2", "g3", "g4", "OUTSIDE"]
    background = [f"g{i}" for i in range(1, 21)]
    programs = {"P1": ["g1", "g2", "g3", "g5"], "P2": ["g7", "g8", "g9", "g10", "g11"]}
    table = enrichment(programs, sets, background).set_index(["program", "gene_set"])
    # P1 vs SET_A: 3 of the 4 set genes in the 20-gene background, program of 4.
    assert table.loc[("P1", "SET_A"), "p_value"] == pytest.approx(hypergeom.sf(2, 20, 4, 4))
    assert table.loc[("P1", "SET_B"), "p_value"] == pytest.approx(hypergeom.sf(0, 20, 2, 4))
    assert table.loc[("P2", "SET_C"), "p_value"] == pytest.approx(hypergeom.sf(4, 20, 6, 5))
    assert ("P2", "SET_A") not in table.index  # no overlap, not tested
    assert (table["threshold"] == 0.05 / 3).all()  # Bonferroni over the GMT's sets
    assert table.loc[("P2", "SET_C"), "enriched"]  # p = 0.0116 < 0.0167
    assert not table.loc[("P1", "SET_B"), "enriched"]


def _bonferroni_case(tmp_path: Path) -> tuple[Path, dict[str, list[str]], list[str]]:
    """30 background genes, a 6-gene program and 10 gene sets, 3 of them overlapping it.

    With every set of the file in the divisor the threshold is 0.05 / 10 = 0.005.
    ``HIT`` (p = 0.00257) passes it but not 0.05 / 20 (programs x sets); ``BORDER``
    (p = 0.00722) fails it but passes 0.05 / 5 (sets with a background gene), 0.05 / 3 (sets
    tested) and 0.05 (no correction).
    """
    background = [f"g{i}" for i in range(30)]
    rows = {
        "HIT": ["g0", "g1", "g2", "g3", "g10"],
        "BORDER": ["g2", "g3", "g4", "g5", "g11", "g12"],
        "ONE": ["g5", "g13", "g14", "g15"],
        "NO_OVERLAP_A": ["g20", "g21"],
        "NO_OVERLAP_B": ["g22", "g23", "g24"],
        **{f"ELSEWHERE_{k}": [f"X{k}a", f"X{k}b"] for k in range(5)},  # no background gene
    }
    gmt = tmp_path / "case.gmt"
    gmt.write_text("".join(f"{name}\tdesc\t" + "\t".join(g) + "\n" for name, g in rows.items()))
    programs = {"P": ["g0", "g1", "g2", "g3", "g4", "g5"], "Q": ["g20", "g25", "g26", "g27", "g28"]}
    return gmt, programs, background


def _hypergeom_sf(overlap: int, n_background: int, set_size: int, program_size: int) -> float:
    """P[X >= overlap] by hand: sum of C(K, k) C(N - K, n - k) / C(N, n)."""
    total = math.comb(n_background, program_size)
    return (
        sum(
            math.comb(set_size, k) * math.comb(n_background - set_size, program_size - k)
            for k in range(overlap, min(set_size, program_size) + 1)
        )
        / total
    )


def test_enrichment_bonferroni_over_every_set_of_the_file(tmp_path: Path) -> None:
    gmt, programs, background = _bonferroni_case(tmp_path)
    sets = read_gmt(gmt)
    n_tests = len(sets)  # per program: every set of the file, tested or not
    assert n_tests == 10
    table = enrichment(programs, sets, background).set_index(["program", "gene_set"])
    hit, border = _hypergeom_sf(4, 30, 5, 6), _hypergeom_sf(4, 30, 6, 6)
    assert 0.05 / 20 < hit < 0.05 / n_tests < border < 0.05 / 5  # the case's premise
    assert table.loc[("P", "HIT"), "p_value"] == pytest.approx(hit, rel=1e-9)
    assert table.loc[("P", "BORDER"), "p_value"] == pytest.approx(border, rel=1e-9)
    for (program, name), row in table.iterrows():
        size = len(set(sets[name]) & set(background))
        expected = _hypergeom_sf(int(row["overlap"]), 30, size, len(programs[program]))
        assert row["p_value"] == pytest.approx(expected, rel=1e-9), (program, name)
        # Bonferroni: enriched when p x (number of tests) < alpha
        assert row["enriched"] == (expected * n_tests < 0.05), (program, name)
        assert row["threshold"] == pytest.approx(0.05 / n_tests)
    assert table.loc[("P", "HIT"), "enriched"] and not table.loc[("P", "BORDER"), "enriched"]


def test_task_enrichment_divides_by_the_sets_of_the_configured_file(tmp_path: Path) -> None:
    """Through the task (``metrics.gene_sets``): the same divisor and the same decisions."""
    gmt, programs, background = _bonferroni_case(tmp_path)
    task = get_task("grn").with_metric_options({"gene_sets": str(gmt)})
    rng = np.random.default_rng(0)
    data = ad.AnnData(
        X=rng.poisson(3.0, size=(40, 30)).astype(np.float32),
        var=pd.DataFrame(index=background),
    )
    data.obs_names = [f"c{i}" for i in range(40)]
    inputs = task.prepare(data, seed=0)
    genes = list(inputs["args"][0].var_names)
    assert sorted(genes) == sorted(background)
    # a similarity with the two programs as blocks (and the other genes loosely linked)
    block = {g: p for p, members in programs.items() for g in members}
    sim = rng.uniform(0.0, 0.1, size=(30, 30))
    for i, a in enumerate(genes):
        for j, b in enumerate(genes):
            if a in block and block.get(b) == block[a]:
                sim[i, j] = 1.0
    sim = (sim + sim.T) / 2
    output = pd.DataFrame(sim, index=genes, columns=genes)
    scores = task.score(output, inputs, seed=0)
    assert scores["n_gene_sets"] == 10
    task.save(output, inputs, tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "enrichment.csv")
    assert len(table) and np.allclose(table["threshold"], 0.05 / 10)
    found = table[table["gene_set"].isin(["HIT", "BORDER"]) & (table["overlap"] >= 4)]
    assert set(found["gene_set"]) == {"HIT", "BORDER"}  # the program P was found
    assert found.loc[found["gene_set"] == "HIT", "enriched"].all()
    assert not found.loc[found["gene_set"] == "BORDER", "enriched"].any()
    assert scores["n_enriched_pathways"] >= 1


def test_bundled_reactome_gmt_is_real_and_readable() -> None:
    from benchmark.metrics.grn import DEFAULT_GMT

    sets = read_gmt(DEFAULT_GMT)
    assert len(sets) == 674
    assert "HLA-DRB1" in sets["REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"]


# ----------------------------------------------------------------------------- programs
def test_program_agreement_against_planted_truth() -> None:
    truth = {"A": [f"a{i}" for i in range(5)], "B": [f"b{i}" for i in range(5)]}
    genes = truth["A"] + truth["B"] + ["x0"]
    perfect = np.array([0] * 5 + [1] * 5 + [2])
    scores = program_agreement(genes, perfect, truth)
    assert scores["ari"] == pytest.approx(1.0)
    assert scores["pair_precision"] == 1.0 and scores["pair_recall"] == 1.0
    assert scores["n_programs"] == 2.0  # the singleton is not a program
    # Cluster 0 = the 5 A genes + b0 (6 genes, 15 pairs, 10 of them true); b1..b4 form a
    # cluster of 4 (< 5 genes: not a program). True pairs: 10 + 10.
    merged = np.array([0] * 5 + [0, 1, 1, 1, 1] + [2])
    scores = program_agreement(genes, merged, truth)
    assert scores["pair_precision"] == pytest.approx(10 / 15)
    assert scores["pair_recall"] == pytest.approx(10 / 20)
    assert scores["n_programs"] == 1.0
    assert programs_from_clusters(genes, merged) == {"G0": truth["A"] + ["b0"]}


def test_knn_leiden_recovers_planted_blocks() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)
    sim = (labels[:, None] == labels[None, :]) * 0.8 + rng.normal(0, 0.05, (24, 24))
    sim = (sim + sim.T) / 2
    clusters = leiden_clusters(knn_graph(sim, n_neighbors=5), 1.0, seed=0)
    genes = [f"g{i}" for i in range(24)]
    truth = {f"P{k}": [g for g, lab in zip(genes, labels) if lab == k] for k in range(3)}
    assert program_agreement(genes, clusters, truth)["ari"] == pytest.approx(1.0)


def test_scanpy_gene_graph_is_scanpys_cosine_neighbours_and_recovers_blocks() -> None:
    """The tutorial's graph from a similarity equals sc.pp.neighbors on the vectors (cosine)."""
    import scanpy as sc

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat([0, 1, 2], 10)
    vectors = centres[labels] + rng.normal(0, 0.4, size=(30, 16))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    graph = scanpy_gene_graph(unit @ unit.T, n_neighbors=6)
    reference = ad.AnnData(X=vectors.astype(np.float32))
    sc.pp.neighbors(reference, n_neighbors=6, use_rep="X", metric="cosine")
    np.testing.assert_allclose(
        graph.toarray(), reference.obsp["connectivities"].toarray(), atol=1e-5
    )
    clusters = leiden_clusters(graph, 0.5, seed=0)
    genes = [f"g{i}" for i in range(30)]
    truth = {f"P{k}": [g for g, lab in zip(genes, labels) if lab == k] for k in range(3)}
    assert program_agreement(genes, clusters, truth)["ari"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="square"):
        scanpy_gene_graph(np.ones((3, 4)))


def test_grn_task_refuses_unknown_graph_and_background() -> None:
    with pytest.raises(ValueError, match="graph 'umap' is not one of"):
        get_task("grn").with_metric_options({"graph": "umap"})
    with pytest.raises(ValueError, match="enrichment_background 'genome'"):
        get_task("grn").with_metric_options({"enrichment_background": "genome"})


def test_library_background_lowers_p_values(tmp_path: Path) -> None:
    """Enrichr's library background (every GMT gene) vs the clustered genes: the same overlap
    drawn from a larger universe is less likely by chance."""
    gmt, programs, background = _bonferroni_case(tmp_path)
    rng = np.random.default_rng(0)
    data = ad.AnnData(
        X=rng.poisson(3.0, size=(40, 30)).astype(np.float32),
        var=pd.DataFrame(index=background),
    )
    data.obs_names = [f"c{i}" for i in range(40)]
    block = {g: p for p, members in programs.items() for g in members}
    sim = np.array(
        [
            [1.0 if a in block and block.get(b) == block[a] else 0.05 for b in background]
            for a in background
        ]
    )
    output = pd.DataFrame(sim, index=background, columns=background)
    tables = {}
    for choice in ("analysed", "gene_sets"):
        task = get_task("grn").with_metric_options(
            {"gene_sets": str(gmt), "enrichment_background": choice}
        )
        inputs = task.prepare(data, seed=0)
        task.save(output, inputs, tmp_path / choice)
        tables[choice] = pd.read_csv(tmp_path / choice / "enrichment.csv")
    analysed = tables["analysed"].set_index(["resolution", "program", "gene_set"])
    library = tables["gene_sets"].set_index(["resolution", "program", "gene_set"])
    assert set(analysed["background"]) == {30}
    assert set(library["background"]) == {30 + 10}  # the 10 genes of the GMT outside the data
    shared = analysed.index.intersection(library.index)
    assert len(shared) and (library.loc[shared, "p_value"] <= analysed.loc[shared, "p_value"]).all()


def test_target_scores() -> None:
    scores = pd.Series([0.9, 0.8, 0.1, 0.7], index=["t1", "x", "y", "t2"])
    assert precision_at_k(scores, ["t1", "t2"], k=2) == 0.5
    assert average_precision(scores, ["t1", "t2"]) == pytest.approx((1 + 2 / 3) / 2)


def test_genie3_importance_finds_the_planted_regulator() -> None:
    # B = sin(2A) + A^2 + noise (non-linear, so correlation alone would undersell it); C and D
    # independent noise. A is by far the most important feature for B, and B for A.
    rng = np.random.default_rng(0)
    n = 300
    a = rng.uniform(-2, 2, n)
    b = np.sin(2 * a) + a**2 + rng.normal(0, 0.1, n)
    x = np.column_stack([a, b, rng.normal(size=n), rng.normal(size=n)])
    genes = np.arange(4)
    w = tree_importances(
        x, genes, genes, n_estimators=20, max_features=1.0, min_samples_leaf=1, seed=0, n_jobs=1
    )
    np.testing.assert_allclose(w.sum(axis=1), 1.0)  # each target row is normalised
    assert np.all(np.diag(w) == 0)  # a gene never regulates itself
    assert w[1].argmax() == 0 and w[1, 0] > 0.8  # A -> B
    assert w[0].argmax() == 1  # and B predicts A
    # A constant gene has no regulators (row of zeros), not NaN.
    x[:, 3] = 1.0
    w = tree_importances(
        x, genes, genes, n_estimators=5, max_features=1.0, min_samples_leaf=1, seed=0, n_jobs=1
    )
    assert np.all(w[3] == 0)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("grn_data")
    paths = {
        "programs": folder / "celltypes.h5ad",
        "targets": folder / "perturb.h5ad",
    }
    simulate_celltypes(n_cells=300, n_batches=2, seed=0).write_h5ad(paths["programs"])
    simulate_perturbation(
        n_ctrl_cells=120, n_cells_per_condition=15, n_single=10, n_double=2, seed=0
    ).write_h5ad(paths["targets"])
    return paths


def _scores(outdir: Path) -> dict:
    return json.loads((outdir / "scores.json").read_text())


def test_end_to_end_programs(small_data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "coexpression"
    record = run_method(
        "grn", "coexpression", "sim", small_data["programs"], out, seed=0, threads=1
    )
    assert record["status"] == "ok", record.get("error")
    scores = _scores(out)
    # Co-expression of the simulated counts carries the planted programs.
    assert scores["pair_auroc"] > 0.7 and scores["ari"] > 0.3
    assert {f"ari_r{r:g}" for r in get_task("grn").resolutions} <= set(scores)
    assert (out / "clusters.csv").is_file() and (out / "similarity.npy").is_file()
    shuffled = tmp_path / "random"
    run_method("grn", "random", "sim", small_data["programs"], shuffled, seed=0, threads=1)
    assert abs(_scores(shuffled)["pair_auroc"] - 0.5) < 0.05
    genie3 = tmp_path / "genie3"
    record = run_method(
        "grn",
        "genie3",
        "sim",
        small_data["programs"],
        genie3,
        seed=0,
        params={"n_estimators": 10, "max_genes": 100, "min_samples_leaf": 10},
        threads=1,
    )
    assert record["status"] == "ok", record.get("error")
    similarity = np.load(genie3 / "similarity.npy")
    np.testing.assert_allclose(similarity, similarity.T)  # (W + W.T) / 2
    assert len(pd.read_csv(genie3 / "genes.csv")) == 100  # max_genes: the most variable
    assert _scores(genie3)["pair_auroc"] > 0.7  # regression carries the planted programs
    figures = get_task("grn").figures([out, shuffled], small_data["programs"], tmp_path / "fig")
    assert any(p.name == "grn_program_activity_coexpression.png" for p in figures)


def test_end_to_end_targets_with_scgpt(small_data: dict[str, Path], tmp_path: Path) -> None:
    world = make_world()
    checkpoint = random_checkpoint(tmp_path / "ckpt", list(world.genes), seed=0)
    out = tmp_path / "scgpt"
    record = run_method(
        "grn",
        "scgpt",
        "sim",
        small_data["targets"],
        out,
        seed=0,
        params={"n_cells": 5},
        checkpoint=checkpoint,
        threads=1,
    )
    assert record["status"] == "ok", record.get("error")
    scores = _scores(out)
    for setting in ("difference", "perturbed", "control"):
        assert 0.0 <= scores[f"precision_at_20_{setting}"] <= 1.0
        assert (out / f"targets_{setting}.csv").is_file()
    assert scores["setting"] == "difference"
    # The attention tutorial's fine-tuning: the integration pipeline on every gene (raw).
    tuned = tmp_path / "scgpt_finetuned"
    record = run_method(
        "grn",
        "scgpt_finetuned",
        "sim",
        small_data["targets"],
        tuned,
        seed=0,
        params={"epochs": 1, "batch_size": 16, "max_len": 32, "n_cells": 5},
        checkpoint=checkpoint,
        threads=1,
    )
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= _scores(tuned)["precision_at_20"] <= 1.0
    dataset = ad.read_h5ad(small_data["targets"])
    method_input = get_task("grn").prepare(dataset, seed=0)["args"][0]
    assert list(method_input.raw.var_names) == list(dataset.var_names)
    assert list(method_input.raw.obs_names) == list(method_input.obs_names)
    de_out = tmp_path / "de"
    run_method("grn", "de", "sim", small_data["targets"], de_out, seed=0, threads=1)
    de = _scores(de_out)
    # The knock-down's own response ranks its true targets far above chance.
    assert de["precision_at_20"] > 3 * de["precision_at_20_expected"]
    figures = get_task("grn").figures([out, de_out], small_data["targets"], tmp_path / "fig")
    assert [p.name for p in figures] == ["grn_targets.png"]


def test_real_genes_enrichment_path(tmp_path: Path) -> None:
    """Programs on real gene symbols are scored by Reactome enrichment (no simulator truth)."""
    sets = read_gmt(get_task("grn").gene_sets)
    pathway_a = sets["REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION"][:12]
    pathway_b = [g for g in sets["REACTOME_TRANSLATION"] if g.startswith("RPL")][:12]
    others = [f"NOTAGENE{i}" for i in range(36)]
    genes = list(dict.fromkeys(pathway_a + pathway_b)) + others
    rng = np.random.default_rng(0)
    n = 200
    factor = rng.random((n, 2)) * 3
    mean = np.full((n, len(genes)), 1.0)
    mean[:, : len(pathway_a)] += factor[:, [0]] * 4
    mean[:, len(pathway_a) : len(pathway_a) + len(pathway_b)] += factor[:, [1]] * 4
    counts = rng.poisson(mean).astype(np.float32)
    data = ad.AnnData(X=counts, var=pd.DataFrame(index=genes))
    data.obs_names = [f"c{i}" for i in range(n)]
    data.obs["cell_type"] = np.where(factor[:, 0] > factor[:, 1], "A", "B")
    path = tmp_path / "real.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "run"
    record = run_method("grn", "coexpression", "real", path, out, seed=0, threads=1)
    assert record["status"] == "ok", record.get("error")
    scores = _scores(out)
    assert scores["n_enriched_pathways"] >= 2
    table = pd.read_csv(out / "enrichment.csv")
    hits = set(table.loc[table["enriched"], "gene_set"])
    assert "REACTOME_MHC_CLASS_II_ANTIGEN_PRESENTATION" in hits
