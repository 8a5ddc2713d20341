"""Build the standard AnnData of one dataset (rule standardise_dataset)."""

from benchmark.datasets import prepare_standard_dataset
from benchmark.logs import job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    prepare_standard_dataset(
        snakemake.wildcards.dataset,
        snakemake.output[0],
        raw_dir=snakemake.params.raw_dir,
        params=snakemake.params.builder_params,
        registry=snakemake.config.get("registry", "config/datasets.yaml"),
    )
