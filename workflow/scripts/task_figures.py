"""Draw a task's figures for one dataset (rule task_figures)."""

from pathlib import Path

from benchmark.logs import job_logging
from benchmark.tasks import get_task

snakemake = globals()["snakemake"]
out_dir = Path(snakemake.output[0])
out_dir.mkdir(parents=True, exist_ok=True)
with job_logging(snakemake.log[0]):
    task = get_task(snakemake.wildcards.task)
    run_dirs = [Path(p).parent for p in snakemake.input.runs]
    task.figures(run_dirs, Path(snakemake.input.dataset), out_dir)
