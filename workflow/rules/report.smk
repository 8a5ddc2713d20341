# Tables (measured beside the paper's values) and figures per task.


rule task_table:
    input:
        lambda wc: PLAN.runs_of(wc.task),
    output:
        md=report(
            f"{RESULTS}/tables/{{task}}.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"task": "{task}"},
        ),
        csv=f"{RESULTS}/tables/{{task}}.csv",
    log:
        f"{LOGS}/tables/{{task}}.log",
    script:
        "../scripts/task_table.py"


rule task_figures:
    input:
        runs=lambda wc: PLAN.runs_of(wc.task, wc.dataset),
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
