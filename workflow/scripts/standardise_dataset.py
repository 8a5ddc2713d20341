"""Build the standard AnnData of one dataset (rule standardise_dataset).

A dataset that cannot be built is recorded in the output instead of failing the job, so that
its task's other datasets still run and its table is written with this dataset's rows failed.
"""

from benchmark.datasets import load_registry
from benchmark.datasets.standardise import prepare_or_record_failure
from benchmark.logs import job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    prepare_or_record_failure(
        snakemake.wildcards.dataset,
        snakemake.output[0],
        log_path=snakemake.log[0],
        raw_dir=snakemake.params.raw_dir,
        params=snakemake.params.builder_params,
        registry=load_registry(
            snakemake.config.get("registry", "config/datasets.yaml"),
            extra=snakemake.config.get("registries") or [],
        ),
    )
