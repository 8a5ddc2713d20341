# Transfer series (paper Supp. Fig. 13: scaling and context effects in transfer learning).
#
# Pre-training of the demo's series models (settings: config/pretrain_transfer.yaml). Not part
# of `rule all` or `transfer`: the models are committed under results/model/transfer/ and
# registered as checkpoints (copied with a checksum check). Each took 4-12 minutes on one thread:
#   nice -n 10 snakemake --cores 1 pretrain_series
from benchmark.yamlfile import load_yaml

SERIES_SETTINGS = "config/pretrain_transfer.yaml"
# Read relative to this file: a run with --directory elsewhere still finds it.
SERIES = load_yaml(
    Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1] / SERIES_SETTINGS
)
SERIES_MODEL_DIR = "results/model/transfer"


wildcard_constraints:
    series_model="|".join(SERIES["models"]),


rule build_series_corpus:
    input:
        lambda wc: [PLAN.dataset_path(d) for d in SERIES["pool"]["datasets"]],
    output:
        f"{DATA}/corpus/series/{{series_model}}.h5ad",
    params:
        pool=SERIES["pool"],
        model=lambda wc: SERIES["models"][wc.series_model] or {},
    log:
        f"{LOGS}/model/build_series_corpus_{{series_model}}.log",
    script:
        "../scripts/build_series_corpus.py"


rule pretrain_series_model:
    input:
        rules.build_series_corpus.output[0],
        SERIES_SETTINGS,
        f"{DATA}/checkpoints/{SERIES['vocab_from']}/vocab.json",
    output:
        [
            f"{SERIES_MODEL_DIR}/{{series_model}}/{name}"
            for name in (*wf.CHECKPOINT_FILES, "loss.csv")
        ],
    params:
        settings=lambda wc, input: {**SERIES["settings"], "vocab_path": input[2]},
        out_dir=f"{SERIES_MODEL_DIR}/{{series_model}}",
        work_dir=f"results/model/transfer_work/{{series_model}}",
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=0,
    log:
        f"{LOGS}/model/pretrain_series_{{series_model}}.log",
    script:
        "../scripts/pretrain.py"


rule pretrain_series:
    input:
        [f"{SERIES_MODEL_DIR}/{name}/best_model.pt" for name in SERIES["models"]],


# --- fine-tuning / evaluation of the series (`snakemake transfer`) ----------------------------
# Every series model runs the config's transfer.methods on its series' (task, dataset) pairs
# through the generic method script (workflow/scripts/run_method.py), with that model's
# checkpoint; references (from scratch, PCA) run once under the model name "reference".
from benchmark.transfer import series as tr

TRANSFER = tr.TransferPlan.from_config(config, PLAN.registry)


rule run_transfer:
    input:
        dataset=lambda wc: PLAN.dataset_path(wc.dataset),
        checkpoint=lambda wc: TRANSFER.checkpoint_inputs(wc.model, wc.task, wc.method),
    output:
        run=f"{RESULTS}/transfer/{{model}}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}/run.json",
        scores=f"{RESULTS}/transfer/{{model}}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}/scores.json",
    params:
        params=lambda wc: TRANSFER.method_params(PLAN, config, wc.task, wc.method),
        metric_options=lambda wc: TRANSFER.metric_options(PLAN, config, wc.task),
        checkpoint=lambda wc: TRANSFER.checkpoint_param(wc.model, wc.task, wc.method),
    threads: lambda wc: PLAN.resources(wc.method)["threads"]
    resources:
        mem_mb=lambda wc: PLAN.resources(wc.method)["mem_mb"],
        runtime=lambda wc: PLAN.resources(wc.method)["runtime"],
        gpu=lambda wc: PLAN.resources(wc.method)["gpu"],
    conda:
        lambda wc: "../../" + PLAN.method_env(wc.task, wc.method)
    wildcard_constraints:
        model="|".join([tr.REFERENCE, *TRANSFER.models]) or "NO_TRANSFER_MODELS",
        task="|".join(tr.HEADLINE),
    log:
        f"{LOGS}/transfer/{{model}}/{{task}}/{{dataset}}/{{method}}/seed{{seed}}.log",
    script:
        "../scripts/run_method.py"


rule transfer_table:
    input:
        TRANSFER.run_files(),
    output:
        md=report(
            f"{RESULTS}/tables/transfer.md",
            caption="../report/transfer_table.rst",
            category="Tables",
            labels={"task": "transfer"},
        ),
        csv=f"{RESULTS}/tables/transfer.csv",
    params:
        section=TRANSFER.section,
        paper="transfer.csv",
    log:
        f"{LOGS}/tables/transfer.log",
    script:
        "../scripts/transfer_table.py"


rule transfer_figures:
    input:
        rules.transfer_table.output.csv,
    output:
        report(
            directory(f"{RESULTS}/figures/transfer"),
            patterns=["{name}.png"],
            caption="../report/transfer_figures.rst",
            category="Figures",
            subcategory="transfer",
            labels={"task": "transfer", "figure": "{name}"},
        ),
    log:
        f"{LOGS}/figures/transfer.log",
    script:
        "../scripts/transfer_figures.py"


# Paper configuration: scaling-series models pre-trained here on nested census subsets
# (transfer.models.<name>.census), with the config's model.pretrain.settings and resources.
rule export_census_subset:
    output:
        directory(f"{DATA}/corpus/census/{{census_model}}"),
    params:
        census=lambda wc: PLAN.registry.datasets["cellxgene_census"].census,
        spec=lambda wc: TRANSFER.models[wc.census_model]["census"],
    wildcard_constraints:
        census_model="|".join(n for n, s in TRANSFER.models.items() if "census" in s) or "NONE",
    conda:
        "../../envs/census.yaml"
    log:
        f"{LOGS}/model/export_census_{{census_model}}.log",
    script:
        "../scripts/export_census_subset.py"


rule pretrain_census_model:
    input:
        f"{DATA}/corpus/census/{{census_model}}",
    output:
        [f"{RESULTS}/model/transfer/{{census_model}}/{name}" for name in wf.CHECKPOINT_FILES],
    params:
        settings=lambda wc: config["model"].get("pretrain", {}).get("settings", {}),
        out_dir=f"{RESULTS}/model/transfer/{{census_model}}",
        work_dir=f"{RESULTS}/model/transfer_work/{{census_model}}",
    wildcard_constraints:
        census_model="|".join(n for n, s in TRANSFER.models.items() if "census" in s) or "NONE",
    threads: lambda wc: PLAN.resources("pretrain")["threads"]
    resources:
        mem_mb=lambda wc: PLAN.resources("pretrain")["mem_mb"],
        runtime=lambda wc: PLAN.resources("pretrain")["runtime"],
        gpu=lambda wc: PLAN.resources("pretrain")["gpu"],
    log:
        f"{LOGS}/model/pretrain_census_{{census_model}}.log",
    script:
        "../scripts/pretrain.py"


rule transfer:
    input:
        TRANSFER.targets(),
