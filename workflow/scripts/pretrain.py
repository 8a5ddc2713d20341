"""Pre-train the scGPT model the tasks consume (rule pretrain)."""

from benchmark.logs import job_logging
from benchmark.transfer.pretraining import pretrain_checkpoint

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    pretrain_checkpoint(
        snakemake.input[0],
        snakemake.params.out_dir,
        snakemake.params.work_dir,
        settings=snakemake.params.settings,
        threads=snakemake.threads,
        processes=max(1, snakemake.resources.gpu),
    )
