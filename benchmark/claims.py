"""The claim ledger: each tested claim of the paper (and its critics) with a computed verdict.

The claims and their rules' settings live in ``benchmark/paper/claims.yaml``; the measured
numbers come from the task tables (``<results>/tables/<task>.csv``). A verdict is one of
:data:`VERDICTS`, always with the reason in words:

- ``reproduced``: on the paper's own dataset, the direction holds and every compared value is
  within ``agree`` of the published one;
- ``direction holds``: the claimed ordering holds beyond the noise margin (on other data, or
  with numbers that differ from the published ones);
- ``not reproduced``: a tie within the margin, or the opposite ordering;
- ``not comparable``: a row is missing, failed, undefined or budget-limited (a short-budget
  row never carries a verdict), or the table was not produced by this run.

The noise margin of a comparison is ``max(tolerance, 2 x the combined SE)`` with at least two
seeds on both sides, else ``max(tolerance, single_seed_margin)`` (one seed has no SE).
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.tables import paper_values
from benchmark.yamlfile import load_yaml

VERDICTS = ("reproduced", "direction holds", "not reproduced", "not comparable")
"""Every verdict the ledger gives, in the order the counts are reported."""

RULES = ("beats", "increases")
FULL_BUDGET = " [full budget]"
"""Appended to the label of a row taken from the full-budget target's tables."""
LEDGER_COLUMNS = [
    "id", "claim", "source", "by", "published", "dataset", "data", "metric", "measured",
    "verdict", "why", "rule",
]  # fmt: skip

_CLAIM_KEYS = {
    "id", "claim", "source", "by", "published", "rule", "task", "metric", "better", "than",
    "datasets", "higher_is_better", "or_ties", "paper_numbers", "literature", "note", "series",
    "transfer_task",
}  # fmt: skip
_REQUIRED = ("id", "claim", "source", "by", "published", "rule", "task", "metric")


@dataclass(frozen=True)
class Settings:
    """The verdict rules' thresholds (``settings:`` of the claims file).

    Attributes
    ----------
    tolerance
        A difference at or below this is a tie.
    single_seed_margin
        The margin when either side has a single seed (no standard error).
    agree
        On the paper's dataset: the largest ``|measured - published|`` that reads as reproduced.
    """

    tolerance: float = 0.02
    single_seed_margin: float = 0.07
    agree: float = 0.05


@dataclass(frozen=True)
class Claim:
    """One claim of the claims file (see its header for the fields)."""

    id: str
    claim: str
    source: str
    by: str
    published: str
    rule: str
    task: str
    metric: str
    better: str = ""
    than: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    higher_is_better: bool = True
    or_ties: bool = False
    paper_numbers: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    literature: str = ""
    note: str = ""
    series: str = ""
    transfer_task: str = ""


@dataclass(frozen=True)
class Measure:
    """A table row's value of one metric: mean and SE over ``n_seeds`` successful seeds.

    ``problem`` says why the value cannot carry a verdict (missing, failed, undefined,
    budget-limited); ``None`` when it can.
    """

    label: str
    mean: float
    se: float
    n_seeds: int
    problem: str | None = None
    partial: bool = False
    method: str = ""

    def text(self) -> str:
        """``label mean ± se (n seeds)``, or the label and what is wrong."""
        if math.isnan(self.mean):
            return f"{self.label} —"
        se = "" if math.isnan(self.se) else f" ± {self.se:.3f}"
        seeds = f"{self.n_seeds} seed" + ("" if self.n_seeds == 1 else "s")
        return f"{self.label} {self.mean:.3f}{se} ({seeds}{', partial' if self.partial else ''})"


def load_claims(path: str | os.PathLike[str] | None = None) -> tuple[Settings, list[Claim]]:
    """Read and check the claims file (default: the packaged ``benchmark/paper/claims.yaml``).

    Raises
    ------
    ValueError
        Naming the file, the claim and the key that is wrong, with what was expected.
    """
    if path is None:
        ref = importlib.resources.files("benchmark") / "paper" / "claims.yaml"
        with importlib.resources.as_file(ref) as packaged:
            return load_claims(packaged)
    doc = load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise ValueError(f"{path}: expected a mapping with a list under 'claims'")
    raw_settings = doc.get("settings") or {}
    unknown = set(raw_settings) - set(Settings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: settings: unknown key(s) {sorted(unknown)}")
    settings = Settings(**{k: float(v) for k, v in raw_settings.items()})
    claims, seen = [], set()
    for i, entry in enumerate(doc["claims"]):
        where = f"{path}: claims[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {entry!r}")
        where += f" ({entry.get('id', '?')})"
        missing = [k for k in _REQUIRED if not entry.get(k)]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        unknown = set(entry) - _CLAIM_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_CLAIM_KEYS)}"
            )
        if entry["rule"] not in RULES:
            raise ValueError(f"{where}: rule {entry['rule']!r}; expected one of {list(RULES)}")
        if entry["rule"] == "beats" and not (entry.get("better") and entry.get("than")):
            raise ValueError(f"{where}: rule beats needs 'better' and a non-empty 'than'")
        if entry["rule"] == "increases" and not (
            entry.get("series") and entry.get("transfer_task")
        ):
            raise ValueError(f"{where}: rule increases needs 'series' and 'transfer_task'")
        if entry["id"] in seen:
            raise ValueError(f"{where}: id {entry['id']!r} given twice")
        seen.add(entry["id"])
        values = dict(entry)
        values["than"] = tuple(entry.get("than") or ())
        values["datasets"] = tuple(entry.get("datasets") or ())
        claims.append(Claim(**values))
    return settings, claims


def measure(
    table: pd.DataFrame | None,
    dataset: str,
    method: str,
    metric: str,
    budget_limited: Mapping[str, str] | None = None,
) -> Measure:
    """The ``metric`` of ``method`` on ``dataset`` in a task table, with what stops its use.

    Parameters
    ----------
    table
        The task table (:func:`benchmark.tables.write_task_table`'s CSV), or ``None``.
    budget_limited
        Method -> why its budget is short (the task's ``budget_limited`` config key); the
        table's own ``budget_limited`` column counts too.
    """
    budget_limited = budget_limited or {}
    rows = (
        table[(table["dataset"] == dataset) & (table["method"] == method)]
        if table is not None
        else []
    )
    if len(rows) == 0:
        return Measure(
            method, math.nan, math.nan, 0, f"{method} not run on {dataset}", method=method
        )
    row = rows.iloc[0]
    full = row.get("full_budget") is True or row.get("full_budget") == 1
    label = str(row.get("label", method)) + (FULL_BUDGET if full else "")
    mean = float(row[metric]) if metric in row and not pd.isna(row[metric]) else math.nan
    se_value = row.get(f"{metric}_se", math.nan)
    se = float(se_value) if not pd.isna(se_value) else math.nan
    n_seeds = int(row.get("n_seeds", 0) or 0)
    status = str(row.get("status", "ok"))
    problem = None
    # The config's marks describe the short-budget run, not the full-budget target's rows.
    budget = None if full else budget_limited.get(method)
    if budget is None and isinstance(row.get("budget_limited"), str) and row["budget_limited"]:
        budget = row["budget_limited"]
    if status == "failed":
        error = row.get("error")
        problem = f"{label} failed" + (f" ({str(error)[:120]})" if isinstance(error, str) else "")
    elif budget:
        problem = f"budget-limited: {label} ({budget})"
    elif metric not in row:
        problem = f"{metric} is not in the table (not computed by this run)"
    elif math.isnan(mean):
        why = row.get("undefined")
        problem = f"{label}: {metric} undefined" + (f" ({why})" if isinstance(why, str) else "")
    return Measure(label, mean, se, n_seeds, problem, partial=status == "partial", method=method)


def margin(a: Measure, b: Measure, settings: Settings) -> float:
    """The smallest difference between ``a`` and ``b`` that is not noise (module docstring)."""
    if min(a.n_seeds, b.n_seeds) < 2 or math.isnan(a.se) or math.isnan(b.se):
        return max(settings.tolerance, settings.single_seed_margin)
    return max(settings.tolerance, 2.0 * math.hypot(a.se, b.se))


def compare(
    better: Measure,
    other: Measure,
    settings: Settings,
    *,
    higher_is_better: bool = True,
    or_ties: bool = False,
) -> tuple[str, str]:
    """Does ``better`` beat ``other``? -> (``holds`` | ``tie`` | ``reversed`` | ``not comparable``, why)."""
    for side in (better, other):
        if side.problem:
            return "not comparable", side.problem
    diff = (better.mean - other.mean) * (1.0 if higher_is_better else -1.0)
    limit = margin(better, other, settings)
    text = f"{better.label} - {other.label} = {better.mean - other.mean:+.3f} (margin {limit:.3f})"
    if diff > limit:
        return "holds", text
    if diff < -limit:
        return "reversed", text
    return ("holds" if or_ties else "tie"), text


def judge_beats(
    claim: Claim,
    table: pd.DataFrame | None,
    settings: Settings,
    *,
    budget_limited: Mapping[str, str] | None = None,
    data_kinds: Mapping[str, str] | None = None,
    paper: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows of a ``beats`` claim: one per dataset of the table that has ``better``.

    A ``than`` method absent from a dataset (not planned there) is left out of that dataset's
    comparisons and named; a dataset with none of them is not comparable.
    """
    if table is None:
        return [_row(claim, "—", "", "", "not comparable", f"no {claim.task} table in this run")]
    datasets = [d for d in dict.fromkeys(table["dataset"]) if d in (claim.datasets or (d,))]
    datasets = [
        d for d in datasets if ((table["dataset"] == d) & (table["method"] == claim.better)).any()
    ]
    if not datasets:
        where = f" on {', '.join(claim.datasets)}" if claim.datasets else ""
        why = f"{claim.better} not run{where} in the {claim.task} table"
        return [_row(claim, "—", "", "", "not comparable", why)]
    rows = []
    for dataset in datasets:
        best = measure(table, dataset, claim.better, claim.metric, budget_limited)
        present = [
            m for m in claim.than if ((table["dataset"] == dataset) & (table["method"] == m)).any()
        ]
        others = [measure(table, dataset, m, claim.metric, budget_limited) for m in present]
        absent = [m for m in claim.than if m not in present]
        measured = "; ".join(m.text() for m in (best, *others))
        kind = (data_kinds or {}).get(dataset, "")
        if others:
            verdict, why = _beats_verdict(claim, dataset, best, others, settings, paper)
            if absent:
                why += f" ({', '.join(absent)} not run on {dataset})"
        else:
            verdict, why = "not comparable", f"none of {', '.join(claim.than)} run on {dataset}"
        if best.partial or any(o.partial for o in others):
            why += " (some seeds failed: partial rows)"
        rows.append(_row(claim, dataset, kind, measured, verdict, why))
    return rows


def _beats_verdict(
    claim: Claim,
    dataset: str,
    best: Measure,
    others: Sequence[Measure],
    settings: Settings,
    paper: pd.DataFrame | None,
) -> tuple[str, str]:
    outcomes = [
        compare(best, o, settings, higher_is_better=claim.higher_is_better, or_ties=claim.or_ties)
        for o in others
    ]
    blocked = [why for outcome, why in outcomes if outcome == "not comparable"]
    failed = [why for outcome, why in outcomes if outcome in ("tie", "reversed")]
    if failed:
        return "not reproduced", "; ".join(
            f"{'reversed' if o == 'reversed' else 'tie'}: {w}"
            for o, w in outcomes
            if o in ("tie", "reversed")
        ) + (f"; not comparable: {'; '.join(blocked)}" if blocked else "")
    if blocked:
        return "not comparable", "; ".join(dict.fromkeys(blocked))
    why = "; ".join(w for _, w in outcomes)
    published = _published(claim, dataset, [best, *others], paper)
    if not published:
        return "direction holds", why
    far = {m.label: (m.mean, v) for m, v in published if abs(m.mean - v) > settings.agree}
    if len(published) == len(others) + 1 and not far:
        return "reproduced", why + f"; all within {settings.agree} of the published values"
    detail = (
        ", ".join(f"{k} {a:.3f} vs {v:.3f}" for k, (a, v) in far.items())
        or "not every value published"
    )
    return "direction holds", why + f"; numbers differ from the published ones ({detail})"


def _published(
    claim: Claim, dataset: str, measures: Sequence[Measure], paper: pd.DataFrame | None
) -> list[tuple[Measure, float]]:
    """Published values of the compared rows on ``dataset`` (the claim's, then the paper table's)."""
    found: list[tuple[Measure, float]] = []
    numbers = claim.paper_numbers.get(dataset, {})
    if claim.literature:
        # A critic's numbers: benchmark/paper/literature.csv rows of that study, on the suite's
        # column (`ours`), matched on the method's label.
        lit = paper_values("literature.csv")
        paper = lit[
            (lit["task"] == claim.task)
            & (lit["ours"] == claim.metric)
            & lit["source"].str.contains(claim.literature, regex=False)
        ].rename(columns={"value": claim.metric, "method": "study_method", "label": "method"})
    for m in measures:
        label = m.label.removesuffix(FULL_BUDGET)
        if m.method in numbers:
            found.append((m, float(numbers[m.method])))
        elif paper is not None and claim.metric in paper:
            hit = paper[(paper["dataset"] == dataset) & (paper["method"] == label)]
            if len(hit) and not pd.isna(hit[claim.metric].iloc[0]):
                found.append((m, float(hit[claim.metric].iloc[0])))
    return found


def judge_increases(
    claim: Claim, transfer: pd.DataFrame | None, settings: Settings
) -> list[dict[str, Any]]:
    """Ledger rows of an ``increases`` claim on the transfer table (one per dataset).

    The series' models ordered by pre-training cells: the largest corpus must beat the
    smallest beyond the margin and no step may fall beyond it.
    """
    if transfer is None:
        why = "the transfer series is not part of this run (`snakemake transfer` writes it)"
        return [_row(claim, "—", "", "", "not comparable", why)]
    rows = transfer[
        (transfer["series"] == claim.series)
        & (transfer["task"] == claim.transfer_task)
        & (transfer["metric"] == claim.metric)
        & (transfer["model"] != "reference")
    ]
    if rows.empty:
        why = (
            f"no {claim.series} rows of {claim.transfer_task} {claim.metric} in the transfer table"
        )
        return [_row(claim, "—", "", "", "not comparable", why)]
    out = []
    for dataset, group in rows.groupby("dataset", sort=True):
        group = group.sort_values("cells")
        points = [
            Measure(
                f"{int(r['cells']):,} cells",
                float(r["mean"]),
                float(r["se"]) if not pd.isna(r["se"]) else math.nan,
                int(r["n_seeds"]),
                None
                if r["status"] == "ok" and not pd.isna(r["mean"])
                else f"{r['model']}: {r['status']}",
            )
            for _, r in group.iterrows()
        ]
        measured = "; ".join(p.text() for p in points)
        problems = [p.problem for p in points if p.problem]
        if problems or len(points) < 2:
            why = "; ".join(problems) or "fewer than two corpus sizes"
            out.append(_row(claim, str(dataset), "", measured, "not comparable", why))
            continue
        end, why_end = compare(points[-1], points[0], settings)
        steps = [compare(b, a, settings) for a, b in itertools.pairwise(points)]
        drops = [why for outcome, why in steps if outcome == "reversed"]
        if end == "holds" and not drops:
            verdict, why = "direction holds", why_end
        else:
            verdict = "not reproduced"
            why = ("largest vs smallest corpus: " + why_end) + (
                f"; falls: {'; '.join(drops)}" if drops else ""
            )
        out.append(_row(claim, str(dataset), "", measured, verdict, why))
    return out


def _row(
    claim: Claim, dataset: str, kind: str, measured: str, verdict: str, why: str
) -> dict[str, Any]:
    if claim.note:
        why = f"{why}. Note: {claim.note}"
    return {
        "id": claim.id,
        "claim": claim.claim,
        "source": claim.source,
        "by": claim.by,
        "published": claim.published,
        "dataset": dataset,
        "data": kind,
        "metric": claim.metric,
        "measured": measured,
        "verdict": verdict,
        "why": why,
        "rule": claim.rule + (" (or ties)" if claim.or_ties else ""),
    }


def data_kind(entry: Any, paper_datasets: set[str]) -> str:
    """What a dataset is, for the ledger's ``data`` column.

    Parameters
    ----------
    entry
        Its registry entry (:class:`benchmark.datasets.DatasetEntry`: ``name``, ``kind``,
        ``builder``, ``files``).
    paper_datasets
        The paper's datasets (:func:`paper_datasets`).

    Returns
    -------
    ``"paper data"``, ``"simulated demo, ground truth known"``, ``"real data, demo subset"``
    (scanpy's PBMC, or files committed with the project rather than downloaded) or
    ``"real data (not the paper's)"``.
    """
    if entry.name in paper_datasets:
        return "paper data"
    if entry.kind == "builtin":
        if str(getattr(entry, "builder", "") or "").startswith("benchmark.simulate"):
            return "simulated demo, ground truth known"
        return "real data, demo subset"
    files = tuple(getattr(entry, "files", ()) or ())
    local = [getattr(f, "path", None) and not getattr(f, "url", None) for f in files]
    if files and all(local):
        return "real data, demo subset"
    return "real data (not the paper's)"


def with_full_budget(table: pd.DataFrame, full: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` with its (dataset, method) rows replaced by the full-budget target's, if any.

    Replaced rows carry ``full_budget = True``: the ledger names them and does not apply the
    short-budget marks of the config to them (issue 27's full-budget target).
    """
    table = table.assign(full_budget=False)
    if full is None or full.empty:
        return table
    keys = set(zip(full["dataset"], full["method"], strict=True))
    kept = [(d, m) not in keys for d, m in zip(table["dataset"], table["method"], strict=True)]
    return pd.concat([table[kept], full.assign(full_budget=True)], ignore_index=True)


def paper_datasets() -> set[str]:
    """The paper's datasets: those of its tables and of later studies on them
    (``benchmark/paper/*.csv``) and those the paper configuration runs (``config/paper.yaml``).
    """
    from benchmark.tasks import available_tasks, get_task

    names: set[str] = set(paper_values("literature.csv")["dataset"])
    for task in available_tasks():
        table = get_task(task).paper_table
        if table:
            names |= set(paper_values(table)["dataset"])
    paper_config = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
    if paper_config.exists():  # a source checkout; an installed package has the tables only
        for section in (load_yaml(paper_config).get("tasks") or {}).values():
            names |= set(section.get("datasets") or ())
    return names


def data_kinds(registry: Any, datasets: Sequence[str]) -> dict[str, str]:
    """Dataset -> :func:`data_kind` for ``datasets`` of a registry (``load_registry``)."""
    published = paper_datasets()
    return {name: data_kind(registry.datasets[name], published) for name in datasets}


def build_ledger(
    tables: Mapping[str, str | os.PathLike[str]],
    *,
    claims: Sequence[Claim] | None = None,
    settings: Settings | None = None,
    budget_limited: Mapping[str, Mapping[str, str]] | None = None,
    data_kinds: Mapping[str, str] | None = None,
    transfer_csv: str | os.PathLike[str] | None = None,
    full_budget: Mapping[str, str | os.PathLike[str]] | None = None,
) -> pd.DataFrame:
    """Every claim judged on the run's tables: columns :data:`LEDGER_COLUMNS`.

    Parameters
    ----------
    tables
        Task -> its table CSV. A claim on a task not given is not comparable.
    claims, settings
        Default: the packaged claims file.
    budget_limited
        Task -> method -> reason (the config's ``tasks.<task>.budget_limited``).
    data_kinds
        Dataset -> :func:`data_kind`.
    transfer_csv
        The transfer series' table, when that target has run.
    full_budget
        Task -> the full-budget target's table (read when it exists): its rows replace the
        same (dataset, method) rows of ``tables`` (:func:`with_full_budget`).
    """
    from benchmark.tasks import get_task

    if claims is None or settings is None:
        file_settings, file_claims = load_claims()
        claims = file_claims if claims is None else claims
        settings = file_settings if settings is None else settings
    transfer = pd.read_csv(transfer_csv) if transfer_csv and Path(transfer_csv).exists() else None
    rows: list[dict[str, Any]] = []
    for claim in claims:
        if claim.rule == "increases":
            rows += judge_increases(claim, transfer, settings)
            continue
        table = pd.read_csv(tables[claim.task]) if claim.task in tables else None
        full = (full_budget or {}).get(claim.task)
        if table is not None and full is not None and Path(full).exists():
            table = with_full_budget(table, pd.read_csv(full))
        paper_table = get_task(claim.task).paper_table
        rows += judge_beats(
            claim,
            table,
            settings,
            budget_limited=(budget_limited or {}).get(claim.task),
            data_kinds=data_kinds,
            paper=paper_values(paper_table) if paper_table else None,
        )
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def verdict_counts(ledger: pd.DataFrame) -> dict[str, int]:
    """Rows per verdict, in :data:`VERDICTS` order (zeros included)."""
    return {v: int((ledger["verdict"] == v).sum()) for v in VERDICTS}
