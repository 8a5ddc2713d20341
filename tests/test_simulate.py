"""Tests of the seeded simulator (benchmark.simulate): layout, determinism, ground truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark.simulate import (
    BatchEffects,
    apply_batch_effects,
    ground_truth_targets,
    make_batch_effects,
    make_world,
    simulate_celltypes,
    simulate_multiome,
    simulate_perturbation,
)


def _log1p_norm(X: sp.spmatrix | np.ndarray) -> np.ndarray:
    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    total = dense.sum(axis=1, keepdims=True)
    return np.log1p(1e4 * dense / np.where(total > 0, total, 1))


def _assert_counts(adata: ad.AnnData) -> None:
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    data = adata.X.data
    assert np.all(data >= 0)
    assert np.array_equal(data, np.rint(data))
    assert adata.obs_names.is_unique and adata.var_names.is_unique


def _assert_same(a: ad.AnnData, b: ad.AnnData) -> None:
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)


@pytest.fixture(scope="module")
def world():
    return make_world()


@pytest.fixture(scope="module")
def celltypes(world):
    return simulate_celltypes(world, n_cells=900, n_batches=3, seed=0)


@pytest.fixture(scope="module")
def perturb(world):
    return simulate_perturbation(world, seed=0)


@pytest.fixture(scope="module")
def multiome(world):
    return simulate_multiome(world, n_cells=800, seed=0)


# ---------------------------------------------------------------------------------------------
# World
# ---------------------------------------------------------------------------------------------


def test_world_structure(world):
    assert world.n_genes == 400 and world.n_tfs == 30
    assert world.genes[0] == "TF01" and world.genes[29] == "TF30" and world.genes[30] == "G0001"
    assert world.is_tf[:30].all() and not world.is_tf[30:].any()
    assert len(set(world.genes)) == 400
    programs = world.programs()
    assert len(programs) == 8 and all(len(genes) >= 3 for genes in programs.values())
    assert world.type_activity.shape == (6, 8)
    # Sources are TFs; TF -> TF edges only go to higher-index TFs (the network is a DAG).
    assert world.is_tf[world.grn_source].all()
    tf_edges = world.is_tf[world.grn_target]
    assert np.all(world.grn_target[tf_edges] > world.grn_source[tf_edges])
    assert (world.grn_weight > 0).any() and (world.grn_weight < 0).any()
    with pytest.raises(ValueError):
        world.base_log_mean[0] = 1.0
    assert make_world() is world
    other = make_world(n_genes=120, n_tfs=10, n_programs=4, n_cell_types=3, seed=5)
    assert other.genes[:2] == ("TF01", "TF02") and other.n_genes == 120


def test_world_seed_changes_network():
    a, b = make_world(seed=1), make_world(seed=2)
    assert a.genes == b.genes
    assert not np.array_equal(a.base_log_mean, b.base_log_mean)


def test_ground_truth_targets(world):
    edges = world.grn_edges()
    tf = "TF05"
    direct = ground_truth_targets(world, tf)
    expected = edges[edges.source == tf].groupby("target")["weight"].sum().to_dict()
    assert direct == pytest.approx(expected)
    assert direct and all(g in world.genes for g in direct)
    downstream = ground_truth_targets(world, tf, downstream=True)
    assert set(direct) <= set(downstream) and tf not in downstream
    assert ground_truth_targets(world, "G0100") == {}
    with pytest.raises(KeyError, match="NOPE"):
        ground_truth_targets(world, "NOPE")


# ---------------------------------------------------------------------------------------------
# Batch effects
# ---------------------------------------------------------------------------------------------


def test_apply_batch_effects_identity_and_scaling():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, (400, 5))
    identity = BatchEffects(
        names=("batch0",),
        library_factor=np.ones(1),
        gene_scale=np.ones((1, 5)),
        dropout=np.zeros(1),
    )
    codes = np.zeros(400, dtype=int)
    assert np.array_equal(apply_batch_effects(counts, codes, identity, rng), counts)
    scaled = BatchEffects(
        names=("batch0",),
        library_factor=np.array([2.0]),
        gene_scale=np.array([[0.25, 0.5, 1.0, 1.5, 2.0]]),
        dropout=np.zeros(1),
    )
    out = apply_batch_effects(sp.csr_matrix(counts), codes, scaled, rng)
    assert out.dtype == np.int64
    ratio = out.mean(axis=0) / counts.mean(axis=0)
    assert ratio == pytest.approx([0.5, 1.0, 2.0, 3.0, 4.0], rel=0.1)
    with pytest.raises(ValueError, match="genes"):
        apply_batch_effects(counts[:, :3], codes, scaled, rng)
    effects = make_batch_effects(3, 5, np.random.default_rng(1))
    assert effects.names == ("batch0", "batch1", "batch2") and effects.gene_scale.shape == (3, 5)


# ---------------------------------------------------------------------------------------------
# Cell types
# ---------------------------------------------------------------------------------------------


def test_celltypes_layout(celltypes, world, tmp_path):
    adata = celltypes
    assert adata.shape == (900, 400)
    _assert_counts(adata)
    assert list(adata.var_names) == list(world.genes)
    assert adata.var["is_tf"].dtype == bool and adata.var["is_tf"].sum() == 30
    for key in ("cell_type", "batch", "split"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype), key
    assert set(adata.obs["batch"]) == {"batch0", "batch1", "batch2"}
    assert set(adata.obs["cell_type"]) == set(world.cell_types)
    is_query = (adata.obs["split"] == "query").to_numpy()
    assert np.array_equal(is_query, (adata.obs["batch"] == "batch2").to_numpy())
    assert np.allclose(adata.obs["n_counts"], np.asarray(adata.X.sum(axis=1)).ravel())
    uns = adata.uns["simulation"]
    assert uns["seed"] == 0 and uns["programs"] == world.programs()
    assert len(uns["grn"]["source"]) == len(uns["grn"]["weight"]) == world.grn_source.size
    assert np.asarray(uns["batch_effects"]["gene_scale"]).shape == (3, 400)
    path = tmp_path / "celltypes.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["simulation"]["grn"]["target"][0] == uns["grn"]["target"][0]


def test_celltypes_deterministic(celltypes, world):
    _assert_same(celltypes, simulate_celltypes(world, n_cells=900, n_batches=3, seed=0))
    other = simulate_celltypes(world, n_cells=900, n_batches=3, seed=1)
    assert (celltypes.X != other.X).nnz > 0


def test_batch_effect_and_cell_types_separate(celltypes):
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier

    logn = _log1p_norm(celltypes.X)
    obs = celltypes.obs
    batch = obs["batch"].cat.codes.to_numpy()
    # Within one cell type, the batch gap of a gene follows the batches' true gene scaling.
    in_type = (obs["cell_type"] == obs["cell_type"].value_counts().index[0]).to_numpy()
    b0, b1 = in_type & (batch == 0), in_type & (batch == 1)
    gap = np.abs(logn[b0].mean(0) - logn[b1].mean(0))
    scale = np.asarray(celltypes.uns["simulation"]["batch_effects"]["gene_scale"])
    expressed = np.asarray(celltypes.X[in_type].mean(0)).ravel() > 1
    log_ratio = np.abs(np.log(scale[0] / scale[1]))
    assert np.corrcoef(gap[expressed], log_ratio[expressed])[0, 1] > 0.3

    pcs = PCA(n_components=15, random_state=0).fit_transform(logn)
    codes = obs["cell_type"].cat.codes.to_numpy()
    knn = KNeighborsClassifier(n_neighbors=10).fit(pcs[::2], codes[::2])
    assert knn.score(pcs[1::2], codes[1::2]) > 0.9  # cell types separate
    # ... and so do batches within a cell type (chance would be about 1/3).
    type_pcs, type_batch = pcs[in_type], batch[in_type]
    knn = KNeighborsClassifier(n_neighbors=10).fit(type_pcs[::2], type_batch[::2])
    assert knn.score(type_pcs[1::2], type_batch[1::2]) > 0.7


# ---------------------------------------------------------------------------------------------
# Perturbation
# ---------------------------------------------------------------------------------------------


def test_perturbation_layout(perturb, world, tmp_path):
    adata = perturb
    uns = adata.uns["simulation"]
    conditions = uns["conditions"]
    n_cond = len(conditions)
    assert n_cond == 30 + 15
    assert adata.shape == (800 + 40 * n_cond, 400)
    _assert_counts(adata)
    obs = adata.obs
    assert list(obs["condition"].cat.categories) == ["ctrl", *conditions]
    assert (obs["condition"] == "ctrl").sum() == 800
    assert set(obs["cell_type"]) == {"sim_k562"}
    assert (obs.loc[obs["condition"] == "ctrl", "split"] == "train").all()
    assert (obs["control"] == (obs["condition"] == "ctrl")).all()
    singles = [c for c in conditions if c.endswith("+ctrl")]
    doubles = [c for c in conditions if not c.endswith("+ctrl")]
    assert len(singles) == 30 and len(doubles) == 15
    assert all(a in world.genes and b in world.genes for a, b in (d.split("+") for d in doubles))
    assert np.asarray(uns["true_delta"]).shape == (n_cond, 400)
    assert np.asarray(uns["true_logfc"]).shape == (n_cond, 400)
    assert set(uns["nonadditive"]["kind"]) <= {"synergy", "buffering", "neomorphic"}
    path = tmp_path / "perturb.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert np.allclose(back.uns["simulation"]["true_delta"], uns["true_delta"])


def test_perturbation_split_rules(perturb):
    obs = perturb.obs
    per_condition = obs.groupby("condition", observed=True)[["split", "subgroup"]].agg(set)
    assert (per_condition.map(len) == 1).all().all()  # one split and subgroup per condition
    info = per_condition.map(lambda s: next(iter(s)))
    train = info[info["split"] == "train"].index
    train_genes = {c.split("+")[0] for c in train if c.endswith("+ctrl")}
    for condition, (split, subgroup) in info.iterrows():
        if condition == "ctrl":
            assert (split, subgroup) == ("train", "ctrl")
            continue
        genes = [g for g in condition.split("+") if g != "ctrl"]
        if split == "train":
            assert subgroup == "train" and set(genes) <= train_genes
        elif len(genes) == 1:
            assert subgroup == "single_unseen" and genes[0] not in train_genes
        else:
            seen = sum(g in train_genes for g in genes)
            assert subgroup == f"combo_seen{seen}"
            # Every gene of a held-out double is either seen (a train single) or unseen here.
            unseen_singles = {f"{g}+ctrl" for g in genes if g not in train_genes}
            assert unseen_singles <= set(info.index)
    test_groups = set(info.loc[info["split"] == "test", "subgroup"])
    assert test_groups == {"single_unseen", "combo_seen0", "combo_seen1", "combo_seen2"}
    assert "val" in set(info["split"])


def test_perturbation_deterministic(perturb, world):
    _assert_same(perturb, simulate_perturbation(world, seed=0))
    other = simulate_perturbation(world, seed=3)
    assert other.uns["simulation"]["conditions"] != perturb.uns["simulation"]["conditions"]


def test_tf_knockdown_moves_targets_by_sign(perturb, world):
    uns = perturb.uns["simulation"]
    true_delta = np.asarray(uns["true_delta"])
    logn = _log1p_norm(perturb.X)
    cond = perturb.obs["condition"].to_numpy()
    ctrl = logn[cond == "ctrl"].mean(0)
    edge_sign, observed = [], []
    for i, condition in enumerate(uns["conditions"]):
        gene, _, partner = condition.partition("+")
        if partner != "ctrl" or not gene.startswith("TF"):
            continue
        delta = logn[cond == condition].mean(0) - ctrl
        assert delta[world.gene_index(gene)] < 0, condition  # the knocked-down gene itself
        for target, weight in ground_truth_targets(world, gene).items():
            j = world.gene_index(target)
            if abs(true_delta[i, j]) > 0.2:  # skip targets too lowly expressed to measure
                edge_sign.append(np.sign(weight))
                observed.append(delta[j])
    edge_sign, observed = np.array(edge_sign), np.array(observed)
    assert (edge_sign > 0).sum() >= 10 and (edge_sign < 0).sum() >= 5
    # Knocking down an activator lowers its targets; knocking down a repressor raises them.
    assert observed[edge_sign > 0].mean() < -0.2
    assert observed[edge_sign < 0].mean() > 0.2
    assert np.mean(np.sign(observed) == -edge_sign) > 0.85


def test_true_effects_match_simulated_cells(perturb):
    uns = perturb.uns["simulation"]
    logn = _log1p_norm(perturb.X)
    cond = perturb.obs["condition"].to_numpy()
    ctrl = logn[cond == "ctrl"].mean(0)
    corr = [
        np.corrcoef(logn[cond == c].mean(0) - ctrl, np.asarray(uns["true_delta"])[i])[0, 1]
        for i, c in enumerate(uns["conditions"])
    ]
    assert np.median(corr) > 0.4


def test_nonadditive_doubles(perturb):
    uns = perturb.uns["simulation"]
    index = {c: i for i, c in enumerate(uns["conditions"])}
    family = uns["family"]
    nonadditive = set(uns["nonadditive"]["condition"])
    assert nonadditive
    logfc, delta = np.asarray(uns["true_logfc"]), np.asarray(uns["true_delta"])
    for condition in uns["conditions"]:
        if condition.endswith("+ctrl"):
            continue
        a, b = condition.split("+")
        i, ia, ib = index[condition], index[f"{a}+ctrl"], index[f"{b}+ctrl"]
        summed = logfc[ia] + logfc[ib]
        rel = np.linalg.norm(logfc[i] - summed) / np.linalg.norm(summed)
        summed_norm = delta[ia] + delta[ib]
        rel_norm = np.linalg.norm(delta[i] - summed_norm) / np.linalg.norm(summed_norm)
        if condition in nonadditive:
            assert rel > 0.2 and rel_norm > 0.2, condition
        else:
            assert rel < 1e-9, condition  # exactly additive in log-abundance
            # Nearly so after normalisation and log1p; two knockdowns in one program both
            # lower its genes, which near zero counts log1p flattens (sub-additive).
            assert rel_norm < (0.2 if family[a] == family[b] else 0.05), condition


def test_screen_targets_gene_families(perturb, world):
    """Perturbed genes come in families (programs) that respond alike and differ between."""
    uns = perturb.uns["simulation"]
    family = uns["family"]
    programs = world.programs()
    split = uns["gene_split"]
    perturbed = [g for genes in split.values() for g in genes]
    assert sorted(family) == sorted(perturbed) and len(perturbed) == 30
    assert all(g in programs[p] for g, p in family.items())  # a family is a program
    sizes = pd.Series(family).value_counts()
    assert sizes.min() >= 2 and len(sizes) >= 6
    # Master TFs are screened first: about half the library are TFs.
    assert 10 <= sum(world.is_tf[world.gene_index(g)] for g in perturbed) <= 20
    # Every held-out gene has a relative (same family) perturbed in training.
    train_families = {family[g] for g in split["train"]}
    assert all(family[g] in train_families for g in split["test"] + split["val"])
    # Held-out genes are spread over the families (round-robin).
    per_family = pd.Series([family[g] for g in split["test"]]).value_counts()
    assert per_family.max() <= -(-len(split["test"]) // len(sizes))

    # True responses (the knocked-down genes themselves left out): alike within a family,
    # unrelated between families, so an unseen gene's family predicts it and the screen's
    # average response does not.
    delta = np.asarray(uns["true_delta"])
    singles = {c.split("+")[0]: i for i, c in enumerate(uns["conditions"]) if c.endswith("+ctrl")}
    others = np.setdiff1d(np.arange(world.n_genes), world.gene_index(perturbed))
    response = {g: delta[i, others] for g, i in singles.items()}
    within, between = [], []
    for k, a in enumerate(perturbed):
        for b in perturbed[k + 1 :]:
            r = np.corrcoef(response[a], response[b])[0, 1]
            (within if family[a] == family[b] else between).append(r)
    assert np.median(within) > 0.6 and abs(np.median(between)) < 0.2
    train_mean = np.mean([response[g] for g in split["train"]], axis=0)
    by_family, by_mean = [], []
    for g in split["test"]:
        relatives = [response[h] for h in split["train"] if family[h] == family[g]]
        by_family.append(np.corrcoef(response[g], np.mean(relatives, axis=0))[0, 1])
        by_mean.append(np.corrcoef(response[g], train_mean)[0, 1])
    assert np.mean(by_family) > 0.6 and np.mean(by_family) > np.mean(by_mean) + 0.3


# ---------------------------------------------------------------------------------------------
# Multiome
# ---------------------------------------------------------------------------------------------


def test_multiome_layout(multiome, world):
    adata = multiome
    _assert_counts(adata)
    modality = adata.var["modality"]
    assert modality.value_counts().to_dict() == {"rna": 400, "protein": 30, "atac": 600}
    assert list(adata.var_names[:400]) == list(world.genes)
    assert adata.var_names[400].startswith("prot_") and adata.var_names[430] == "peak_0001"
    linked = adata.var["linked_gene"]
    assert set(linked) <= set(world.genes)
    assert all(n == f"prot_{g}" for n, g in zip(adata.var_names[400:430], linked[400:430]))
    uns = adata.uns["simulation"]
    assert uns["peak_links"]["gene"] == list(linked[modality == "atac"])
    assert uns["protein_genes"]["gene"] == list(linked[modality == "protein"])
    assert set(np.unique(adata[:, modality == "atac"].X.toarray())) <= {0.0, 1.0, 2.0}
    assert set(adata.obs["batch"]) == {"batch0", "batch1"}
    assert set(adata.obs["cell_type"]) == set(world.cell_types)
    _assert_same(adata, simulate_multiome(world, n_cells=800, seed=0))


def test_multiome_linkage(multiome, world):
    modality = multiome.var["modality"].to_numpy()
    rna = _log1p_norm(multiome.X[:, modality == "rna"])
    atac = multiome.X[:, modality == "atac"].toarray()
    peak_gene = multiome.var["linked_gene"].to_numpy()[modality == "atac"]
    genes = np.unique(peak_gene)
    linked, shuffled = [], []
    for k, gene in enumerate(genes):
        expression = rna[:, world.gene_index(gene)]
        linked.append(np.corrcoef(atac[:, peak_gene == gene].sum(1), expression)[0, 1])
        other = genes[(k + len(genes) // 2) % len(genes)]
        shuffled.append(np.corrcoef(atac[:, peak_gene == other].sum(1), expression)[0, 1])
    assert np.mean(linked) > 0.1
    assert np.mean(linked) > np.mean(shuffled) + 0.1

    protein = np.log1p(multiome.X[:, modality == "protein"].toarray())
    prot_gene = multiome.var["linked_gene"].to_numpy()[modality == "protein"]
    corr = [
        np.corrcoef(protein[:, k], rna[:, world.gene_index(g)])[0, 1]
        for k, g in enumerate(prot_gene)
    ]
    assert np.mean(corr) > 0.1


def test_perturbation_rejects_impossible_design():
    small = make_world(n_genes=60, n_tfs=8, n_programs=3, n_cell_types=2, seed=3)
    with pytest.raises(ValueError, match="n_double=20"):
        simulate_perturbation(small, n_single=8, n_double=20, n_ctrl_cells=10)
    adata = simulate_perturbation(
        small, n_single=6, n_double=3, n_ctrl_cells=10, n_cells_per_condition=3
    )
    assert adata.obs["condition"].nunique() == 1 + 6 + 3
