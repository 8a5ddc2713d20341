"""Judge the claims on the run's tables: <results>/claims.{csv,md} (rule claims)."""

from pathlib import Path

from benchmark.claims import build_ledger
from benchmark.claims_text import write_ledger
from benchmark.logs import job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    tables = dict(zip(snakemake.params.tasks, snakemake.input.tables, strict=True))
    transfer = snakemake.params.transfer
    ledger = build_ledger(
        tables,
        budget_limited=snakemake.params.budget_limited,
        data_kinds=snakemake.params.data_kinds,
        # The transfer series is its own target (not part of `all`): read when it has run.
        transfer_csv=transfer if Path(transfer).exists() else None,
        # Rows of the full-budget target (issue 27), where it has run, replace the demo's.
        full_budget={task: Path(snakemake.params.full_budget) / f"{task}.csv" for task in tables},
    )
    write_ledger(ledger, snakemake.output.csv, snakemake.output.md)
