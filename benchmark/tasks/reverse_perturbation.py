"""Reverse perturbation prediction (scGPT paper, Fig. 3f-g).

Given an observed perturbed cell state, which genes were perturbed? The task takes a subset
of a screen's target genes (the paper: 20 genes of Norman et al., so 20 singles + 190 pairs
= 210 candidate combinations), trains a method on a few observed combinations (39 in the
paper, a few more for validation) and asks it to rank all 210 candidates for each held-out
test state (7 in the paper). A test case counts as "correct" at top ``k`` when its exact
combination is among the first ``k`` candidates, and "relevant" when at least one of the first
``k`` candidates shares a gene with it.

Seven test cases are few, so the task draws ``n_splits`` random splits of the observed
combinations (each split: ``n_test`` test doubles, ``n_val`` validation and up to ``n_train``
training combinations) and calls the method once per split; scores are the mean over splits
with their standard error (``<metric>_split_se``). The splits of run seed ``s`` are drawn from
``numpy.random.default_rng([s, k])`` for split ``k``, so seeds give further splits.

Method contract: ``f(train, candidates, queries, *, seed, **params) -> pandas.DataFrame``:
``train`` is the log-normalised training data (control cells and the cells of the training
and validation combinations, obs ``condition`` and ``split``), ``candidates`` the candidate
condition names, ``queries`` an AnnData with one row per test state (its mean log-normalised
expression; ``obs_names`` are anonymous ids) and the result holds one score per query (rows)
and candidate (columns): higher = more likely the perturbation behind the query. The task
ranks the candidates by it.

Data: a standard perturbation dataset (obs ``condition``); its own split is not used.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from benchmark.io import read_json, write_csv
from benchmark.tasks.base import Task
from benchmark.tasks.perturbation import _strip_truth, condition_means, log_normalise
from contract.conditions import CTRL, format_condition, normalise_condition, parse_condition

log = logging.getLogger(__name__)

TOP_K: tuple[int, ...] = tuple(range(1, 9))
"""Ranks at which the paper reports correct and relevant rates (Fig. 3g: top 1 to 8)."""


# ----------------------------------------------------------------------------------------
# Candidates, subsets and splits
# ----------------------------------------------------------------------------------------


def candidate_conditions(genes: Sequence[str]) -> list[str]:
    """Every single and pairwise combination of ``genes``, as standard condition names.

    ``n`` genes give ``n + n (n - 1) / 2`` candidates (20 -> 210, 105 -> 5,565): singles
    first, then pairs, each group in sorted order.
    """
    genes = sorted(set(genes))
    singles = [format_condition([g]) for g in genes]
    pairs = [format_condition(p) for p in itertools.combinations(genes, 2)]
    return singles + pairs


def observed_conditions(adata: ad.AnnData, min_cells: int = 2) -> dict[str, str]:
    """Perturbed conditions with at least ``min_cells`` cells: standard name -> name in obs."""
    counts = adata.obs["condition"].astype(str).value_counts()
    out: dict[str, str] = {}
    for name, n in counts.items():
        if name == CTRL or n < min_cells:
            continue
        out.setdefault(normalise_condition(str(name)), str(name))
    return out


def select_gene_subset(observed: Sequence[str], n_genes: int) -> list[str]:
    """The ``n_genes`` target genes whose combinations are observed most often.

    Greedy: genes are added one at a time, each time the one that brings the most observed
    conditions whose genes are all chosen (pairs with a chosen gene count first, then the
    gene's single, then the number of pairs it appears in; ties by name). On a screen like
    Norman's this keeps the genes that were combined with each other, so that the subset has
    enough observed pairs to train on and to test with.

    Raises
    ------
    ValueError
        When the conditions perturb fewer than ``n_genes`` genes.
    """
    keys = [parse_condition(c) for c in observed]
    genes = sorted({g for k in keys for g in k})
    if len(genes) < n_genes:
        raise ValueError(
            f"reverse_perturbation: n_genes={n_genes} but the data perturbs only {len(genes)} genes"
        )
    pairs = [k for k in keys if len(k) == 2]
    singles = {k[0] for k in keys if len(k) == 1}
    degree = {g: sum(g in k for k in pairs) for g in genes}
    chosen: list[str] = []
    while len(chosen) < n_genes:
        taken = set(chosen)

        def gain(g: str, taken: set[str] = taken) -> tuple[int, int, int]:
            closed = sum(1 for k in pairs if g in k and (set(k) - {g}) <= taken)
            return (closed, int(g in singles), degree[g])

        best = max((g for g in genes if g not in taken), key=lambda g: (*gain(g), _neg(g)))
        chosen.append(best)
    return sorted(chosen)


def _neg(name: str) -> tuple[int, ...]:
    """Sort key that makes ``max`` prefer the alphabetically first name on ties."""
    return tuple(-ord(ch) for ch in name)


def draw_split(
    observed: Sequence[str],
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    rng: np.random.Generator,
) -> dict[str, list[str]]:
    """Draw test, validation and training combinations among the observed candidates.

    Test cases are pairs (the paper's queries are double perturbations: "correct" and
    "relevant" differ only for them); validation and training combinations are drawn from
    the rest (singles and pairs). Observed combinations beyond ``n_train + n_val + n_test``
    are left out, as in the paper's 39-combination training set.

    Raises
    ------
    ValueError
        When fewer than ``n_test`` pairs or fewer than ``n_val + 1`` other combinations are
        observed.
    """
    observed = sorted(observed)
    pairs = [c for c in observed if len(parse_condition(c)) == 2]
    if len(pairs) < n_test:
        raise ValueError(
            f"reverse_perturbation: n_test={n_test} test pairs requested but only "
            f"{len(pairs)} pairs of the gene subset are observed"
        )
    test = sorted(rng.choice(pairs, n_test, replace=False).tolist()) if n_test else []
    rest = [c for c in observed if c not in set(test)]
    if len(rest) < n_val + 1:
        raise ValueError(
            f"reverse_perturbation: {len(rest)} observed combinations left after the test "
            f"cases; need n_val={n_val} and at least one for training"
        )
    order = rng.permutation(len(rest))
    val = sorted(rest[i] for i in order[:n_val])
    train = sorted(rest[i] for i in order[n_val : n_val + n_train])
    return {"train": train, "val": val, "test": test}


# ----------------------------------------------------------------------------------------
# Ranking and scores
# ----------------------------------------------------------------------------------------


def rank_of_truth(scores: np.ndarray, truth: int) -> int:
    """1-based rank of candidate ``truth`` when candidates are ordered by descending score.

    Ties count against the truth (every candidate scored at least as high comes first), so a
    method that scores all candidates alike gets the last rank rather than credit. A NaN score
    ranks below every number.
    """
    values = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=float))
    target = values[truth]
    ahead = int(np.sum(values >= target)) - 1  # minus the truth itself
    return ahead + 1


def top_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best candidates (descending score; ties by candidate order)."""
    values = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=float))
    return np.argsort(-values, kind="stable")[:k]


def query_hits(
    scores: np.ndarray, candidates: Sequence[str], truth: str, ks: Sequence[int] = TOP_K
) -> dict[str, float]:
    """Correct/relevant flags at each ``k`` and the truth's rank for one query.

    ``top{k}_correct`` is 1 when the exact combination ranks within the first ``k`` (ties
    against it, see :func:`rank_of_truth`); ``top{k}_relevant`` is 1 when one of the first
    ``k`` candidates shares a gene with it (the exact one included).
    """
    candidates = list(candidates)
    if truth not in candidates:
        raise ValueError(f"query truth {truth!r} is not among the {len(candidates)} candidates")
    rank = rank_of_truth(scores, candidates.index(truth))
    genes = set(parse_condition(truth))
    out: dict[str, float] = {"rank": float(rank)}
    order = top_candidates(scores, max(ks))
    for k in ks:
        out[f"top{k}_correct"] = float(rank <= k)
        out[f"top{k}_relevant"] = float(
            rank <= k or any(genes & set(parse_condition(candidates[i])) for i in order[:k])
        )
    return out


def random_expectation(n_candidates: int, n_relevant: int, k: int) -> dict[str, float]:
    """Expected scores of a uniformly random ranking.

    The exact combination is in the first ``k`` with probability ``k / n``; at least one of
    ``n_relevant`` relevant candidates (those sharing a gene with the truth, itself included)
    is with probability ``1 - C(n - r, k) / C(n, k)``; the expected rank is ``(n + 1) / 2``
    (105.5 for the paper's 210 candidates).
    """
    n = n_candidates
    if not 0 < n_relevant <= n or not 0 < k <= n:
        raise ValueError(f"need 0 < n_relevant, k <= n_candidates; got {n_relevant}, {k}, {n}")
    return {
        "correct": k / n,
        "relevant": 1.0 - math.comb(n - n_relevant, k) / math.comb(n, k),
        "rank": (n + 1) / 2,
    }


def n_relevant(truth: str, candidates: Sequence[str]) -> int:
    """Number of candidates sharing a gene with ``truth`` (itself included)."""
    genes = set(parse_condition(truth))
    return sum(bool(genes & set(parse_condition(c))) for c in candidates)


# ----------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------


def _metric_names() -> tuple[str, ...]:
    return tuple(f"top{k}_{kind}" for kind in ("correct", "relevant") for k in TOP_K)


HEADLINE: tuple[str, ...] = (
    "top1_correct",
    "top1_relevant",
    "top8_correct",
    "top8_relevant",
    "mean_rank",
)
"""The table's metrics: the paper's two headline rates, their companions and the mean rank."""


@dataclass(frozen=True, kw_only=True)
class ReversePerturbationTask(Task):
    """Rank candidate perturbations for observed perturbed states (Fig. 3f-g).

    Parameters
    ----------
    genes
        The screen genes whose singles and pairs are the candidates (kept sorted); None
        chooses ``n_genes`` of them (:func:`select_gene_subset`).
    n_genes
        Genes chosen when ``genes`` is None (the paper: 20); ``len(genes)`` otherwise.
    n_train, n_val, n_test
        Combinations per split for training (at most), validation and test (paper: 39, -, 7).
    n_splits
        Random splits drawn per run seed.

    All are the config's ``tasks.reverse_perturbation.metrics`` (the evaluation design).
    """

    genes: Sequence[str] | None = None
    n_genes: int = 20
    n_train: int = 39
    n_val: int = 4
    n_test: int = 7
    n_splits: int = 5

    name = "reverse_perturbation"
    metrics = HEADLINE
    paper_table = "reverse_perturbation.csv"
    breakdown = (
        *(m for m in _metric_names() if m not in HEADLINE),
        *(f"{m}_split_se" for m in HEADLINE),
        "random_top1_relevant",
        "random_top8_correct",
    )
    required_obs = ("condition",)
    metric_options = ("genes", "n_genes", "n_train", "n_val", "n_test", "n_splits")

    def __post_init__(self) -> None:
        for key, low in (
            ("n_genes", 2),
            ("n_train", 1),
            ("n_val", 0),
            ("n_test", 1),
            ("n_splits", 1),
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ValueError(
                    f"reverse_perturbation task: metrics.{key} = {value!r}; expected an "
                    f"integer >= {low}"
                )
        genes = sorted(self.genes) if self.genes else None
        object.__setattr__(self, "genes", genes)  # frozen: normalised once, here
        if genes:
            object.__setattr__(self, "n_genes", len(genes))

    def options(self) -> dict[str, Any]:
        """The evaluation design, as recorded in the scores."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_metric_options(self, options: dict[str, Any] | None) -> ReversePerturbationTask:
        """A copy with the config's ``tasks.reverse_perturbation.metrics`` (the design).

        Setting ``n_genes`` without ``genes`` drops the genes this task has (the number
        then chooses them).

        Raises
        ------
        ValueError
            For a key other than :attr:`metric_options` or an invalid value.
        """
        options = self.check_metric_options(options)
        if "n_genes" in options and "genes" not in options:
            options["genes"] = None
        return super().with_metric_options(options)

    def prepare(self, adata: ad.AnnData, *, seed: int) -> dict[str, Any]:
        """Choose the gene subset, draw the splits and build each split's method inputs.

        Returns ``splits``: per split the method's ``args`` = ``(train, candidates, queries)``
        and ``truth`` (query id -> true condition); plus ``candidates``, ``genes``,
        ``normalisation`` and ``data`` (log-normalised).
        """
        if "condition" not in adata.obs:
            raise KeyError(
                f"reverse_perturbation: dataset lacks obs 'condition'; it has {list(adata.obs)}"
            )
        data, how = log_normalise(adata)
        data.obs["condition"] = data.obs["condition"].astype(str)
        if not (data.obs["condition"] == CTRL).any():
            raise ValueError("reverse_perturbation: dataset has no control cells ('ctrl')")
        observed = observed_conditions(data)
        if self.genes:
            missing = sorted(set(self.genes) - {g for c in observed for g in parse_condition(c)})
            if missing:
                raise ValueError(
                    f"reverse_perturbation: metrics.genes {missing} are not perturbed in the "
                    "dataset"
                )
            genes = list(self.genes)
        else:
            genes = select_gene_subset(list(observed), self.n_genes)
        candidates = candidate_conditions(genes)
        in_subset = [c for c in candidates if c in observed]
        log.info(
            "reverse_perturbation: %d genes, %d candidates, %d observed",
            len(genes),
            len(candidates),
            len(in_subset),
        )
        labels = data.obs["condition"].map(lambda c: CTRL if c == CTRL else normalise_condition(c))
        data.obs["condition"] = labels.astype(str).to_numpy()
        uns = _strip_truth(adata.uns, how)
        splits = []
        for k in range(self.n_splits):
            rng = np.random.default_rng([seed, k])
            split = draw_split(
                in_subset, n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, rng=rng
            )
            split_of = {c: s for s in ("train", "val") for c in split[s]}
            keep = data.obs["condition"].isin([CTRL, *split_of]).to_numpy()
            train = data[keep].copy()
            train.obs["split"] = pd.Categorical(
                [split_of.get(c, "train") for c in train.obs["condition"]],
                categories=["train", "val"],
            )
            train.uns = dict(uns)
            # Queries in a random order under anonymous ids: the id says nothing of the answer.
            order = rng.permutation(len(split["test"]))
            truth = {f"s{k}q{j}": split["test"][i] for j, i in enumerate(order)}
            queries = ad.AnnData(
                X=condition_means(data, list(truth.values())).astype(np.float32),
                obs=pd.DataFrame(index=pd.Index(list(truth), name="query")),
                var=pd.DataFrame(index=data.var_names.copy()),
            )
            splits.append(
                {
                    "args": (train, list(candidates), queries),
                    "truth": truth,
                    "split": split,
                }
            )
        return {
            "args": splits[0]["args"],
            "splits": splits,
            "candidates": candidates,
            "genes": genes,
            "n_observed": len(in_subset),
            "normalisation": how,
            "data": data,
        }

    def call(
        self, func: Callable[..., Any], inputs: dict[str, Any], *, seed: int, params: dict[str, Any]
    ) -> pd.DataFrame:
        """Call the method once per split; return all splits' scores, one row per query."""
        parts = []
        for split in inputs["splits"]:
            result = func(*split["args"], seed=seed, **params)
            parts.append(self.align(result, split["args"][2].obs_names, inputs["candidates"]))
        return pd.concat(parts, axis=0)

    @staticmethod
    def align(output: Any, queries: Sequence[str], candidates: Sequence[str]) -> pd.DataFrame:
        """Check a method's scores (queries x candidates) and order them as requested.

        Candidate columns may use either spelling of a condition (``"ctrl+A"``, ``"B+A"``).
        """
        if not isinstance(output, pd.DataFrame):
            raise TypeError(
                "a reverse_perturbation method must return a pandas DataFrame (queries x "
                f"candidates), got {type(output).__name__}"
            )
        frame = output.copy()
        frame.index = frame.index.astype(str)
        frame.columns = [normalise_condition(str(c)) for c in frame.columns]
        missing_rows = sorted(set(queries) - set(frame.index))
        missing_cols = sorted(set(candidates) - set(frame.columns))
        if missing_rows or missing_cols:
            raise ValueError(
                f"the method's scores lack queries {missing_rows[:5]} / candidates "
                f"{missing_cols[:5]} (of {len(queries)} queries, {len(candidates)} candidates)"
            )
        frame = frame.loc[list(queries), list(candidates)].astype(float)
        if np.isinf(frame.to_numpy()).any():
            raise ValueError("the method's scores hold infinite values")
        return frame

    def per_query(self, output: pd.DataFrame, inputs: Mapping[str, Any]) -> pd.DataFrame:
        """One row per (split, query): truth, its rank, correct/relevant flags per ``k``."""
        candidates = inputs["candidates"]
        rows = []
        for k, split in enumerate(inputs["splits"]):
            for query, truth in split["truth"].items():
                if query not in output.index:
                    raise ValueError(f"scores lack query {query!r} of split {k}")
                scores = output.loc[query, candidates].to_numpy(dtype=float)
                top = [candidates[i] for i in top_candidates(scores, 3)]
                rows.append(
                    {
                        "split": k,
                        "query": query,
                        "truth": truth,
                        **query_hits(scores, candidates, truth),
                        "n_relevant": n_relevant(truth, candidates),
                        "top3": ";".join(top),
                    }
                )
        return pd.DataFrame(rows)

    def save(self, output: Any, inputs: dict[str, Any], outdir: Path) -> list[Path]:
        """Write ``scores.csv`` (the method's scores) and ``per_query.csv`` (ranks and hits)."""
        outdir = Path(outdir)
        files = [outdir / "candidate_scores.csv", outdir / "per_query.csv"]
        write_csv(output, files[0])
        write_csv(self.per_query(output, inputs), files[1], index=False)
        return files

    def score(self, output: Any, inputs: dict[str, Any], *, seed: int) -> dict[str, Any]:
        """Rates over each split's test cases, then mean (and SE) over the splits.

        Also the random ranking's expectation on the same test cases
        (``random_top1_relevant``, ``random_top8_correct``) for reference.
        """
        del seed
        table = self.per_query(output, inputs)
        table["mean_rank"] = table["rank"]
        per_split = table.groupby("split").mean(numeric_only=True)
        n = len(inputs["candidates"])
        scores: dict[str, Any] = {}
        for metric in (*_metric_names(), "mean_rank"):
            values = per_split[metric].to_numpy(dtype=float)
            scores[metric] = float(values.mean())
            scores[f"{metric}_split_se"] = (
                float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else math.nan
            )
        rand1 = [random_expectation(n, r, 1)["relevant"] for r in table["n_relevant"]]
        scores["random_top1_relevant"] = float(np.mean(rand1))
        scores["random_top8_correct"] = random_expectation(n, 1, 8)["correct"]
        scores["n_candidates"] = n
        scores["n_queries"] = len(table)
        scores["n_observed"] = int(inputs["n_observed"])
        scores.update({f"design_{k}": v for k, v in self.options().items() if k != "genes"})
        scores["genes"] = ",".join(inputs["genes"])
        return scores

    def figures(self, run_dirs: list[Path], dataset_path: Path, out_dir: Path) -> list[Path]:
        """Top-k correct and relevant rates per method (Fig. 3g)."""
        from benchmark.plots.perturbation_space import plot_topk_curves

        curves: dict[str, dict[str, list[np.ndarray]]] = {}
        dataset = Path(dataset_path).stem
        for run_dir in map(Path, run_dirs):
            run_file, scores_file = run_dir / "run.json", run_dir / "scores.json"
            if not run_file.exists() or not scores_file.exists():
                continue
            run = read_json(run_file)
            if run.get("status") != "ok":
                continue
            scores = read_json(scores_file)
            dataset = run.get("dataset", dataset)
            entry = curves.setdefault(
                run.get("label", run["method"]), {"correct": [], "relevant": []}
            )
            for kind in ("correct", "relevant"):
                entry[kind].append(np.array([scores[f"top{k}_{kind}"] for k in TOP_K], float))
        if not curves:
            return []
        means = {
            label: {kind: np.mean(v, axis=0) for kind, v in entry.items()}
            for label, entry in sorted(curves.items())
        }
        path = Path(out_dir) / "topk_rates.png"
        return [
            plot_topk_curves(means, list(TOP_K), path, title=f"{dataset}: reverse perturbation")
        ]


TASK = ReversePerturbationTask()
"""The task contract: how the harness feeds a method, stores its output and scores it."""
