# Tables (measured beside the paper's values) and figures per task.


# Tables and figures are rebuilt from exactly the planned runs. The run folders are inputs
# too: Snakemake never rebuilds a missing run.json of an up-to-date table, but removing a run
# folder (or a file in it) changes the folder's time, which redoes the table and the run
# (WorkflowPlan.run_folders; a dry run creates no folder).
rule task_table:
    input:
        runs=lambda wc: PLAN.runs_of(wc.task),
        folders=lambda wc: PLAN.run_folders(wc.task, create=not workflow.dryrun),
    output:
        md=report(
            f"{RESULTS}/tables/{{task}}.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"task": "{task}"},
        ),
        csv=f"{RESULTS}/tables/{{task}}.csv",
    params:
        # A changed reason remarks the rows (Snakemake reruns a job whose params changed).
        budget_limited=lambda wc: PLAN.budget_limited(wc.task),
    log:
        f"{LOGS}/tables/{{task}}.log",
    script:
        "../scripts/task_table.py"


rule task_figures:
    input:
        runs=lambda wc: PLAN.runs_of(wc.task, wc.dataset),
        folders=lambda wc: PLAN.run_folders(wc.task, wc.dataset, create=not workflow.dryrun),
        dataset=lambda wc: PLAN.dataset_path(wc.dataset),
    output:
        report(
            directory(f"{RESULTS}/figures/{{task}}/{{dataset}}"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "dataset": "{dataset}", "figure": "{name}"},
        ),
    log:
        f"{LOGS}/figures/{{task}}/{{dataset}}.log",
    script:
        "../scripts/task_figures.py"


# The claim ledger: each tested claim of the paper and its critics, with a verdict computed
# from the tables (benchmark/claims.py, claims in benchmark/paper/claims.yaml).
rule claims:
    input:
        tables=lambda wc: [f"{RESULTS}/tables/{task}.csv" for task in PLAN.tasks],
        claims=str(SCHEMA.parents[1] / "benchmark" / "paper" / "claims.yaml"),
    output:
        csv=f"{RESULTS}/claims.csv",
        md=report(
            f"{RESULTS}/claims.md",
            caption="../report/claims.rst",
            category="1. Claim ledger",
        ),
    params:
        tasks=lambda wc: list(PLAN.tasks),
        budget_limited=lambda wc: {task: PLAN.budget_limited(task) for task in PLAN.tasks},
        data_kinds=lambda wc: PLAN.data_kinds(),
        transfer=f"{RESULTS}/tables/transfer.csv",
        # Where the full-budget target (issue 27) writes its tables; read when present.
        full_budget=f"{RESULTS}/full_budget/tables",
    log:
        f"{LOGS}/claims.log",
    script:
        "../scripts/claims.py"


# The report's landing page (the ledger, one heat map per task; its body is included by
# workflow/report/workflow.rst) and one page per task (compact table, differences coloured).
rule report_overview:
    input:
        tables=lambda wc: [f"{RESULTS}/tables/{task}.csv" for task in PLAN.tasks],
        claims=f"{RESULTS}/claims.csv",
    output:
        # Not a report() item: the report's landing page already includes it (the fragment).
        page=f"{RESULTS}/report/overview.html",
        fragment=f"{RESULTS}/report/overview_fragment.html",
    params:
        tasks=lambda wc: list(PLAN.tasks),
    log:
        f"{LOGS}/report/overview.log",
    script:
        "../scripts/report_overview.py"


rule task_page:
    input:
        table=f"{RESULTS}/tables/{{task}}.csv",
    output:
        report(
            f"{RESULTS}/report/tasks/{{task}}.html",
            caption="../report/task_page.rst",
            category="2. Task pages",
            labels={"task": "{task}"},
        ),
    log:
        f"{LOGS}/report/task_{{task}}.log",
    script:
        "../scripts/report_overview.py"


rule report_pages:
    input:
        tables=lambda wc: [f"{RESULTS}/tables/{task}.csv" for task in PLAN.tasks],
        runs=lambda wc: [f"{PLAN.run_dir(job)}/run.json" for job in PLAN.jobs],
    output:
        comparison=report(
            f"{RESULTS}/report/paper_comparison.html",
            caption="../report/comparison.rst",
            category="Overview",
        ),
        provenance=report(
            f"{RESULTS}/report/provenance.html",
            caption="../report/provenance.rst",
            category="Overview",
        ),
    params:
        tasks=lambda wc: list(PLAN.tasks),
    log:
        f"{LOGS}/report/pages.log",
    script:
        "../scripts/report_pages.py"
