"""Aggregate the transfer series' runs into results/tables/transfer.{csv,md} (rule transfer_table)."""

from benchmark.logs import job_logging
from benchmark.transfer.report import write_transfer_table

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    write_transfer_table(
        snakemake.input,
        snakemake.params.section,
        snakemake.output.csv,
        snakemake.output.md,
        paper_table=snakemake.params.paper,
        notes=snakemake.params.section.get("notes", []),
    )
