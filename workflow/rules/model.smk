# The scGPT model the tasks consume: pre-trained here, or a released checkpoint.


rule build_corpus:
    input:
        lambda wc: [PLAN.dataset_path(d) for d in config["model"]["pretrain"]["corpus"]],
    output:
        f"{DATA}/corpus/pretrain_corpus.h5ad",
    log:
        f"{LOGS}/model/build_corpus.log",
    script:
        "../scripts/build_corpus.py"


rule pretrain:
    input:
        rules.build_corpus.output,
    output:
        [f"{RESULTS}/model/pretrained/{name}" for name in wf.CHECKPOINT_FILES],
        report(
            f"{RESULTS}/model/pretrained/loss.csv",
            caption="../report/pretrain.rst",
            category="Model",
        ),
    params:
        settings=lambda wc: config["model"]["pretrain"].get("settings", {}),
        out_dir=f"{RESULTS}/model/pretrained",
        work_dir=f"{RESULTS}/model/pretrain_work",
    threads: lambda wc: PLAN.resources("pretrain")["threads"]
    resources:
        # resources.pretrain in the config; `gpu: N` above 1 runs N DDP processes (torchrun).
        mem_mb=lambda wc: PLAN.resources("pretrain")["mem_mb"],
        runtime=lambda wc: PLAN.resources("pretrain")["runtime"],
        gpu=lambda wc: PLAN.resources("pretrain")["gpu"],
    log:
        f"{LOGS}/model/pretrain.log",
    script:
        "../scripts/pretrain.py"


rule fetch_checkpoint:
    output:
        [f"{DATA}/checkpoints/{{name}}/{file}" for file in wf.CHECKPOINT_FILES],
    params:
        source=lambda wc: PLAN.registry.checkpoint_source(wc.name),
        out_dir=lambda wc: f"{DATA}/checkpoints/{wc.name}",
    log:
        f"{LOGS}/model/fetch_checkpoint_{{name}}.log",
    script:
        "../scripts/fetch_checkpoint.py"
