# One generic rule runs any registered method of any task: the task contract and the
# method registry decide what happens; the config decides which jobs exist.


rule run_method:
    input:
        dataset=lambda wc: PLAN.dataset_path(wc.dataset),
        checkpoint=lambda wc: (
            PLAN.checkpoint_files(wc.task) if PLAN.needs_checkpoint(wc.task, wc.method) else []
        ),
        resources=lambda wc: PLAN.method_inputs(wc.task, wc.method),
    output:
        run=f"{RESULTS}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}/run.json",
        scores=f"{RESULTS}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}/scores.json",
    params:
        params=lambda wc: PLAN.method_params(wc.task, wc.method, wc.dataset),
        metric_options=lambda wc: PLAN.metric_options(wc.task),
        checkpoint=lambda wc: (
            PLAN.checkpoint_dir(wc.task) if PLAN.needs_checkpoint(wc.task, wc.method) else None
        ),
        # Not used by the script: a failed run is redone when its method's mem_mb, runtime
        # or gpu change (Snakemake's params trigger), a successful one is not.
        retry_resources=lambda wc: PLAN.retry_resources(
            wf.Job(wc.task, wc.dataset, wc.method, int(wc.seed))
        ),
    # Long jobs first (scGPT fine-tunings by default), so that short baselines fill the gaps:
    # on 2 cores, long jobs started last stretched the demo's tail by minutes.
    priority: lambda wc: PLAN.priority(wc.task, wc.method)
    threads: lambda wc: PLAN.resources(wc.method)["threads"]
    resources:
        mem_mb=lambda wc: PLAN.resources(wc.method)["mem_mb"],
        runtime=lambda wc: PLAN.resources(wc.method)["runtime"],
        # SLURM: the executor plugin turns `gpu` into `--gpus=N` (sbatch and srun).
        gpu=lambda wc: PLAN.resources(wc.method)["gpu"],
    conda:
        lambda wc: "../../" + PLAN.method_env(wc.task, wc.method)
    log:
        f"{LOGS}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}.log",
    script:
        "../scripts/run_method.py"
