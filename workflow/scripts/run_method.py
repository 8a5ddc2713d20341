"""Run one registered method on one dataset for one seed (rule run_method).

The method runs in a child process (benchmark.runner.run_method_isolated): a method killed
from outside still ends as a failed row with its reason.
"""

from pathlib import Path

from benchmark.logs import job_logging
from benchmark.runner import run_method_isolated

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with job_logging(snakemake.log[0]):
    run_method_isolated(
        wc.task,
        wc.method,
        wc.dataset,
        snakemake.input.dataset,
        Path(snakemake.output.run).parent,
        seed=int(wc.seed),
        params=snakemake.params.params,
        checkpoint=snakemake.params.checkpoint,
        threads=snakemake.threads,
        metric_options=snakemake.params.metric_options,
        # What the job got, recorded in run.json: the plan redoes a failed run when they change.
        resources={
            "mem_mb": snakemake.resources.mem_mb,
            "runtime": snakemake.resources.runtime,
            "gpu": snakemake.resources.gpu,
            "threads": snakemake.threads,
        },
        log_path=snakemake.log[0],
    )
