"""The report's landing page (rule report_overview) or one task's page (rule task_page)."""

from benchmark.logs import job_logging
from benchmark.overview import write_overview, write_task_page
from benchmark.tasks import get_task

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    if snakemake.rule == "task_page":
        task = snakemake.wildcards.task
        write_task_page(task, snakemake.input.table, get_task(task).metrics, snakemake.output[0])
    else:
        tasks = snakemake.params.tasks
        write_overview(
            dict(zip(tasks, snakemake.input.tables, strict=True)),
            {task: get_task(task).metrics for task in tasks},
            snakemake.input.claims,
            snakemake.output.page,
            snakemake.output.fragment,
        )
