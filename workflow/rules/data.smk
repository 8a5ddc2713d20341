# Datasets: builtin demo sets are generated; the paper's are downloaded (once per file, even
# when several datasets share it) then standardised. No `retries:` on downloads: the
# downloader itself retries transient errors with back-off and gives up at once on a 404.


# A registry file with a local `path:` source (a committed real subset, your own h5ad) goes
# through this rule too: checked against its sha256 and copied, never modified. The local
# file is an input, so a changed file is noticed (and refused unless its sha256 is updated).
rule download_file:
    input:
        lambda wc: [p] if (p := PLAN.registry.download_source(wc.filename)["path"]) else [],
    output:
        f"{DATA}/downloads/{{filename}}",
    params:
        source=lambda wc: PLAN.registry.download_source(wc.filename),
    log:
        f"{LOGS}/download/{{filename}}.log",
    priority: 2
    resources:
        downloads=1,
    script:
        "../scripts/download_file.py"


# A dataset that cannot be built does not fail the job: its output becomes a failure record
# (JSON, never mistaken for an h5ad), its runs become failed rows with the error, and the
# task's other datasets and table go ahead. Delete the record to retry.
rule standardise_dataset:
    input:
        lambda wc: [
            f"{DATA}/downloads/{name}" for name in PLAN.registry.file_names(wc.dataset)
        ],
    output:
        f"{DATA}/standard/{{dataset}}.h5ad",
    params:
        raw_dir=f"{DATA}/downloads",
        builder_params=lambda wc: PLAN.dataset_params(wc.dataset),
    log:
        f"{LOGS}/standardise/{{dataset}}.log",
    # Above every run (scGPT's are 1): Snakemake does not pass a job's priority on to the
    # jobs it waits for, so without this the longest fine-tuning (scGPT perturbation) waited
    # 5 minutes of the demo for its dataset while short baselines ran, and ended last.
    priority: 2
    resources:
        mem_mb=8000,
    script:
        "../scripts/standardise_dataset.py"
