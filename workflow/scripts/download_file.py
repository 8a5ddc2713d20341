"""Download one registry file with checksum verification (rule download_file)."""

from benchmark.logs import job_logging
from benchmark.sources.download import download

snakemake = globals()["snakemake"]
source = snakemake.params.source
with job_logging(snakemake.log[0]):
    download(
        source["url"],
        snakemake.output[0],
        sha256=source.get("sha256"),
        size=source.get("size"),
        file_format=source.get("format"),
    )
