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
from dataclasses import dataclass
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


def _train_one(cfg: PretrainConfig, fraction: float, out_dir: Path, dist_info: _Dist) -> Path:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed + dist_info.rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    shards = list_shards(cfg.data)

    model, vocab = _build_model(cfg, shards)
    mconf = model.config
    if mconf.use_generative is False and cfg.objective == "generative":
        raise ValueError("the generative objective needs a model with use_generative=True")
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

    step, epoch, pos = 0, 0, 0
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
        check_resumable(cfg, out_dir, fraction)
        # A step file is read like any weights file: tensors and plain values only, never
        # executed (a planted or corrupt file is refused, naming it).
        state = load_weights(existing[-1], map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, pos = state["step"], state["epoch"], state["batch_in_epoch"]
        rng = state["rng"]
        _set_rng_state(rng[dist_info.rank] if isinstance(rng, list) else rng, device)
        if dist_info.main:
            logger.info(
                "resumed from %s (step %d, epoch %d, batch %d)", existing[-1], step, epoch, pos
            )

    log = _LossLog(out_dir, step, cfg.tensorboard) if dist_info.main else None
    if dist_info.main:
        write_json_atomic(
            {
                **cfg.to_dict(),
                "fraction": fraction,
                "n_cells": corpus.n_cells,
                "total_steps": total_steps,
                "model": mconf.to_args_json(),
            },
            out_dir / "run_config.json",
        )

    def save_checkpoint() -> None:
        rng_states: Any = _rng_state(device)
        if dist_info.world > 1:
            gathered: list[Any] = [None] * dist_info.world
            dist.all_gather_object(gathered, rng_states)
            rng_states = gathered
        if dist_info.main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": pos,
                "rng": rng_states,
                "model_config": mconf.to_args_json(),
                "vocab": vocab.stoi,
                "fraction": fraction,
            }
            torch_save_atomic(state, ckpt_dir / f"step_{step:09d}.pt")
            for old in _checkpoints(ckpt_dir)[: -max(1, cfg.keep_checkpoints)]:
                old.unlink(missing_ok=True)
        if dist_info.world > 1:
            dist.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (cfg.progress and dist_info.main),
        desc="pretrain",
        dynamic_ncols=True,
    )
    steps_this_call = 0
    t0 = time.perf_counter()
    window = {"tokens": 0, "cells": 0, "t": time.perf_counter()}
    accum: dict[str, Any] = {}
    n_accum = 0
    stopped_early = False
    try:
        while step < total_steps and not stopped_early:
            micro: list[dict[str, torch.Tensor]] = []
            stream = prefetch(corpus.iter_batches(epoch, pos), cfg.prefetch)
            try:
                for batch in stream:
                    if int(batch["batch_index"]) >= micro_per_epoch:
                        break
                    micro.append(batch)
                    if len(micro) < cfg.grad_accum_steps:
                        continue
                    prompt = (
                        cfg.objective == "generative"
                        and cfg.cell_prompt_after is not None
                        and step >= cfg.cell_prompt_after
                    )
                    for i, mb in enumerate(micro):
                        # A micro-batch's draws (generation ratio, generated genes) follow its
                        # place in the global stream: rank r's b-th batch is batch b * world + r
                        # of the epoch. W ranks then draw what one process with W times the
                        # accumulation draws for the same cells, and one process (world 1)
                        # keeps the draws it always had ([seed, epoch, b, 0]).
                        global_index = int(mb["batch_index"]) * dist_info.world + dist_info.rank
                        gen = torch.Generator().manual_seed(
                            int(
                                np.random.SeedSequence(
                                    [cfg.seed, epoch, global_index, 0]
                                ).generate_state(1)[0]
                            )
                        )
                        last = i == len(micro) - 1
                        sync = (
                            objective.no_sync()
                            if (dist_info.world > 1 and not last)
                            else contextlib.nullcontext()
                        )
                        with sync:  # forward and backward both inside no_sync (DDP rule)
                            with autocast_context(device, cfg.precision):
                                parts = objective(mb, gen, prompt)
                            (parts["loss"] / len(micro)).backward()
                        for k, v in parts.items():  # kept on the device: no sync per step
                            accum[k] = accum.get(k, 0.0) + v.detach().float()
                        n_accum += 1
                        window["tokens"] += int((~mb["padding_mask"]).sum())
                        window["cells"] += mb["gene_ids"].shape[0]
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    micro = []
                    step += 1
                    steps_this_call += 1
                    pos += cfg.grad_accum_steps
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == total_steps:
                        _log_row(
                            log,
                            accum,
                            n_accum,
                            step,
                            epoch,
                            pos,
                            scheduler,
                            window,
                            t0,
                            dist_info,
                            bar,
                        )
                        accum, n_accum = {}, 0
                    stop_now = (
                        cfg.stop_after_steps is not None and steps_this_call >= cfg.stop_after_steps
                    )
                    if step % cfg.save_every == 0 or step == total_steps or stop_now:
                        save_checkpoint()
                    if stop_now and step < total_steps:
                        stopped_early = True
                    if step >= total_steps or stopped_early:
                        break
            finally:
                stream.close()
            if step < total_steps and not stopped_early:
                epoch, pos = epoch + 1, 0  # this epoch's usable batches are used up
    finally:
        bar.close()
        if log is not None:
            log.close()
        corpus.close()

    result = _checkpoints(ckpt_dir)[-1] if stopped_early else out_dir / "model"
    if not stopped_early and dist_info.main:
        extra = {
            "pretrain": {
                **cfg.to_dict(),
                "fraction": fraction,
                "steps": step,
                "n_cells": corpus.n_cells,
            }
        }
        save_pretrained(model, vocab, mconf, out_dir / "model", extra_args=extra)
        logger.info("exported the pre-trained model to %s", out_dir / "model")
    if dist_info.world > 1:
        dist.barrier()
    return result


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
