# Transfer series (paper Supp. Fig. 13: scaling and context effects in transfer learning).
#
# Pre-training of the demo's series models (settings: config/pretrain_transfer.yaml). Not part
# of `rule all` or `transfer`: the models are committed under results/model/transfer/ and
# registered as checkpoints (copied with a checksum check). Each takes ~5 minutes on one thread:
#   nice -n 10 snakemake --cores 1 pretrain_series
import yaml

SERIES_SETTINGS = "config/pretrain_transfer.yaml"
# Read relative to this file: a run with --directory elsewhere still finds it.
SERIES = yaml.safe_load(
    (
        Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1]
        / SERIES_SETTINGS
    ).read_text()
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
