"""Aggregate a task's runs into results/tables/<task>.{csv,md} (rule task_table)."""

from benchmark.logs import job_logging
from benchmark.tables import write_task_table
from benchmark.tasks import get_task

snakemake = globals()["snakemake"]
task = get_task(snakemake.wildcards.task)
with job_logging(snakemake.log[0]):
    write_task_table(
        snakemake.input.runs,  # the planned runs only (not the folders beside them)
        task.metrics,
        snakemake.output.csv,
        snakemake.output.md,
        title=f"{task.name}: scgpt-bench vs the paper",
        budget_limited=snakemake.params.budget_limited,
        paper_table=task.paper_table,
        breakdown=task.breakdown,
        task=task.name,
    )
