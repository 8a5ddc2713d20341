"""The workflow's pre-training step: scGPT's generative pre-training on the configured corpus."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.io import atomic_path

log = logging.getLogger(__name__)

EXPORTED_FILES = ("args.json", "vocab.json", "best_model.pt")


def pretrain_config(
    corpus: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    settings: Mapping[str, Any] | None = None,
):
    """The :class:`scgpt.pretrain.PretrainConfig` of the config's ``model.pretrain.settings``.

    The workflow calls this at plan time too, so a mistyped or invalid setting fails the dry
    run with the config key named, before any job removes the previous checkpoint.

    Raises
    ------
    ValueError
        ``config model.pretrain.settings.<key>: ...`` for a reserved, unknown or invalid key.
    """
    import pydantic

    from scgpt.pretrain.config import OptionRangeError, PretrainConfig

    settings = dict(settings or {})
    where = "config model.pretrain.settings"
    for reserved in ("data", "output_dir"):
        if reserved in settings:
            raise ValueError(f"{where}.{reserved}: set by the workflow; remove it")
    valid = sorted(f.name for f in dataclasses.fields(PretrainConfig) if f.name != "extra")
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: not a pre-training option"
            + (f" (also unknown: {unknown[1:]})" if unknown[1:] else "")
            + f"; valid options: {valid}"
        )
    hints = typing.get_type_hints(PretrainConfig)
    for key, value in settings.items():
        if isinstance(value, bool) and bool not in (hints[key], *typing.get_args(hints[key])):
            # pydantic's lax mode reads true as 1: a bool for a number is a slip, not a value.
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise ValueError(f"{where}.{key}: {value!r} is a boolean, expected {expected}")
        try:
            settings[key] = pydantic.TypeAdapter(hints[key]).validate_python(value)
        except pydantic.ValidationError as err:
            raise ValueError(
                f"{where}.{key}: {value!r} is not a valid {hints[key]}: {err.errors()[0]['msg']}"
            ) from None
    try:
        return PretrainConfig.from_dict(
            {**settings, "data": str(corpus), "output_dir": str(work_dir)}
        )
    except OptionRangeError as err:
        raise ValueError(f"{where}.{err.option}: {err.detail}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def pretrain_checkpoint(
    corpus: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any] | None = None,
    threads: int | None = None,
    processes: int = 1,
) -> Path:
    """Pre-train scGPT on ``corpus`` and publish the checkpoint and loss log in ``out_dir``.

    Training state (periodic checkpoints for exact resume) lives in ``work_dir``, so an
    interrupted workflow resumes where it stopped; ``out_dir`` receives the released layout
    (``args.json``, ``vocab.json``, ``best_model.pt``) and ``loss.csv`` only when training ends.

    Parameters
    ----------
    settings
        Fields of :class:`scgpt.pretrain.PretrainConfig` (the config's
        ``model.pretrain.settings``); ``data`` and ``output_dir`` are set here.
    threads
        CPU threads for torch (the job's share of the machine).
    processes
        Data-parallel processes: above 1, the run is launched with ``torchrun`` (one process
        per GPU, or gloo on CPU), the way a multi-GPU job of the paper configuration runs.
    """
    from scgpt.pretrain import pretrain

    settings = dict(settings or {})
    if threads is not None:
        settings.setdefault("num_threads", threads)
    config = pretrain_config(corpus, work_dir, settings)
    _discard_stale_run(config)
    if processes > 1:
        exported = _pretrain_with_torchrun(config, processes)
    else:
        exported = Path(pretrain(config))
    missing = [name for name in EXPORTED_FILES if not (exported / name).is_file()]
    if missing:
        raise RuntimeError(f"pre-training finished but {exported} lacks {missing}")
    out = Path(out_dir)
    sources = {name: exported / name for name in EXPORTED_FILES}
    sources["loss.csv"] = Path(work_dir) / "loss.csv"
    for name, source in sources.items():
        with atomic_path(out / name) as tmp:
            shutil.copyfile(source, tmp)
    log.info("pre-trained checkpoint in %s", out)
    return out


def _pretrain_with_torchrun(config, processes: int) -> Path:
    """Run :func:`scgpt.pretrain.pretrain` in ``processes`` DDP ranks; return the export folder."""
    import yaml

    work = Path(config.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    options = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in config.to_dict().items()
        if key != "extra" or value
    }
    run_file = work / "torchrun_config.yaml"
    with atomic_path(run_file) as tmp:
        tmp.write_text(yaml.safe_dump(options, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "scgpt.pretrain",
        "--config",
        str(run_file),
    ]
    log.info("pre-training with %d processes: %s", processes, " ".join(command))
    try:  # the job log, when job_logging has redirected sys.stdout to it
        sys.stdout.flush()
        output = sys.stdout if sys.stdout.fileno() >= 0 else None
    except (AttributeError, OSError, ValueError):
        output = None
    result = subprocess.run(command, check=False, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(
            f"torchrun pre-training ({processes} processes) exited with code "
            f"{result.returncode}; see the ranks' output above in this log"
        )
    return work / "model"


def _discard_stale_run(config) -> None:
    """Delete the work folder's checkpoints when they come from other settings.

    Snakemake re-runs the rule when its settings change; the interrupted-run checkpoints of
    the old settings can then never be resumed, so they go (with a warning naming what changed).
    """
    from scgpt.pretrain.run import IncompatibleRunError, check_resumable

    work = Path(config.output_dir)
    runs = [(work, 1.0)] + [
        (work / f"fraction_{f:g}", float(f)) for f in config.data_fractions or ()
    ]
    for folder, fraction in runs:
        try:
            check_resumable(config, folder, fraction)
        except IncompatibleRunError as err:
            log.warning("%s Starting over: deleting %s", err, folder)
            shutil.rmtree(folder)
