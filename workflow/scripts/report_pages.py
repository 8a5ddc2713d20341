"""Write the report's comparison and provenance pages (rule report_pages)."""

from benchmark.logs import job_logging
from benchmark.report import write_paper_comparison, write_provenance

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]):
    tables = dict(zip(snakemake.params.tasks, snakemake.input.tables, strict=True))
    write_paper_comparison(tables, snakemake.output.comparison)
    write_provenance(snakemake.input.runs, snakemake.output.provenance)
