# scgpt-bench: reproduce the scGPT paper and its baselines.
#   snakemake --cores 2                                  # the embedded demo (config/config.yaml)
#   snakemake --cores 8 --configfile config/paper.yaml   # the paper's datasets and checkpoints
from snakemake.utils import min_version

min_version("9.0")


# A file given with --configfile is the whole configuration: the demo file is read only when
# none is given (Snakemake would otherwise deep-merge the given file onto the demo's).
# Defaults of absent keys come from config/schema.yaml and the methods' signatures.
if not workflow.overwrite_configfiles:
    # Snakemake's own YAML error names neither the file nor the line; this one does.
    from benchmark.yamlfile import load_yaml

    load_yaml("config/config.yaml")

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/atlas.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/report.smk"


# The report's landing page: the claim ledger and the per-task heat maps (shown when the report
# is built with --report-metadata, as scripts/report.sh does; otherwise the job graph). It
# includes the run's overview fragment: before that exists (a partial run) the report has none.
if Path(f"{PLAN.results_dir}/report/overview_fragment.html").exists():

    report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
    default_target: True


# A run ends on what it produced (tables, failed rows, the ledger's verdicts), not on
# Snakemake's step count.
onsuccess:
    from benchmark.summary import print_summary

    print_summary(PLAN.results_dir, PLAN.tasks, ok=True)


onerror:
    from benchmark.summary import print_summary

    print_summary(PLAN.results_dir, PLAN.tasks, ok=False)
