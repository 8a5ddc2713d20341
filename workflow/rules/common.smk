# Config validation and input functions shared by every rule.
from pathlib import Path

from benchmark import workflow as wf

# Relative to this file, not to the main Snakefile: a workflow that includes ours still finds it.
SCHEMA = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1] / "config" / "schema.yaml"
# Snakemake's YAML reading keeps the last of two equal keys without a word: refuse them first.
wf.check_config_files(workflow.configfiles)
wf.validate_config(config, SCHEMA)
PLAN = wf.WorkflowPlan.from_config(config)

RESULTS = PLAN.results_dir
DATA = PLAN.data_dir
LOGS = "logs"


def all_targets():
    return PLAN.final_targets()


wildcard_constraints:
    seed=r"\d+",
    dataset=r"[A-Za-z0-9_\-]+",
    method=r"[A-Za-z0-9_\-]+",
    task="|".join(PLAN.tasks),
