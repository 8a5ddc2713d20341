"""Fetch a released scGPT checkpoint from the registry (rule fetch_checkpoint)."""

from benchmark.logs import job_logging
from benchmark.sources.checkpoints import fetch_checkpoint

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    fetch_checkpoint(snakemake.params.source, snakemake.params.out_dir)
