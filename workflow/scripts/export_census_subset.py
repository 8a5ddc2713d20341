"""Export a nested census subset as pre-training shards (rule export_census_subset)."""

from benchmark.logs import job_logging
from benchmark.sources.census import export_census_subset

snakemake = globals()["snakemake"]
spec = snakemake.params.spec
with job_logging(snakemake.log[0]):
    export_census_subset(
        snakemake.output[0],
        census=snakemake.params.census,
        partitions=spec.get("partitions", "whole_human"),
        cells=spec.get("cells"),
        seed=spec.get("seed", 0),
    )
