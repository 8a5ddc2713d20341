"""Run one registered method on one dataset for one seed (rule run_method)."""

from pathlib import Path

from threadpoolctl import threadpool_limits

from benchmark.logs import job_logging
from benchmark.runner import run_method

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with job_logging(snakemake.log[0]), threadpool_limits(snakemake.threads):
    run_method(
        wc.task,
        wc.method,
        wc.dataset,
        snakemake.input.dataset,
        Path(snakemake.output.run).parent,
        seed=int(wc.seed),
        params=snakemake.params.params,
        checkpoint=snakemake.params.checkpoint,
        threads=snakemake.threads,
    )
