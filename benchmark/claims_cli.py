"""Rebuild the claim ledger from a run's tables and the README's results block from it.

    .venv/bin/python -m benchmark.claims_cli                    # <results>/claims.{csv,md}
    .venv/bin/python -m benchmark.claims_cli --readme README.md # and the README's block
    .venv/bin/python -m benchmark.claims_cli --check README.md  # exit 1 if the block differs

The workflow's rule ``claims`` writes the same ledger after the tables; this command does it
for tables that exist without rerunning the workflow (e.g. the committed demo tables' CSVs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmark.claims import build_ledger
from benchmark.claims_text import readme_block, replace_readme_block, write_ledger
from benchmark.io import write_text
from benchmark.yamlfile import load_yaml


def ledger_for_config(configfile: str | Path) -> pd.DataFrame:
    """The ledger of the tables under the config's ``results_dir`` (budget marks from the config).

    Raises
    ------
    FileNotFoundError
        Naming every task table the config plans that is missing.
    """
    from benchmark.workflow import WorkflowPlan, validate_config

    config = load_yaml(configfile)
    validate_config(config, Path(__file__).resolve().parents[1] / "config" / "schema.yaml")
    plan = WorkflowPlan.from_config(config)
    tables = {task: Path(plan.results_dir) / "tables" / f"{task}.csv" for task in plan.tasks}
    missing = [str(p) for p in tables.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{configfile}: task tables missing (run the workflow): {missing}")
    transfer = Path(plan.results_dir) / "tables" / "transfer.csv"
    full = Path(plan.results_dir) / "full_budget" / "tables"  # as the rule claims reads it
    return build_ledger(
        tables,
        budget_limited={task: plan.budget_limited(task) for task in plan.tasks},
        data_kinds=plan.data_kinds(),
        transfer_csv=transfer if transfer.exists() else None,
        full_budget={task: full / f"{task}.csv" for task in plan.tasks},
    )


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--readme", help="rewrite this README's claims block from the ledger")
    parser.add_argument("--check", help="exit 1 if this README's block differs from the ledger")
    args = parser.parse_args(argv)
    results = Path((load_yaml(args.configfile) or {}).get("results_dir", "results"))
    if args.check:
        ledger = pd.read_csv(results / "claims.csv")
        text = Path(args.check).read_text()
        if replace_readme_block(text, readme_block(ledger)) != text:
            print(
                f"{args.check}: claims block differs from {results / 'claims.csv'}", file=sys.stderr
            )
            return 1
        return 0
    ledger = ledger_for_config(args.configfile)
    write_ledger(ledger, results / "claims.csv", results / "claims.md")
    print(f"[claims] {results / 'claims.md'}, {results / 'claims.csv'}", file=sys.stderr)
    if args.readme:
        # Re-read what was written: the README block must equal what the CSV gives back.
        block = readme_block(pd.read_csv(results / "claims.csv"))
        write_text(replace_readme_block(Path(args.readme).read_text(), block), args.readme)
        print(f"[claims] {args.readme}: claims block rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
