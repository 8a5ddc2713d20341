"""Training and inference throughput of the scGPT model (tokens/s, cells/s, MFU).

Usage::

    .venv/bin/python benchmarks/model_throughput.py [--output benchmarks/results/model_throughput.json]
        [--devices cpu,cuda] [--models tiny,scgpt-12L] [--steps 2] [--max-len 1200] [--threads N]

Two models at ``max_len`` tokens per cell (no padding): ``tiny`` (2 layers, d 64, 4 heads,
d_hid 64) and ``scgpt-12L`` (the released size: 12 layers, d 512, 8 heads, d_hid 512), both
with the CELLxGENE vocabulary size (60,697). Modes:

* ``train``: MLM-style objective (masked values, expression decoder + MVC), forward +
  backward + AdamW step (bf16 autocast on CUDA, fp32 on CPU).
* ``inference``: encoder forward for cell embeddings under ``torch.inference_mode``.

FLOPs: see ``FLOPS_FORMULA`` below (matrix products only).

MFU = achieved FLOP/s / peak FLOP/s. GPU peaks are the vendor's dense bf16 numbers (table
below, or ``--peak-tflops``); the CPU peak is an estimate: threads x clock x FP32 FLOPs per
cycle (64 with AVX-512 FMA, 32 with AVX2 FMA, 16 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scgpt._utils import autocast_context, write_json_atomic
from scgpt.losses import masked_mse
from scgpt.masking import mask_values
from scgpt.model import ModelConfig, TransformerModel

FLOPS_FORMULA = """\
Matrix products only, 2 FLOPs per multiply-add; L = tokens per cell, d = d_model, h = d_hid,
n = layers.
  per token, per layer   = 2*3d^2 (Wqkv) + 2d^2 (out_proj) + 4dh (FFN) + 4Ld (QK^T and AV)
  encoder per token      = n * per-layer + 2d^2 + 2d (value encoder)
  heads per token        = 4d^2 + 2d (expression decoder) + 4d^2 + 2d (MVC gene2query and W)
  train FLOPs / cell     = 3 * L * (encoder + heads)   (backward ~ 2x forward)
  inference FLOPs / cell = L * encoder
"""

VOCAB_SIZE = 60_697
GPU_PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
}


@dataclass(frozen=True)
class ModelSize:
    name: str
    d_model: int
    nlayers: int
    nhead: int
    d_hid: int


SIZES = {
    "tiny": ModelSize("tiny", 64, 2, 4, 64),
    "scgpt-12L": ModelSize("scgpt-12L", 512, 12, 8, 512),
}


def flops_per_cell(size: ModelSize, L: int, mode: str) -> float:
    """Matrix-product FLOPs for one cell of ``L`` tokens (see the module docstring)."""
    d, h, n = size.d_model, size.d_hid, size.nlayers
    layer = 6 * d * d + 2 * d * d + 4 * d * h + 4 * L * d
    encoder = n * layer + 2 * d * d + 2 * d
    if mode == "inference":
        return float(L * encoder)
    heads = 4 * d * d + 2 * d + 4 * d * d + 2 * d
    return float(3 * L * (encoder + heads))


def cpu_peak_flops(threads: int) -> tuple[float | None, str]:
    """Estimated FP32 peak of ``threads`` cores and how it was estimated."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unknown (no /proc/cpuinfo)"
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 16
    mhz = None
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        mhz = int(max_freq.read_text()) / 1000
    else:
        vals = [float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
        mhz = max(vals) if vals else None
    if mhz is None:
        return None, "unknown clock"
    peak = threads * mhz * 1e6 * per_cycle
    return peak, f"{threads} threads x {mhz:.0f} MHz x {per_cycle} FP32 FLOP/cycle"


def gpu_peak_flops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"--peak-tflops {override}"
    for key, tf in GPU_PEAK_BF16_TFLOPS.items():
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return tf * 1e12, f"{key} dense bf16 {tf} TFLOP/s"
    return None, f"unknown peak for {name}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    size: ModelSize, device: torch.device, mode: str, batch_size: int, L: int, steps: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        ntoken=VOCAB_SIZE,
        pad_token_id=VOCAB_SIZE - 3,
        d_model=size.d_model,
        nhead=size.nhead,
        d_hid=size.d_hid,
        nlayers=size.nlayers,
        dropout=0.0 if mode == "inference" else 0.2,
        max_seq_len=L,
    )
    model = TransformerModel(cfg).to(device)
    gene_ids = torch.randint(0, VOCAB_SIZE - 3, (batch_size, L), device=device)
    values = torch.randint(1, 51, (batch_size, L), device=device).float()
    pad = torch.zeros(batch_size, L, dtype=torch.bool, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        if mode == "train":
            model.train()
            masked, mask = mask_values(
                values.cpu(), pad.cpu(), mask_ratio=0.4, mask_value=-1.0, generator=gen
            )
            masked, mask = masked.to(device), mask.to(device)
            with autocast_context(device):
                out = model(gene_ids, masked, pad, MVC=True)
                loss = masked_mse(out["mlm_output"], values, mask) + masked_mse(
                    out["mvc_output"], values, mask
                )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.inference_mode(), autocast_context(device):
                model.get_cell_embeddings(gene_ids, values, pad)

    step()  # warm-up (allocations, kernel selection)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    flops = flops_per_cell(size, L, mode) * batch_size
    res = {
        "model": size.name,
        "device": device.type,
        "mode": mode,
        "batch_size": batch_size,
        "seq_len": L,
        "steps_timed": steps,
        "s_per_step": round(dt, 4),
        "cells_per_s": round(batch_size / dt, 3),
        "tokens_per_s": round(batch_size * L / dt, 1),
        "flops_per_step": flops,
        "achieved_tflops": round(flops / dt / 1e12, 5),
        "params": sum(p.numel() for p in model.parameters()),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }
    if device.type == "cuda":
        res["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="benchmarks/results/model_throughput.json")
    p.add_argument(
        "--devices", default="cpu,cuda", help="comma list; cuda is skipped when unavailable"
    )
    p.add_argument("--models", default="tiny,scgpt-12L")
    p.add_argument(
        "--steps", type=int, default=2, help="timed steps per measurement (after one warm-up)"
    )
    p.add_argument("--max-len", type=int, default=1200)
    p.add_argument("--cpu-batch", default="tiny=4,scgpt-12L=1")
    p.add_argument("--cuda-batch", default="tiny=64,scgpt-12L=32")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="GPU peak (dense bf16) if not in the table"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = {
        "cpu": {k: int(v) for k, v in (kv.split("=") for kv in args.cpu_batch.split(","))},
        "cuda": {k: int(v) for k, v in (kv.split("=") for kv in args.cuda_batch.split(","))},
    }
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    results = []
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        env["loadavg"] = os.getloadavg()
    except OSError:
        pass
    cpu_peak, cpu_note = cpu_peak_flops(torch.get_num_threads())
    env["cpu_peak_estimate"] = cpu_note
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    for dev_name in devices:
        device = torch.device(dev_name)
        if dev_name == "cuda":
            peak, note = gpu_peak_flops(env["gpu"], args.peak_tflops)
            env["gpu_peak"] = note
        else:
            peak = cpu_peak
        for model_name in args.models.split(","):
            size = SIZES[model_name]
            for mode in ("train", "inference"):
                r = bench(
                    size, device, mode, batches[dev_name][model_name], args.max_len, args.steps
                )
                r["peak_tflops"] = None if peak is None else round(peak / 1e12, 3)
                r["mfu"] = None if peak is None else round(r["achieved_tflops"] * 1e12 / peak, 5)
                results.append(r)
                print(json.dumps(r), flush=True)
    out = Path(args.output)
    write_json_atomic(
        {
            "environment": env,
            "flops_formula": FLOPS_FORMULA,
            "results": results,
        },
        out,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
