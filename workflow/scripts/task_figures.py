"""Draw a task's figures for one dataset (rule task_figures).

A dataset whose standardisation failed has no figures: its folder stays empty and the log
holds the recorded error (its table rows are marked failed), as a failed method leaves a
failed row rather than a failed workflow.
"""

import logging
from pathlib import Path

from benchmark.failed_datasets import standardisation_failure
from benchmark.logs import job_logging
from benchmark.tasks import get_task

snakemake = globals()["snakemake"]
out_dir = Path(snakemake.output[0])
out_dir.mkdir(parents=True, exist_ok=True)
with job_logging(snakemake.log[0]):
    failure = standardisation_failure(snakemake.input.dataset)
    if failure is not None:
        logging.getLogger("benchmark.figures").error(
            "no figures for %s: its standardisation failed (%s); see %s",
            snakemake.wildcards.dataset,
            failure.get("error"),
            failure.get("log") or snakemake.input.dataset,
        )
    else:
        task = get_task(snakemake.wildcards.task)
        run_dirs = [Path(p).parent for p in snakemake.input.runs]
        task.figures(run_dirs, Path(snakemake.input.dataset), out_dir)
