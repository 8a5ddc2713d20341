"""Assemble the pre-training corpus from the training cells of the demo datasets."""

from benchmark.logs import job_logging
from benchmark.sources.corpus import build_pretraining_corpus

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    build_pretraining_corpus(snakemake.input, snakemake.output[0])
