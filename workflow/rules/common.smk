# Config validation and input functions shared by every rule.
from pathlib import Path

from benchmark import workflow as wf

wf.validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
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
