# The demo's committed scGPT: pre-trained on the simulated atlas (builtin dataset sim_atlas)
# with the settings of config/pretrain_sim_atlas.yaml. Not part of `rule all`: the demo copies
# the committed result (registry checkpoint sim_atlas, path results/model/sim_atlas). This
# target regenerates it (about 45 minutes on one CPU thread):
#   snakemake --cores 1 --forcerun pretrain_sim_atlas -- pretrain_sim_atlas
# then update the sha256 of the registry entry (benchmarks/pretraining_quality.py reports
# what the model learnt).
from benchmark.yamlfile import load_yaml

SIM_ATLAS_SETTINGS = "config/pretrain_sim_atlas.yaml"


def _sim_atlas_corpus():
    return load_yaml(SIM_ATLAS_SETTINGS)["corpus"]


rule build_sim_atlas_corpus:
    input:
        lambda wc: [PLAN.dataset_path(d) for d in _sim_atlas_corpus()],
    output:
        f"{DATA}/corpus/sim_atlas_corpus.h5ad",
    log:
        f"{LOGS}/model/build_sim_atlas_corpus.log",
    script:
        "../scripts/build_corpus.py"


rule pretrain_sim_atlas:
    input:
        rules.build_sim_atlas_corpus.output[0],
        SIM_ATLAS_SETTINGS,
    output:
        [f"results/model/sim_atlas/{name}" for name in (*wf.CHECKPOINT_FILES, "loss.csv")],
    params:
        settings=lambda wc, input: load_yaml(input[1])["settings"],
        out_dir="results/model/sim_atlas",
        work_dir="results/model/sim_atlas_work",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    log:
        f"{LOGS}/model/pretrain_sim_atlas.log",
    script:
        "../scripts/pretrain.py"


# The demo's short pre-training run (rule pretrain, model.pretrain of config/config.yaml) as
# its own target: the smoke test of the pre-training path, ~2 minutes on 2 cores. The demo's
# tasks use the committed atlas model instead, so `rule all` does not wait for it:
#   snakemake --cores 2 pretrain_demo
rule pretrain_demo:
    input:
        rules.pretrain.output,
