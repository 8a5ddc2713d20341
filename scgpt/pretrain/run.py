"""The pre-training loop: streaming, DDP, accumulation, checkpoints with exact resume, export."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from scgpt._utils import (
    autocast_context,
    logger,
    resolve_device,
    seed_everything,
    torch_save_atomic,
    write_json_atomic,
)
from scgpt.checkpoint import load_pretrained, load_weights, save_pretrained
from scgpt.corpus import ShardedCorpus, corpus_genes, list_shards, prefetch
from scgpt.model import ModelConfig, TransformerModel
from scgpt.pretrain.config import PretrainConfig
from scgpt.pretrain.objective import PretrainObjective, warmup_cosine
from scgpt.vocab import GeneVocab


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        here = True
    return _Dist(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), here)


def _rng_state(device: torch.device) -> dict[str, Any]:
    # Plain types and tensors only: step files are read back with weights_only=True, which
    # refuses numpy arrays (and anything else that could carry code).
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - exact resume
    state = {
        "python": random.getstate(),
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys, dtype=np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


def _build_vocab(cfg: PretrainConfig, shards: Sequence[Path]) -> GeneVocab:
    if cfg.vocab_path:
        return GeneVocab.from_file(cfg.vocab_path)
    return GeneVocab.from_genes(corpus_genes(shards, cfg.gene_col))


def _build_model(cfg: PretrainConfig, shards: Sequence[Path]) -> tuple[TransformerModel, GeneVocab]:
    if cfg.init_checkpoint:
        model, vocab, _ = load_pretrained(
            cfg.init_checkpoint, use_generative=cfg.objective == "generative"
        )
        model.train()
        return model, vocab
    vocab = _build_vocab(cfg, shards)
    mconf = ModelConfig(
        ntoken=vocab.num_embeddings,
        pad_token_id=vocab.pad_id,
        d_model=cfg.d_model,
        nhead=cfg.nhead,
        d_hid=cfg.d_hid,
        nlayers=cfg.nlayers,
        dropout=cfg.dropout,
        n_bins=cfg.n_bins,
        max_seq_len=cfg.max_seq_len,
        input_emb_style=cfg.input_emb_style,
        pad_value=cfg.pad_value,
        mask_value=cfg.mask_value,
        do_mvc=cfg.do_mvc,
        explicit_zero_prob=cfg.explicit_zero_prob,
        use_generative=cfg.objective == "generative",
    )
    model = TransformerModel(mconf)
    model.vocab = vocab
    return model, vocab


class _LossLog:
    """CSV (and optional TensorBoard) loss log of rank 0; truncated to ``step`` on resume."""

    FIELDS = (
        "step",
        "epoch",
        "batch_in_epoch",
        "loss",
        "loss_gen",
        "loss_mlm",
        "loss_mvc",
        "loss_zero",
        "loss_prompt",
        "lr",
        "cells",
        "tokens",
        "tokens_per_s",
        "elapsed_s",
    )

    def __init__(self, folder: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = folder / "loss.csv"
        rows = []
        if resume_step > 0 and self.path.is_file():
            with self.path.open() as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        self.fh = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=self.FIELDS)
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.fh.flush()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(folder / "tb"), purge_step=resume_step + 1)
            except Exception as err:  # tensorboard is optional
                logger.info("TensorBoard disabled (%s)", err)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k.startswith("loss") or k in ("lr", "tokens_per_s"):
                    self.tb.add_scalar(f"train/{k}", float(v), int(row["step"]))

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


RUN_ONLY_OPTIONS = frozenset(
    {
        "output_dir",
        "device",
        "num_threads",
        "prefetch",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "resume",
        "stop_after_steps",
        "tensorboard",
        "progress",
        "extra",
    }
)
"""Options that may change between an interrupted run and its resumption."""


class IncompatibleRunError(ValueError):
    """The run folder holds checkpoints of a run with other training options."""


def check_resumable(cfg: PretrainConfig, out_dir: Path, fraction: float = 1.0) -> None:
    """Raise :class:`IncompatibleRunError` if ``out_dir``'s checkpoints came from other options.

    Resuming is exact only for the same data, architecture and schedule; a folder whose
    ``run_config.json`` differs in any option outside :data:`RUN_ONLY_OPTIONS` (or in the
    data fraction) is named with the differing options.
    """
    saved_path = out_dir / "run_config.json"
    if not _checkpoints(out_dir / "checkpoints") or not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    current = {**json.loads(json.dumps(cfg.to_dict())), "fraction": fraction}
    differ = sorted(
        key
        for key in current
        if key not in RUN_ONLY_OPTIONS and saved.get(key, current[key]) != current[key]
    )
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differ)
        raise IncompatibleRunError(
            f"{out_dir} holds checkpoints of a pre-training run with other options ({details}); "
            "resuming would mix the two runs. Use another output_dir, delete that folder, or "
            "set resume: false to start over."
        )


def _set_up_process(cfg: PretrainConfig, dist_info: _Dist) -> torch.device:
    """This rank's device, thread count and seed (``seed + rank``)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed + dist_info.rank)
    return device


def _open_corpus(
    cfg: PretrainConfig,
    shards: Sequence[Path],
    vocab: GeneVocab,
    mconf: ModelConfig,
    fraction: float,
    dist_info: _Dist,
) -> tuple[ShardedCorpus, int, int]:
    """This rank's stream of the corpus, its usable micro-batches per epoch and the steps."""
    corpus = ShardedCorpus(
        shards,
        vocab,
        batch_size=cfg.batch_size,
        max_len=cfg.max_seq_len,
        n_bins=cfg.n_bins,
        pad_value=mconf.pad_value,
        cls_value=mconf.pad_value,
        chunk_size=cfg.chunk_size,
        fraction=fraction,
        seed=cfg.seed,
        gene_col=cfg.gene_col,
        normalize_total=cfg.normalize_total,
        log1p=cfg.log1p,
        world_size=dist_info.world,
        rank=dist_info.rank,
    )
    micro_per_epoch = corpus.steps_per_epoch(0) // cfg.grad_accum_steps * cfg.grad_accum_steps
    if micro_per_epoch == 0:
        raise ValueError(
            f"the corpus ({corpus.n_cells} cells at fraction {fraction}) is too small for batch_size "
            f"{cfg.batch_size} x grad_accum_steps {cfg.grad_accum_steps} x {dist_info.world} ranks"
        )
    total_steps = cfg.max_steps or cfg.epochs * micro_per_epoch // cfg.grad_accum_steps
    return corpus, micro_per_epoch, total_steps


@dataclass
class _Progress:
    """Where a run stands (optimizer steps, epoch, micro-batch in the epoch) and its loss sums."""

    step: int = 0
    epoch: int = 0
    pos: int = 0
    steps_this_call: int = 0
    stopped_early: bool = False
    accum: dict[str, Any] = field(default_factory=dict)
    n_accum: int = 0
    t0: float = 0.0
    window: dict[str, float] = field(default_factory=dict)

    def start_clock(self) -> None:
        self.t0 = time.perf_counter()
        self.window = {"tokens": 0, "cells": 0, "t": time.perf_counter()}


@dataclass(eq=False)
class _Run:
    """One pre-training run (one data fraction) of this rank: model, optimizer, corpus, state."""

    cfg: PretrainConfig
    fraction: float
    out_dir: Path
    dist_info: _Dist
    device: torch.device
    model: TransformerModel
    vocab: GeneVocab
    corpus: ShardedCorpus
    micro_per_epoch: int
    total_steps: int
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: _Progress = field(default_factory=_Progress)
    log: _LossLog | None = None
    bar: Any = None

    @classmethod
    def create(
        cls,
        cfg: PretrainConfig,
        fraction: float,
        out_dir: Path,
        dist_info: _Dist,
        device: torch.device,
        model: TransformerModel,
        vocab: GeneVocab,
        corpus: ShardedCorpus,
        micro_per_epoch: int,
        total_steps: int,
    ) -> _Run:
        """Move the model to the device and build its objective (DDP), optimizer and schedule."""
        model.to(device)
        model.train()
        objective: nn.Module = PretrainObjective(model, cfg)
        if dist_info.world > 1:
            objective = nn.parallel.DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None
            )
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
        )
        return cls(
            cfg=cfg,
            fraction=fraction,
            out_dir=out_dir,
            dist_info=dist_info,
            device=device,
            model=model,
            vocab=vocab,
            corpus=corpus,
            micro_per_epoch=micro_per_epoch,
            total_steps=total_steps,
            objective=objective,
            optimizer=optimizer,
            scheduler=scheduler,
        )

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def resume_or_start_over(self) -> None:
        """Resume from the last step checkpoint, or delete the checkpoints if resume is off."""
        cfg, dist_info, ckpt_dir = self.cfg, self.dist_info, self.ckpt_dir
        existing = _checkpoints(ckpt_dir)
        if existing and not cfg.resume:
            if dist_info.main:
                logger.info(
                    "resume is off: deleting the %d checkpoint(s) in %s", len(existing), ckpt_dir
                )
                for path in existing:
                    path.unlink()
            if dist_info.world > 1:
                dist.barrier()
            existing = []
        if existing:
            check_resumable(cfg, self.out_dir, self.fraction)
            # A step file is read like any weights file: tensors and plain values only, never
            # executed (a planted or corrupt file is refused, naming it).
            state = load_weights(existing[-1], map_location="cpu")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            progress = self.progress
            progress.step, progress.epoch = state["step"], state["epoch"]
            progress.pos = state["batch_in_epoch"]
            rng = state["rng"]
            _set_rng_state(rng[dist_info.rank] if isinstance(rng, list) else rng, self.device)
            if dist_info.main:
                logger.info(
                    "resumed from %s (step %d, epoch %d, batch %d)",
                    existing[-1],
                    progress.step,
                    progress.epoch,
                    progress.pos,
                )

    def open_log(self) -> None:
        """The loss log (rank 0) and ``run_config.json`` (options, corpus size, steps, model)."""
        cfg = self.cfg
        self.log = (
            _LossLog(self.out_dir, self.progress.step, cfg.tensorboard)
            if self.dist_info.main
            else None
        )
        if self.dist_info.main:
            write_json_atomic(
                {
                    **cfg.to_dict(),
                    "fraction": self.fraction,
                    "n_cells": self.corpus.n_cells,
                    "total_steps": self.total_steps,
                    "model": self.model.config.to_args_json(),
                },
                self.out_dir / "run_config.json",
            )

    def save_checkpoint(self) -> None:
        """Write ``step_<n>.pt`` (model, optimizer, schedule, position, every rank's RNG)."""
        dist_info, progress = self.dist_info, self.progress
        rng_states: Any = _rng_state(self.device)
        if dist_info.world > 1:
            gathered: list[Any] = [None] * dist_info.world
            dist.all_gather_object(gathered, rng_states)
            rng_states = gathered
        if dist_info.main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": progress.step,
                "epoch": progress.epoch,
                "batch_in_epoch": progress.pos,
                "rng": rng_states,
                "model_config": self.model.config.to_args_json(),
                "vocab": self.vocab.stoi,
                "fraction": self.fraction,
            }
            torch_save_atomic(state, self.ckpt_dir / f"step_{progress.step:09d}.pt")
            for old in _checkpoints(self.ckpt_dir)[: -max(1, self.cfg.keep_checkpoints)]:
                old.unlink(missing_ok=True)
        if dist_info.world > 1:
            dist.barrier()

    def train(self) -> None:
        """Run epochs until ``total_steps`` or ``stop_after_steps``; closes log and corpus."""
        from tqdm.auto import tqdm

        progress = self.progress
        self.bar = tqdm(
            total=self.total_steps,
            initial=progress.step,
            disable=not (self.cfg.progress and self.dist_info.main),
            desc="pretrain",
            dynamic_ncols=True,
        )
        progress.start_clock()
        try:
            while progress.step < self.total_steps and not progress.stopped_early:
                self._train_epoch()
                if progress.step < self.total_steps and not progress.stopped_early:
                    # this epoch's usable batches are used up
                    progress.epoch, progress.pos = progress.epoch + 1, 0
        finally:
            self.bar.close()
            if self.log is not None:
                self.log.close()
            self.corpus.close()

    def _train_epoch(self) -> None:
        """Optimizer steps over the rest of the epoch (from micro-batch ``pos``)."""
        cfg, progress = self.cfg, self.progress
        micro: list[dict[str, torch.Tensor]] = []
        stream = prefetch(self.corpus.iter_batches(progress.epoch, progress.pos), cfg.prefetch)
        try:
            for batch in stream:
                if int(batch["batch_index"]) >= self.micro_per_epoch:
                    break
                micro.append(batch)
                if len(micro) < cfg.grad_accum_steps:
                    continue
                self._accumulate_gradients(micro)
                micro = []
                if self._optimizer_step():
                    break
        finally:
            stream.close()

    def _accumulate_gradients(self, micro: list[dict[str, torch.Tensor]]) -> None:
        """Forward and backward of one step's micro-batches (DDP syncs on the last only)."""
        cfg, dist_info, progress = self.cfg, self.dist_info, self.progress
        prompt = (
            cfg.objective == "generative"
            and cfg.cell_prompt_after is not None
            and progress.step >= cfg.cell_prompt_after
        )
        for i, mb in enumerate(micro):
            # A micro-batch's draws (generation ratio, generated genes) follow its place in
            # the global stream: rank r's b-th batch is batch b * world + r of the epoch. W
            # ranks then draw what one process with W times the accumulation draws for the
            # same cells, and one process (world 1) keeps the draws it always had
            # ([seed, epoch, b, 0]).
            global_index = int(mb["batch_index"]) * dist_info.world + dist_info.rank
            gen = torch.Generator().manual_seed(
                int(
                    np.random.SeedSequence(
                        [cfg.seed, progress.epoch, global_index, 0]
                    ).generate_state(1)[0]
                )
            )
            last = i == len(micro) - 1
            sync = (
                self.objective.no_sync()
                if (dist_info.world > 1 and not last)
                else contextlib.nullcontext()
            )
            with sync:  # forward and backward both inside no_sync (DDP rule)
                with autocast_context(self.device, cfg.precision):
                    parts = self.objective(mb, gen, prompt)
                (parts["loss"] / len(micro)).backward()
            for k, v in parts.items():  # kept on the device: no sync per step
                progress.accum[k] = progress.accum.get(k, 0.0) + v.detach().float()
            progress.n_accum += 1
            progress.window["tokens"] += int((~mb["padding_mask"]).sum())
            progress.window["cells"] += mb["gene_ids"].shape[0]

    def _optimizer_step(self) -> bool:
        """Clip, step, log and checkpoint; True when the epoch loop must stop."""
        cfg, progress = self.cfg, self.progress
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        progress.steps_this_call += 1
        progress.pos += cfg.grad_accum_steps
        self.bar.update(1)
        step, total_steps = progress.step, self.total_steps
        if step % cfg.log_every == 0 or step == total_steps:
            _log_row(
                self.log,
                progress.accum,
                progress.n_accum,
                step,
                progress.epoch,
                progress.pos,
                self.scheduler,
                progress.window,
                progress.t0,
                self.dist_info,
                self.bar,
            )
            progress.accum, progress.n_accum = {}, 0
        stop_now = (
            cfg.stop_after_steps is not None and progress.steps_this_call >= cfg.stop_after_steps
        )
        if step % cfg.save_every == 0 or step == total_steps or stop_now:
            self.save_checkpoint()
        if stop_now and step < total_steps:
            progress.stopped_early = True
        return step >= total_steps or progress.stopped_early

    def export(self) -> Path:
        """Export the model (rank 0), or name the checkpoint to resume from after an early stop."""
        progress, out_dir = self.progress, self.out_dir
        result = _checkpoints(self.ckpt_dir)[-1] if progress.stopped_early else out_dir / "model"
        if not progress.stopped_early and self.dist_info.main:
            extra = {
                "pretrain": {
                    **self.cfg.to_dict(),
                    "fraction": self.fraction,
                    "steps": progress.step,
                    "n_cells": self.corpus.n_cells,
                }
            }
            save_pretrained(
                self.model, self.vocab, self.model.config, out_dir / "model", extra_args=extra
            )
            logger.info("exported the pre-trained model to %s", out_dir / "model")
        if self.dist_info.world > 1:
            dist.barrier()
        return result


def _train_one(cfg: PretrainConfig, fraction: float, out_dir: Path, dist_info: _Dist) -> Path:
    device = _set_up_process(cfg, dist_info)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = list_shards(cfg.data)
    model, vocab = _build_model(cfg, shards)
    if model.config.use_generative is False and cfg.objective == "generative":
        raise ValueError("the generative objective needs a model with use_generative=True")
    corpus, micro_per_epoch, total_steps = _open_corpus(
        cfg, shards, vocab, model.config, fraction, dist_info
    )
    run = _Run.create(
        cfg,
        fraction,
        out_dir,
        dist_info,
        device,
        model,
        vocab,
        corpus,
        micro_per_epoch,
        total_steps,
    )
    run.resume_or_start_over()
    run.open_log()
    run.train()
    return run.export()


def _log_row(
    log: _LossLog | None,
    accum: dict[str, Any],
    n: int,
    step: int,
    epoch: int,
    pos: int,
    scheduler: Any,
    window: dict[str, float],
    t0: float,
    dist_info: _Dist,
    bar: Any,
) -> None:
    means = {k: float(v) / max(1, n) for k, v in accum.items()}
    if dist_info.world > 1:
        keys = sorted(means)
        t = torch.tensor([means[k] for k in keys], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        means = {k: float(x) / dist_info.world for k, x in zip(keys, t.cpu())}
    now = time.perf_counter()
    tps = window["tokens"] * dist_info.world / max(1e-9, now - window["t"])
    row = {
        **means,
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": pos,
        "lr": scheduler.get_last_lr()[0],
        "cells": window["cells"],
        "tokens": window["tokens"],
        "tokens_per_s": round(tps, 1),
        "elapsed_s": round(now - t0, 2),
    }
    window.update(tokens=0, cells=0, t=now)
    if log is not None:
        log.write(row)
        bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", tok_s=f"{tps:.0f}")


def pretrain(config: PretrainConfig) -> Path:
    """Pre-train scGPT as configured.

    Parameters
    ----------
    config
        Options, see :class:`PretrainConfig`.

    Returns
    -------
    Path
        The exported model folder ``<output_dir>/model`` (``args.json``, ``vocab.json``,
        ``best_model.pt``). With ``data_fractions`` one run per fraction goes to
        ``<output_dir>/fraction_<f>/`` and ``<output_dir>`` is returned (``fractions.json``
        lists the exports). When ``stop_after_steps`` ends the call early, the path of the
        checkpoint to resume from is returned.
    """
    out = Path(config.output_dir)
    dist_info = _init_distributed()
    try:
        if not config.data_fractions:
            return _train_one(config, 1.0, out, dist_info)
        exports = {}
        for f in config.data_fractions:
            res = _train_one(config, float(f), out / f"fraction_{f:g}", dist_info)
            exports[f"{f:g}"] = str(res)
        if dist_info.main:
            write_json_atomic(exports, out / "fractions.json")
        return out
    finally:
        if dist_info.initialised_here:
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m scgpt.pretrain --config run.yaml [--set key=value ...]``."""
    import logging

    import yaml

    parser = argparse.ArgumentParser(
        prog="python -m scgpt.pretrain", description="Pre-train scGPT on .h5ad data."
    )
    parser.add_argument("--config", required=True, help="YAML file of PretrainConfig options")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option (value parsed as YAML), repeatable",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    values = yaml.safe_load(Path(args.config).read_text()) or {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        values[key.strip()] = yaml.safe_load(val)
    path = pretrain(PretrainConfig.from_dict(values))
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0
