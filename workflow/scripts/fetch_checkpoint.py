"""Fetch a released scGPT checkpoint from the registry (rule fetch_checkpoint)."""

from benchmark.checkpoints import fetch_checkpoint
from benchmark.logs import job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    fetch_checkpoint(snakemake.params.source, snakemake.params.out_dir)
