"""Download (or copy, for a local ``path:`` source) one registry file with checksum
verification (rule download_file)."""

from benchmark.logs import job_logging
from benchmark.sources.download import download
from benchmark.sources.local import copy_local

snakemake = globals()["snakemake"]
source = snakemake.params.source
with job_logging(snakemake.log[0]):
    if source.get("path"):
        copy_local(
            source["path"], snakemake.output[0], sha256=source["sha256"], size=source.get("size")
        )
    else:
        download(
            source["url"],
            snakemake.output[0],
            sha256=source.get("sha256"),
            size=source.get("size"),
            file_format=source.get("format"),
        )
