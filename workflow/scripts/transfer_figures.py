"""Figures of the transfer series (rule transfer_figures)."""

import pandas as pd

from benchmark.logs import job_logging
from benchmark.transfer.report import plot_transfer

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    plot_transfer(pd.read_csv(snakemake.input[0]), snakemake.output[0])
