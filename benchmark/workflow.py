"""What the Snakemake workflow plans: config checks, jobs and paths (no Snakemake import).

The Snakefile validates the config against ``config/schema.yaml`` (types and keys), then
builds a :class:`WorkflowPlan`, which checks what a schema cannot: that every task is
implemented, every dataset is in the registry, every method is registered for its task and
accepts the parameters the config gives it.
"""

from __future__ import annotations

import copy
import itertools
import json
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.datasets import DatasetError, check_builder_params, load_registry
from benchmark.sources.checkpoints import REQUIRED_FILES
from benchmark.tasks import get_task
from benchmark.transfer.pretraining import pretrain_config
from benchmark.yamlfile import YamlFileError, load_yaml
from contract.registry import ParameterTypeError, get_method, list_methods

CHECKPOINT_FILES = REQUIRED_FILES
DEFAULT_RESOURCES = {"mem_mb": 4000, "runtime": 60, "threads": 1, "gpu": 0}
# The resources whose change redoes a failed run (threads are left out: Snakemake lowers a
# job's threads to --cores, so the recorded value need not be the config's).
RETRY_RESOURCES = ("mem_mb", "runtime", "gpu")
# A parameter value Snakemake's params trigger does not compare (not a plain Python value):
# what an ok run recorded before run.json held its resources, so that no old result is redone.
_UNRECORDED = types.SimpleNamespace(resources="not recorded")


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message names the key."""


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Refuse a config file that gives a key twice in one mapping.

    Snakemake reads config files with plain YAML, which keeps the last of two equal keys
    without a word (two ``scale:`` under one method: the first is ignored). The Snakefile
    passes the files it read (``workflow.configfiles``); each is read again here with a
    loader that refuses duplicates.

    Raises
    ------
    ConfigError
        Naming the file, the key and both lines.
    """
    for path in paths:
        try:
            load_yaml(path)
        except YamlFileError as err:
            raise ConfigError(f"config file {err}") from None
        except OSError:
            continue  # Snakemake itself read the file and reports what it could not read


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Check ``config`` against the JSON schema, listing every error with its key path.

    Raises
    ------
    ConfigError
        One line per problem, e.g. ``config seeds: 'zero' is not of type 'array'``.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in error.path) or "(top level)"
        problems.append(f"config {where}: {error.message}")
    if problems:
        raise ConfigError(
            f"the configuration does not match {schema_path}:\n  " + "\n  ".join(problems)
        )
    fill_schema_defaults(config, schema)


def fill_schema_defaults(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Set every absent key that the schema gives a ``default`` (in place, nested objects too).

    A ``--configfile`` is the whole configuration, so the defaults of keys it leaves out
    come from the schema, never from the demo file.
    """
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            fill_schema_defaults(config[key], sub)


@dataclass(frozen=True)
class Job:
    """One method run: a task, a dataset, a method and a seed."""

    task: str
    dataset: str
    method: str
    seed: int


@dataclass(frozen=True)
class WorkflowPlan:
    """The jobs and paths a config implies; see :meth:`from_config`."""

    config: dict[str, Any]
    registry: Any
    jobs: tuple[Job, ...]
    tasks: tuple[str, ...]
    results_dir: str = "results"
    data_dir: str = "data"
    _checkpoint_methods: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WorkflowPlan:
        """Check the config against the registries and plan every job.

        Raises
        ------
        ConfigError
            Naming the config key and the value that is wrong, with what was expected.
        """
        registry_path = config.get("registry", "config/datasets.yaml")
        added = list(config.get("registries") or [])
        for key, path in [("registry", registry_path), *(("registries", p) for p in added)]:
            if not Path(path).is_file():
                raise ConfigError(f"config {key}: {path} does not exist")
        registry = load_registry(registry_path, extra=added)
        if added:
            registry_path = ", ".join([registry_path, *added])
        tasks = tuple(config["tasks"])
        _check_dataset_params(config, registry, registry_path)
        jobs: list[Job] = []
        checkpoint_methods = set()
        for task in tasks:
            try:
                get_task(task)
            except KeyError as err:
                raise ConfigError(f"config tasks.{task}: {err.args[0]}") from None
            section = config["tasks"][task]
            _check_downloads(section.get("metrics"), f"tasks.{task}.metrics", registry)
            try:
                get_task(task).with_metric_options(section.get("metrics"))
            except ValueError as err:
                raise ConfigError(f"config tasks.{task}.metrics: {err}") from None
            for dataset in section["datasets"]:
                if dataset not in registry.datasets:
                    raise ConfigError(
                        f"config tasks.{task}.datasets: {dataset!r} is not in {registry_path}; "
                        f"known datasets: {sorted(registry.datasets)}"
                    )
                serves = registry.datasets[dataset].tasks
                if task not in serves:
                    raise ConfigError(
                        f"config tasks.{task}.datasets: {dataset!r} is registered in "
                        f"{registry_path} for tasks {list(serves)}, not {task!r}"
                    )
            for method, params in section["methods"].items():
                where = f"tasks.{task}.methods.{method}"
                try:
                    spec = get_method(task, method)
                    # Checked as the job will receive them: a {download: ...} is a path.
                    spec.check_params(_with_download_paths(params or {}, _planned_download))
                except ParameterTypeError as err:
                    raise ConfigError(
                        f"config {where}.{err.parameter}: {err.value!r} is "
                        f"{type(err.value).__name__}, expected {err.expected} "
                        f"(the type of {method}'s parameter {err.parameter}){err.hint}"
                    ) from None
                except (KeyError, TypeError) as err:
                    raise ConfigError(f"config {where}: {err.args[0]}") from None
                _check_downloads(params, f"tasks.{task}.methods.{method}", registry)
                if spec.needs_checkpoint:
                    checkpoint_methods.add((task, method))
            _check_dataset_params_of_task(task, section)
            _check_task_checkpoint(task, section, registry, registry_path, checkpoint_methods)
            only = _method_datasets(task, section)
            _check_budget_limited(task, section)
            for dataset, method, seed in itertools.product(
                section["datasets"], section["methods"], config["seeds"]
            ):
                if method in only and dataset not in only[method]:
                    continue
                jobs.append(Job(task, dataset, method, seed))
        _check_resource_names(config)
        model = config["model"]
        if checkpoint_methods and model["source"] == "checkpoint":
            name = model.get("checkpoint")
            if name not in registry.checkpoints:
                raise ConfigError(
                    f"config model.checkpoint: {name!r} is not under checkpoints: in "
                    f"{registry_path}; known: {sorted(registry.checkpoints)}"
                )
        # The pre-training section is checked whenever it is given: with source checkpoint
        # it still drives the rule pretrain (the demo's smoke-test target pretrain_demo).
        if (checkpoint_methods and model["source"] == "pretrain") or model.get("pretrain"):
            corpus = model.get("pretrain", {}).get("corpus", [])
            if not corpus:
                raise ConfigError("config model.pretrain.corpus: empty; name the corpus datasets")
            for dataset in corpus:
                if dataset not in registry.datasets:
                    raise ConfigError(
                        f"config model.pretrain.corpus: {dataset!r} is not in {registry_path}"
                    )
            try:
                pretrain_config("corpus.h5ad", "work", model.get("pretrain", {}).get("settings"))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        return cls(
            config=config,
            registry=registry,
            jobs=tuple(jobs),
            tasks=tasks,
            results_dir=config.get("results_dir", "results"),
            data_dir=config.get("data_dir", "data"),
            _checkpoint_methods=frozenset(checkpoint_methods),
        )

    # --- paths -------------------------------------------------------------------------
    def dataset_path(self, dataset: str) -> str:
        """The standard ``.h5ad`` of a dataset."""
        return f"{self.data_dir}/standard/{dataset}.h5ad"

    def run_dir(self, job: Job) -> str:
        """``results/<task>/<dataset>/<method>/seed<k>``."""
        return f"{self.results_dir}/{job.task}/{job.dataset}/{job.method}/seed{job.seed}"

    def checkpoint_dir(self, task: str | None = None) -> str:
        """Folder of the scGPT checkpoint a task uses (pre-trained here or released).

        ``tasks.<task>.checkpoint`` (a registry checkpoint) overrides ``model`` for that task:
        the GRN tutorials use the blood model where the other tutorials use whole-human.
        """
        override = (self.config["tasks"].get(task) or {}).get("checkpoint") if task else None
        if override:
            return f"{self.data_dir}/checkpoints/{override}"
        model = self.config["model"]
        if model["source"] == "pretrain":
            return f"{self.results_dir}/model/pretrained"
        return f"{self.data_dir}/checkpoints/{model['checkpoint']}"

    def checkpoint_files(self, task: str | None = None) -> list[str]:
        """The files of :meth:`checkpoint_dir` a consuming rule waits for."""
        return [f"{self.checkpoint_dir(task)}/{name}" for name in CHECKPOINT_FILES]

    # --- per job -----------------------------------------------------------------------
    def needs_checkpoint(self, task: str, method: str) -> bool:
        """Whether the method consumes the scGPT checkpoint."""
        return (task, method) in self._checkpoint_methods

    def method_params(self, task: str, method: str, dataset: str | None = None) -> dict[str, Any]:
        """The config's keyword parameters for a method (empty = the paper's defaults).

        With ``dataset``, ``tasks.<task>.dataset_params.<dataset>.<method>`` (when given)
        overrides the method's entry key by key.

        A value written ``{download: <file name>}`` names a file of the registry (e.g. GEARS'
        ``gene2go_all.pkl``); it becomes the path of the downloaded file, which
        :meth:`method_inputs` makes an input of the job.
        """
        section = self.config["tasks"][task]
        params = dict(section["methods"][method] or {})
        if dataset is not None:
            params.update((section.get("dataset_params") or {}).get(dataset, {}).get(method) or {})
        return _with_download_paths(params, self.download_path)

    def metric_options(self, task: str) -> dict[str, Any]:
        """The config's scoring choices for a task (``tasks.<task>.metrics``; empty: defaults).

        ``{download: <file name>}`` values, at any depth (e.g. reference target lists), become
        the paths of the downloaded files, as in :meth:`method_params`.
        """
        return _with_download_paths(
            self.config["tasks"][task].get("metrics") or {}, self.download_path
        )

    def method_inputs(self, task: str, method: str) -> list[str]:
        """Downloaded files the method's parameters and the task's metric options refer to."""
        section = self.config["tasks"][task]
        named = [
            *_download_names(section["methods"][method]),
            *_download_names(section.get("metrics")),
        ]
        return [self.download_path(name) for name in dict.fromkeys(named)]

    def download_path(self, filename: str) -> str:
        """Where the download rule puts a registry file."""
        return f"{self.data_dir}/downloads/{filename}"

    def method_env(self, task: str, method: str) -> str:
        """The ``envs/<name>.yaml`` file the method's rule runs in."""
        return f"envs/{get_method(task, method).env}.yaml"

    def resources(self, method: str) -> dict[str, int]:
        """Job resources: defaults, then the config's ``resources.default``, then the method's."""
        configured = self.config.get("resources", {})
        return {**DEFAULT_RESOURCES, **configured.get("default", {}), **configured.get(method, {})}

    def retry_resources(self, job: Job) -> dict[str, int] | types.SimpleNamespace:
        """The rule parameter that makes a failed run redo itself when its resources change.

        Snakemake redoes a job whose parameters differ from those recorded at its last run
        (the ``params`` rerun trigger). This one is the config's ``mem_mb``, ``runtime`` and
        ``gpu`` for the job unless its ``run.json`` says ``ok``; then it is the resources the
        run recorded, whatever the config says now. So raising ``mem_mb`` (as a failed row
        advises) redoes that method's failed runs and none of its successful ones.

        Returns
        -------
        ``{"mem_mb": ..., "runtime": ..., "gpu": ...}``; for a successful run recorded before
        ``run.json`` held resources, a value Snakemake does not compare.
        """
        current = self.resources(job.method)
        planned = {key: current[key] for key in RETRY_RESOURCES}
        try:
            run = json.loads(Path(self.run_dir(job), "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent or unreadable: the job runs anyway
            return planned
        if not isinstance(run, dict) or run.get("status") != "ok":
            return planned
        recorded = run.get("resources")
        if not isinstance(recorded, dict) or any(k not in recorded for k in RETRY_RESOURCES):
            return _UNRECORDED
        return {key: recorded[key] for key in RETRY_RESOURCES}

    def priority(self, task: str, method: str) -> int:
        """Scheduling priority of a method's jobs: ``resources.<method>.priority`` if set, else
        1 for methods that use the scGPT checkpoint (the long fine-tunings) and 0 otherwise."""
        configured = self.config.get("resources", {}).get(method, {})
        if "priority" in configured:
            return int(configured["priority"])
        return 1 if self.needs_checkpoint(task, method) else 0

    def runs_of(self, task: str, dataset: str | None = None) -> list[str]:
        """``run.json`` paths of every planned job of a task (optionally one dataset)."""
        return [
            f"{self.run_dir(job)}/run.json"
            for job in self.jobs
            if job.task == task and (dataset is None or job.dataset == dataset)
        ]

    def run_folders(
        self, task: str, dataset: str | None = None, *, create: bool = False
    ) -> list[str]:
        """Run folders of a task's planned jobs: inputs that make its table notice a deletion.

        Snakemake does not rebuild a missing input of a job whose outputs are up to date: with
        only the ``run.json`` files as inputs, ``rm -r results/<task>/<dataset>/<method>/seed0``
        followed by ``snakemake results/tables/<task>.md`` kept the deleted run's row. A
        folder's modification time changes when an entry in it is removed (or added), so with
        the folders as inputs too the table is older than one of them after a deletion: it is
        redone, and with it the job that rebuilds the missing run.

        Parameters
        ----------
        task, dataset
            The planned jobs of this task (and dataset, when given).
        create
            Make missing folders first (a real run, which would make them anyway): the list
            of inputs then stays the same from run to run, since Snakemake also redoes a job
            whose set of inputs changed. A dry run creates nothing; it lists the folders that
            exist, and a deleted one still shows as a changed set of inputs.

        Returns
        -------
        ``results/<task>/<dataset>/<method>/seed<k>`` of every planned job that exists.
        """
        folders = [
            self.run_dir(job)
            for job in self.jobs
            if job.task == task and (dataset is None or job.dataset == dataset)
        ]
        if create:
            for folder in folders:
                Path(folder).mkdir(parents=True, exist_ok=True)
        return [folder for folder in folders if Path(folder).is_dir()]

    def budget_limited(self, task: str) -> dict[str, str]:
        """Method -> why its budget is short (``tasks.<task>.budget_limited``; empty if none)."""
        return dict(self.config["tasks"][task].get("budget_limited") or {})

    def data_kinds(self) -> dict[str, str]:
        """Dataset -> what it is (paper data, simulated demo, real demo subset) for the ledger."""
        from benchmark.claims import data_kinds

        names = dict.fromkeys(d for task in self.tasks for d in self.datasets_of(task))
        return data_kinds(self.registry, list(names))

    def datasets_of(self, task: str) -> list[str]:
        """Datasets a task runs on."""
        return list(self.config["tasks"][task]["datasets"])

    def dataset_params(self, dataset: str) -> dict[str, Any]:
        """Builder parameters the config sets for a builtin dataset."""
        return dict(self.config.get("datasets", {}).get(dataset, {}) or {})

    def final_targets(self) -> list[str]:
        """Every job's ``run.json``, tables of every task and figures of every (task, dataset).

        The run files are targets themselves because Snakemake skips a missing input of a
        job whose outputs are up to date: a ``run.json`` lost to an interrupted run would
        otherwise never be rebuilt while its table exists.
        """
        targets = [f"{self.run_dir(job)}/run.json" for job in self.jobs]
        for task in self.tasks:
            targets += [
                f"{self.results_dir}/tables/{task}.md",
                f"{self.results_dir}/tables/{task}.csv",
            ]
            targets += [
                f"{self.results_dir}/figures/{task}/{dataset}" for dataset in self.datasets_of(task)
            ]
        targets += [
            f"{self.results_dir}/claims.csv",
            f"{self.results_dir}/claims.md",
            f"{self.results_dir}/report/overview.html",
            *(f"{self.results_dir}/report/tasks/{task}.html" for task in self.tasks),
            f"{self.results_dir}/report/paper_comparison.html",
            f"{self.results_dir}/report/provenance.html",
        ]
        return targets


RESOURCE_KEYS = ("default", "pretrain")
"""Keys of ``resources:`` that are not method names: every job's defaults, pre-training."""


def _check_resource_names(config: dict[str, Any]) -> None:
    """Every key of ``resources:`` is ``default``, ``pretrain`` or a registered method.

    A misspelt method's resources would otherwise be ignored without a word and its jobs
    run with the defaults (e.g. no GPU, the default memory).

    Raises
    ------
    ConfigError
        Naming the key, the closest method names and every valid key.
    """
    import difflib

    methods = sorted({spec.name for spec in list_methods()})
    valid = [*RESOURCE_KEYS, *methods]
    for name in config.get("resources") or {}:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, valid, n=3)
        raise ConfigError(
            f"config resources.{name}: not a method name, so these resources would apply to "
            "no job"
            + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
            + f" Valid keys: {valid}"
        )


def _planned_download(name: str) -> str:
    """Stand-in path of a ``{download: <name>}`` value while the config is checked."""
    return f"downloads/{name}"


def _is_download(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"download"}


def _download_names(value: Any) -> list[str]:
    """File names of every ``{download: <name>}`` inside ``value`` (mappings and lists)."""
    if _is_download(value):
        return [value["download"]]
    if isinstance(value, dict):
        return [name for item in value.values() for name in _download_names(item)]
    if isinstance(value, list):
        return [name for item in value for name in _download_names(item)]
    return []


def _with_download_paths(value: Any, path_of: Any) -> Any:
    """``value`` with each ``{download: <name>}`` replaced by ``path_of(<name>)``."""
    if _is_download(value):
        return path_of(value["download"])
    if isinstance(value, dict):
        return {key: _with_download_paths(item, path_of) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_download_paths(item, path_of) for item in value]
    return value


def _check_downloads(value: Any, where: str, registry: Any) -> None:
    """Every file named by ``{download: ...}`` under config key ``where`` is in the registry."""
    for name in _download_names(value):
        try:
            registry.download_source(name)
        except Exception as err:
            raise ConfigError(f"config {where}: {{download: {name}}}: {err}") from None


def _check_task_checkpoint(
    task: str,
    section: dict[str, Any],
    registry: Any,
    registry_path: str,
    checkpoint_methods: set[tuple[str, str]],
) -> None:
    """``tasks.<task>.checkpoint`` names a registry checkpoint and a method that uses one."""
    name = section.get("checkpoint")
    if name is None:
        return
    if name not in registry.checkpoints:
        raise ConfigError(
            f"config tasks.{task}.checkpoint: {name!r} is not under checkpoints: in "
            f"{registry_path}; known: {sorted(registry.checkpoints)}"
        )
    if not any(t == task for t, _ in checkpoint_methods):
        raise ConfigError(
            f"config tasks.{task}.checkpoint: {name!r} is set but no method of tasks.{task} "
            f"uses a checkpoint (methods: {sorted(section['methods'])})"
        )


def _check_dataset_params_of_task(task: str, section: dict[str, Any]) -> None:
    """``tasks.<task>.dataset_params``: known datasets and methods, parameters the method takes."""
    for dataset, methods in (section.get("dataset_params") or {}).items():
        where = f"config tasks.{task}.dataset_params.{dataset}"
        if dataset not in section["datasets"]:
            raise ConfigError(
                f"{where}: not a dataset of the task; datasets: {section['datasets']}"
            )
        for method, params in (methods or {}).items():
            if method not in section["methods"]:
                raise ConfigError(
                    f"{where}.{method}: not a method of the task; methods: {list(section['methods'])}"
                )
            merged = {**(section["methods"][method] or {}), **(params or {})}
            try:
                get_method(task, method).check_params(
                    _with_download_paths(merged, _planned_download)
                )
            except ParameterTypeError as err:
                raise ConfigError(
                    f"{where}.{method}.{err.parameter}: {err.value!r} is "
                    f"{type(err.value).__name__}, expected {err.expected}{err.hint}"
                ) from None
            except (KeyError, TypeError) as err:
                raise ConfigError(f"{where}.{method}: {err.args[0]}") from None


def _method_datasets(task: str, section: dict[str, Any]) -> dict[str, list[str]]:
    """``tasks.<task>.method_datasets``: methods that run on some of the task's datasets only.

    Raises
    ------
    ConfigError
        For a method not under ``methods`` or a dataset not under ``datasets``.
    """
    only = dict(section.get("method_datasets") or {})
    for method, datasets in only.items():
        if method not in section["methods"]:
            raise ConfigError(
                f"config tasks.{task}.method_datasets.{method}: not a method of the task; "
                f"methods: {list(section['methods'])}"
            )
        unknown = [d for d in datasets if d not in section["datasets"]]
        if unknown:
            raise ConfigError(
                f"config tasks.{task}.method_datasets.{method}: {unknown} not in "
                f"tasks.{task}.datasets {list(section['datasets'])}"
            )
    return only


def _check_budget_limited(task: str, section: dict[str, Any]) -> None:
    """``tasks.<task>.budget_limited`` names methods of the task only.

    Raises
    ------
    ConfigError
        For a method not under ``methods`` (a misspelt name would leave its short-budget rows
        carrying verdicts).
    """
    for method in section.get("budget_limited") or {}:
        if method not in section["methods"]:
            raise ConfigError(
                f"config tasks.{task}.budget_limited.{method}: not a method of the task; "
                f"methods: {list(section['methods'])}"
            )


def _check_dataset_params(config: dict[str, Any], registry: Any, registry_path: str) -> None:
    """Builder parameters of ``datasets:`` name builtin entries and keys their builders take."""
    for name, params in (config.get("datasets") or {}).items():
        if name not in registry.datasets:
            raise ConfigError(
                f"config datasets.{name}: not in {registry_path}; "
                f"known datasets: {sorted(registry.datasets)}"
            )
        try:
            check_builder_params(name, registry.datasets[name], params)
        except DatasetError as err:
            raise ConfigError(
                f"config datasets.{name}: {str(err).removeprefix(f'{name}: ')}"
            ) from None
