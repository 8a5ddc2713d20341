"""A Perturb-seq screen of single and double knockdowns with known effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmark.simulate._common import (
    NORMALISE_TARGET_SUM,
    STREAM_PERTURBATION,
    log1p_normalised,
    obs_frame,
    sample_nb,
    softmax,
    stream_rng,
)
from benchmark.simulate.world import (
    SimulationWorld,
    cell_states,
    expected_counts,
    resolve_world,
    var_frame,
    world_uns,
)

__all__ = ["simulate_perturbation"]

_INTERACTIONS = ("synergy", "buffering", "neomorphic")


def _pick_screen_families(
    world: SimulationWorld, ctrl_expected: np.ndarray, n_genes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed genes, screened family by family: (genes, program index of each gene).

    A family is one gene program (pathway / complex); its perturbed members are its expressed
    master-regulator TFs first, then expressed non-TF members. About four genes per family,
    at least two, in as many families as the world allows.
    """
    expressed = ctrl_expected >= 1.0
    members = [
        np.flatnonzero((world.program_of_gene == p) & expressed)
        for p in range(len(world.program_names))
    ]
    eligible = [p for p, m in enumerate(members) if m.size >= 2]
    n_fam = min(len(eligible), max(2, round(n_genes / 4)), n_genes // 2)
    capacity = sum(members[p].size for p in eligible)
    if n_fam < 1 or n_genes > capacity:
        raise ValueError(
            f"simulate_perturbation: n_single={n_genes} needs more expressed program genes "
            f"than the world has ({capacity} in {len(eligible)} programs with >= 2)"
        )
    families = [int(p) for p in rng.choice(eligible, n_fam, replace=False)]
    # Family sizes as equal as the programs allow.
    size = dict.fromkeys(families, 0)
    for _ in range(n_genes):
        open_ = [p for p in families if size[p] < members[p].size]
        if not open_:  # the chosen programs are full: take in one more program
            spare = [p for p in eligible if p not in size]
            families.append(int(rng.choice(spare)))
            size[families[-1]] = 0
            open_ = [families[-1]]
        size[min(open_, key=size.__getitem__)] += 1  # the first of the smallest families
    genes, family = [], []
    for p in families:
        tfs = rng.permutation(members[p][world.is_tf[members[p]]])
        others = rng.permutation(members[p][~world.is_tf[members[p]]])
        chosen = np.concatenate([tfs, others])[: size[p]]
        genes += chosen.tolist()
        family += [p] * chosen.size
    return np.asarray(genes, dtype=int), np.asarray(family, dtype=int)


def _split_screen_genes(
    genes: np.ndarray, family: np.ndarray, n_test: int, n_val: int, rng: np.random.Generator
) -> dict[str, list[int]]:
    """Test, validation and training genes, spread over the families.

    Held-out genes are taken round-robin over the families (in a random order), never the
    last training member of a family: every unseen gene has a relative seen in training,
    as in real screens where a library targets several members of each complex or pathway.
    Fewer than ``n_test + n_val`` genes are held out only when no family has one to spare.
    """
    pools = {p: list(rng.permutation(genes[family == p])) for p in pd.unique(family)}
    order = [int(p) for p in rng.permutation(list(pools))]
    held: dict[str, list[int]] = {"test": [], "val": []}
    turn = 0
    for split, n in (("test", n_test), ("val", n_val)):
        while len(held[split]) < n and any(len(pool) > 1 for pool in pools.values()):
            p = order[turn % len(order)]
            turn += 1
            if len(pools[p]) > 1:
                held[split].append(int(pools[p].pop()))
    train = [int(g) for p in order for g in pools[p]]
    return {"test": sorted(held["test"]), "val": sorted(held["val"]), "train": sorted(train)}


def _plan_doubles(
    gene_split: dict[str, list[int]], n_double: int, rng: np.random.Generator
) -> list[tuple[int, int, str, str]]:
    """Choose double perturbations: (gene a, gene b, split, subgroup).

    GEARS "simulation"-like: test doubles have 0, 1 or 2 genes seen in training (test genes
    are never perturbed in train), validation doubles use validation genes the same way, and
    the remaining doubles (both genes train) are training data.
    """
    train, val, test = gene_split["train"], gene_split["val"], gene_split["test"]
    n_test = max(3, round(0.4 * n_double)) if n_double >= 4 else max(0, n_double - 1)
    n_val = max(1, round(0.15 * n_double)) if n_double >= 4 else 0
    plan: list[tuple[str, int]] = [("test", k % 3) for k in range(n_test)]
    plan += [("val", 2 - (k % 2)) for k in range(n_val)]
    plan += [("train", 2)] * (n_double - n_test - n_val)
    # seen0 doubles need two unseen genes; fall back to more seen genes when there are few.
    pool_unseen = {"test": test, "val": val, "train": []}
    used: set[tuple[int, int]] = set()
    doubles = []
    for split, n_seen in plan:
        unseen = pool_unseen[split]
        for seen in range(n_seen, 3):
            if 2 - seen > len(unseen) or seen > len(train) or (seen == 2 and len(train) < 2):
                continue
            options = []
            for _ in range(200):
                pair = list(rng.choice(train, seen, replace=False)) if seen else []
                pair += list(rng.choice(unseen, 2 - seen, replace=False)) if seen < 2 else []
                key = (min(pair), max(pair))
                if key not in used:
                    options = pair
                    break
            if options:
                used.add((min(options), max(options)))
                subgroup = f"combo_seen{seen}" if split != "train" else "train"
                doubles.append((int(options[0]), int(options[1]), split, subgroup))
                break
    return doubles


@dataclass(frozen=True, eq=False)
class _Screen:
    """The screened genes (indices into the world's genes) and each one's knockdown."""

    activity: np.ndarray
    gene_split: dict[str, list[int]]
    kd_fraction: dict[int, float]
    family_of: dict[int, int]
    dependency_of: dict[int, float]

    def single_shift(self, world: SimulationWorld, gene: int) -> np.ndarray:
        """Log-abundance shift of knocking down ``gene`` alone (after propagation)."""
        # The knocked-down gene itself, and its program's output, which falls with the
        # component's log knockdown (log-linear, so shifts of two knockdowns still add).
        program = self.family_of[gene]
        log_kd = np.log(self.kd_fraction[gene])
        shift = (
            self.activity[program]
            * self.dependency_of[gene]
            * log_kd
            * world.program_effect[program]
        )
        shift[gene] += log_kd
        return world.propagate(shift)


@dataclass(eq=False)
class _Conditions:
    """The screen's conditions in order (singles, then doubles) with their shifts and splits."""

    names: list[str] = field(default_factory=list)
    shifts: list[np.ndarray] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    subgroups: list[str] = field(default_factory=list)
    nonadditive: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, shift: np.ndarray, split: str, subgroup: str) -> None:
        self.names.append(name)
        self.shifts.append(shift)
        self.splits.append(split)
        self.subgroups.append(subgroup)


def _check_screen_args(
    n_single: int, n_double: int, n_ctrl_cells: int, n_cells_per_condition: int
) -> None:
    if n_single < 3 or n_double < 0 or n_ctrl_cells < 1 or n_cells_per_condition < 1:
        raise ValueError(
            "simulate_perturbation: need n_single >= 3, n_double >= 0 and at least one cell "
            f"per group, got n_single={n_single}, n_double={n_double}, "
            f"n_ctrl_cells={n_ctrl_cells}, n_cells_per_condition={n_cells_per_condition}"
        )


def _draw_screen(
    world: SimulationWorld,
    activity: np.ndarray,
    ctrl_expected: np.ndarray,
    rng: np.random.Generator,
    *,
    n_single: int,
    test_gene_fraction: float,
    val_gene_fraction: float,
    knockdown_range: tuple[float, float],
    dependency_range: tuple[float, float],
) -> _Screen:
    """Pick the screened families and genes, split them, draw knockdowns and dependencies."""
    genes, family = _pick_screen_families(world, ctrl_expected, n_single, rng)
    n_test = max(1, round(test_gene_fraction * n_single))
    n_val = max(1, round(val_gene_fraction * n_single))
    gene_split = _split_screen_genes(genes, family, n_test, n_val, rng)
    kd_fraction = dict(zip(genes.tolist(), rng.uniform(*knockdown_range, genes.size)))
    family_of = dict(zip(genes.tolist(), family.tolist()))
    dependency_of = dict(zip(genes.tolist(), rng.uniform(*dependency_range, genes.size)))
    return _Screen(activity, gene_split, kd_fraction, family_of, dependency_of)


def _single_conditions(world: SimulationWorld, screen: _Screen) -> _Conditions:
    """One ``"A+ctrl"`` condition per screened gene, in train, val, test order."""
    conditions = _Conditions()
    for split in ("train", "val", "test"):
        for gene in screen.gene_split[split]:
            conditions.add(
                f"{world.genes[gene]}+ctrl",
                screen.single_shift(world, gene),
                split,
                "train" if split == "train" else "single_unseen",
            )
    return conditions


def _interaction(
    world: SimulationWorld,
    additive: np.ndarray,
    direct: np.ndarray,
    ctrl_expected: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    """A non-additive double's shift and its kind (synergy, buffering or neomorphic)."""
    downstream = additive - direct
    kind = str(rng.choice(_INTERACTIONS))
    if kind != "neomorphic" and np.abs(downstream).max() < 0.3:
        kind = "neomorphic"  # nothing downstream to amplify or buffer
    if kind == "synergy":
        return direct + 1.8 * downstream, kind
    if kind == "buffering":
        return direct + 0.3 * downstream, kind
    untouched = np.flatnonzero((np.abs(additive) < 1e-9) & (ctrl_expected >= 0.5))
    hit = rng.choice(untouched, min(untouched.size, 12), replace=False)
    extra = np.zeros(world.n_genes)
    extra[hit] = rng.choice([-1.0, 1.0], hit.size) * rng.uniform(0.8, 1.6, hit.size)
    return additive + extra, kind


def _add_double_conditions(
    conditions: _Conditions,
    world: SimulationWorld,
    screen: _Screen,
    ctrl_expected: np.ndarray,
    rng: np.random.Generator,
    *,
    n_single: int,
    n_double: int,
    nonadditive_fraction: float,
) -> None:
    """Plan the ``"A+B"`` doubles, pick the non-additive ones and add them to ``conditions``."""
    doubles = _plan_doubles(screen.gene_split, n_double, rng)
    if len(doubles) < n_double:
        raise ValueError(
            f"simulate_perturbation: could place only {len(doubles)} of n_double={n_double} "
            f"distinct doubles with n_single={n_single} perturbed genes; raise n_single"
        )
    n_nonadd = round(nonadditive_fraction * len(doubles))
    nonadd_idx = set(rng.choice(len(doubles), n_nonadd, replace=False).tolist())
    for k, (a, b, split, subgroup) in enumerate(doubles):
        direct = np.zeros(world.n_genes)
        direct[[a, b]] = [np.log(screen.kd_fraction[a]), np.log(screen.kd_fraction[b])]
        additive = screen.single_shift(world, a) + screen.single_shift(world, b)
        shift = additive
        name = f"{world.genes[a]}+{world.genes[b]}"
        if k in nonadd_idx:
            shift, conditions.nonadditive[name] = _interaction(
                world, additive, direct, ctrl_expected, rng
            )
        conditions.add(name, shift, split, subgroup)


def _draw_screen_cells(
    world: SimulationWorld,
    screen: _Screen,
    conditions: _Conditions,
    rng: np.random.Generator,
    *,
    n_ctrl_cells: int,
    n_cells_per_condition: int,
    activity_sd: float,
    tf_sd: float,
    library_sd: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Cells, control then each condition: condition code (-1 = control) and raw counts."""
    n_cond = len(conditions.names)
    cond_code = np.repeat(np.arange(-1, n_cond), [n_ctrl_cells] + [n_cells_per_condition] * n_cond)
    n_cells = cond_code.size
    _, log_ab = cell_states(
        world, np.tile(screen.activity, (n_cells, 1)), rng, activity_sd=activity_sd, tf_sd=tf_sd
    )
    all_shifts = np.vstack([np.zeros(world.n_genes), *conditions.shifts])
    log_ab = log_ab + all_shifts[cond_code + 1]
    counts = sample_nb(expected_counts(world, log_ab, rng, library_sd), world.theta, rng)
    return cond_code, counts


def _screen_obs(
    conditions: _Conditions, cond_code: np.ndarray, counts: np.ndarray, cell_type: str
) -> pd.DataFrame:
    names = conditions.names
    n_cells = cond_code.size
    labels = np.array(["ctrl", *names], dtype=object)[cond_code + 1]
    split_of = np.array(["train", *conditions.splits], dtype=object)[cond_code + 1]
    subgroup_of = np.array(["ctrl", *conditions.subgroups], dtype=object)[cond_code + 1]
    obs = obs_frame(n_cells)
    obs["condition"] = pd.Categorical(labels, categories=["ctrl", *names])
    obs["condition_name"] = pd.Categorical(
        [f"{cell_type}_ctrl_1" if c == "ctrl" else f"{cell_type}_{c}_1+1" for c in ["ctrl", *names]]
    )[cond_code + 1]
    obs["control"] = (cond_code < 0).astype(np.int64)
    obs["cell_type"] = pd.Categorical([cell_type] * n_cells)
    obs["batch"] = pd.Categorical(["batch0"] * n_cells)
    obs["split"] = pd.Categorical(split_of, categories=["train", "val", "test"])
    obs["subgroup"] = pd.Categorical(subgroup_of)
    obs["n_counts"] = counts.sum(axis=1).astype(np.float32)
    return obs


def _screen_truth(
    world: SimulationWorld, screen: _Screen, conditions: _Conditions, ctrl_log: np.ndarray
) -> dict[str, Any]:
    """The ground-truth part of ``uns["simulation"]``: conditions, true effects, knockdowns."""
    shifts = conditions.shifts
    ctrl_norm = log1p_normalised(np.exp(ctrl_log))
    cond_log = ctrl_log + np.vstack(shifts) if shifts else np.zeros((0, world.n_genes))
    true_delta = log1p_normalised(np.exp(cond_log)) - ctrl_norm
    return {
        "conditions": conditions.names,
        "condition_split": conditions.splits,
        "condition_subgroup": conditions.subgroups,
        "ctrl_mean": ctrl_norm,
        "true_delta": true_delta,
        "true_logfc": np.vstack(shifts) if shifts else np.zeros((0, world.n_genes)),
        "nonadditive": {
            "condition": list(conditions.nonadditive),
            "kind": list(conditions.nonadditive.values()),
        },
        "knockdown_fraction": {world.genes[g]: float(f) for g, f in screen.kd_fraction.items()},
        "dependency": {world.genes[g]: float(d) for g, d in screen.dependency_of.items()},
        "family": {world.genes[g]: world.program_names[p] for g, p in screen.family_of.items()},
        "gene_split": {k: [world.genes[g] for g in v] for k, v in screen.gene_split.items()},
    }


def simulate_perturbation(
    world: SimulationWorld | None = None,
    *,
    n_ctrl_cells: int = 800,
    n_cells_per_condition: int = 40,
    n_single: int = 30,
    n_double: int = 15,
    seed: int = 0,
    knockdown_range: tuple[float, float] = (0.05, 0.3),
    dependency_range: tuple[float, float] = (0.3, 0.7),
    nonadditive_fraction: float = 0.35,
    test_gene_fraction: float = 0.25,
    val_gene_fraction: float = 0.1,
    activity_sd: float = 0.1,
    tf_sd: float = 0.2,
    library_sd: float = 0.3,
    cell_type: str = "sim_k562",
) -> ad.AnnData:
    """Simulate a Perturb-seq screen of single and double knockdowns in one cell line.

    The screen targets gene families: about four expressed members (master-regulator TFs
    first, then other members) of each of several gene programs. A knockdown of gene A
    multiplies A's abundance by a fraction ``f`` drawn from ``knockdown_range`` and lowers
    the activity of A's program by ``activity * dependency * log(f)`` (``dependency`` drawn
    from ``dependency_range``; the program needs its members, like a complex its subunits);
    both changes propagate through the world's network. Members of one family therefore
    respond alike (the program's signature, plus a TF's own targets), and families differ.
    Doubles are the sum of their singles' log-abundance shifts, except a
    ``nonadditive_fraction`` of them that get an interaction: ``synergy`` (downstream
    effects x1.8), ``buffering`` (x0.3) or ``neomorphic`` (extra effects on genes neither
    single touches).

    Splits follow GEARS' "simulation" split: perturbed genes are divided into train, val and
    test genes; singles go to their gene's split; test (val) doubles combine test (val) genes
    with train genes so that 0, 1 or 2 of their genes are seen in training (``subgroup``
    ``combo_seen0/1/2``; unseen singles are ``single_unseen``); control cells and doubles of
    two train genes are ``train`` (subgroup ``"ctrl"`` / ``"train"``). A seen gene of a test
    double always has its single in train. Held-out genes are spread over the families and
    every family keeps at least one training member, so an unseen gene always has a relative
    seen in training (what GO-graph methods such as GEARS exploit); the family of a gene is
    its program, which methods see in ``uns["simulation"]["programs"]``.

    Parameters
    ----------
    world
        Simulation world; None uses ``make_world()``.
    n_ctrl_cells
        Number of control cells.
    n_cells_per_condition
        Cells per perturbation.
    n_single
        Number of perturbed genes (each has a single-gene condition ``"A+ctrl"``).
    n_double
        Number of double perturbations ``"A+B"`` (genes taken from the single genes).
    seed
        Seed of this data set.
    knockdown_range
        Range of the remaining-abundance fraction after knockdown.
    dependency_range
        Range of a program's dependency on a perturbed member: the program's activity
        changes by ``activity * dependency * log(fraction)`` when the member is knocked down.
    nonadditive_fraction
        Fraction of doubles with an interaction term.
    test_gene_fraction, val_gene_fraction
        Fractions of perturbed genes never perturbed in training (test / validation).
    activity_sd, tf_sd, library_sd
        Cell-to-cell variation (as in :func:`~benchmark.simulate.simulate_celltypes`).
    cell_type
        Name of the simulated cell line.

    Returns
    -------
    anndata.AnnData
        ``X`` raw counts (CSR float32); obs ``condition`` (``"ctrl"``, ``"A+ctrl"``,
        ``"A+B"``), ``condition_name``, ``control``, ``cell_type``, ``batch``, ``split``,
        ``subgroup``, ``n_counts``; var ``gene_name``, ``is_tf``; ``uns["simulation"]``
        with the network, the true effects (``conditions``, ``true_delta``: conditions x
        genes change of log1p(normalised) expected expression vs control;
        ``true_logfc``: the same in natural-log abundance), ``nonadditive`` doubles,
        ``knockdown_fraction``, ``dependency``, ``family`` (program of each perturbed
        gene), ``gene_split`` and parameters.
    """
    world = resolve_world(world)
    _check_screen_args(n_single, n_double, n_ctrl_cells, n_cells_per_condition)
    rng = stream_rng(STREAM_PERTURBATION, seed)
    activity = np.asarray(world.perturbation_activity, dtype=float)
    ctrl_log = world.log_abundance(activity)
    ctrl_expected = world.library_size * softmax(ctrl_log)

    # The steps draw from one stream in this order: screen, doubles, cells.
    screen = _draw_screen(
        world,
        activity,
        ctrl_expected,
        rng,
        n_single=n_single,
        test_gene_fraction=test_gene_fraction,
        val_gene_fraction=val_gene_fraction,
        knockdown_range=knockdown_range,
        dependency_range=dependency_range,
    )
    conditions = _single_conditions(world, screen)
    _add_double_conditions(
        conditions,
        world,
        screen,
        ctrl_expected,
        rng,
        n_single=n_single,
        n_double=n_double,
        nonadditive_fraction=nonadditive_fraction,
    )
    cond_code, counts = _draw_screen_cells(
        world,
        screen,
        conditions,
        rng,
        n_ctrl_cells=n_ctrl_cells,
        n_cells_per_condition=n_cells_per_condition,
        activity_sd=activity_sd,
        tf_sd=tf_sd,
        library_sd=library_sd,
    )

    obs = _screen_obs(conditions, cond_code, counts, cell_type)
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var_frame(world))
    adata.uns["simulation"] = {
        "generator": "simulate_perturbation",
        "seed": int(seed),
        **world_uns(world),
        "params": {
            "n_ctrl_cells": n_ctrl_cells,
            "n_cells_per_condition": n_cells_per_condition,
            "n_single": n_single,
            "n_double": n_double,
            "knockdown_range": list(knockdown_range),
            "dependency_range": list(dependency_range),
            "nonadditive_fraction": nonadditive_fraction,
            "test_gene_fraction": test_gene_fraction,
            "val_gene_fraction": val_gene_fraction,
            "activity_sd": activity_sd,
            "tf_sd": tf_sd,
            "library_sd": library_sd,
            "normalise_target_sum": NORMALISE_TARGET_SUM,
        },
        **_screen_truth(world, screen, conditions, ctrl_log),
    }
    return adata
