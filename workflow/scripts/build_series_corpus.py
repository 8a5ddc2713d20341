"""Write one transfer-series model's pre-training corpus (rule build_series_corpus)."""

from benchmark.logs import job_logging
from benchmark.transfer.series import build_series_corpus

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    build_series_corpus(
        snakemake.input,
        snakemake.output[0],
        held_out=snakemake.params.pool.get("held_out"),
        cells=snakemake.params.model.get("cells"),
        tissues=snakemake.params.model.get("tissues"),
        seed=snakemake.params.pool.get("seed", 0),
    )
