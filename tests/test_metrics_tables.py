"""Tables state the scoring definitions the runs used, and never mix two silently."""

from __future__ import annotations

import json

from benchmark import tables


def _run(tmp_path, name: str, scores: dict) -> str:
    folder = tmp_path / name
    folder.mkdir()
    run = {"task": "integration", "dataset": "d", "method": name, "seed": 0, "status": "ok"}
    run.update({"wall_seconds": 1.0, "peak_memory_mb": 1.0})
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "scores.json").write_text(json.dumps({"status": "ok", **scores}))
    return str(folder / "run.json")


def test_table_states_clustering_and_nan_policy(tmp_path) -> None:
    runs = [
        _run(tmp_path, "a", {"nmi": 0.5, "clustering": "louvain", "nan_policy": "zero"}),
        _run(tmp_path, "b", {"nmi": 0.6, "clustering": "louvain", "nan_policy": "zero"}),
    ]
    tables.write_task_table(runs, ["nmi"], tmp_path / "t.csv", tmp_path / "t.md", title="t")
    text = (tmp_path / "t.md").read_text()
    assert "- NMI/ARI clustering: `clustering: louvain` (scib 1.0.3 (the paper's)" in text
    assert "- Undefined Pearson correlations: `nan_policy: zero` (an undefined" in text


def test_mixed_settings_are_flagged(tmp_path) -> None:
    runs = [
        _run(tmp_path, "a", {"nmi": 0.5, "clustering": "louvain"}),
        _run(tmp_path, "b", {"nmi": 0.6, "clustering": "leiden"}),
    ]
    notes = tables.metric_definitions(tables.collect_runs(runs))
    assert notes == [
        "NMI/ARI clustering: MIXED across runs (leiden, louvain): rows scored with different "
        "`clustering` settings are not comparable."
    ]
    assert tables.metric_definitions(tables.collect_runs([_run(tmp_path, "c", {"x": 1})])) == []
