"""CPU training and inference speed of this scGPT beside the reference implementation.

Usage::

    .venv/bin/python benchmarks/training_speed.py --reference /path/to/bowang-lab/scGPT \\
        [--threads 1,2] [--repeats 5] [--output benchmarks/results/training_speed.json]

``--reference`` is a checkout of https://github.com/bowang-lab/scGPT (any folder holding its
``scgpt/model/``): its ``TransformerModel`` is imported from ``scgpt/model/model.py`` by file
path (with ``dsbn.py``, ``grad_reverse.py`` and ``flash_attn_compat.py`` beside it), so only
torch, numpy and tqdm are needed; nothing of it is copied here. Without flash-attn it builds
``nn.TransformerEncoder`` layers, which is what it runs on a CPU. Without ``--reference`` only
this implementation is timed.

What is timed, per shape and thread count, alternating the two implementations step by step
(so a slower or busier moment hits both) and reporting the median of ``--repeats`` steps:

* ``train``: the masked-value objective (GEP + GEPC/MVC, 40% of values masked), forward,
  backward and an AdamW step, at the tutorial's dropout 0.2 (the same on every dropout of
  both models) and at dropout 0 (the demo atlas model's);
* ``inference``: the encoder forward for cell embeddings under ``torch.inference_mode``.

Both models get the same weights (ours loaded into the reference by the checkpoint name
mapping, so the outputs at dropout 0 are compared too: ``max_abs_diff``). FLOPs as in
``model_throughput.py`` (matrix products only); the CPU peak is *measured*: the best of
several 2048 x 2048 fp32 matmuls in torch on the same threads, and each row gives its
fraction of it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scgpt._utils import write_json_atomic
from scgpt.losses import masked_mse
from scgpt.masking import mask_values
from scgpt.model import ModelConfig, TransformerModel

#: (name, layers, d_model, heads, d_hid, tokens per cell, cells per batch, vocabulary)
SHAPES = [
    ("4x128 L512", 4, 128, 4, 128, 512, 8, 60_697),
    ("demo atlas 2x128 L128", 2, 128, 8, 256, 128, 32, 2_000),
    ("scGPT 12x512 L1200", 12, 512, 8, 512, 1200, 2, 60_697),
]


def flops_per_cell(layers: int, d: int, d_hid: int, L: int, mode: str) -> float:
    """Matrix-product FLOPs per cell (the formula of ``model_throughput.py``)."""
    per_layer = 2 * 3 * d * d + 2 * d * d + 4 * d * d_hid + 4 * L * d
    encoder = layers * per_layer + 2 * d * d + 2 * d
    heads = 4 * d * d + 2 * d + 4 * d * d + 2 * d
    if mode == "train":
        return 3.0 * L * (encoder + heads)
    return float(L * encoder)


def measured_peak_gflops(repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a 2048 x 2048 matmul on the current threads."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def load_reference(root: Path) -> Any:
    """The reference ``TransformerModel`` class, imported from its files (not installed)."""
    folder = root / "scgpt" / "model"
    if not (folder / "model.py").is_file():
        raise FileNotFoundError(f"{folder / 'model.py'}: not a checkout of bowang-lab/scGPT")
    package = types.ModuleType("_reference_scgpt_model")
    package.__path__ = [str(folder)]
    sys.modules[package.__name__] = package
    for name in ("flash_attn_compat", "dsbn", "grad_reverse", "model"):
        spec = importlib.util.spec_from_file_location(
            f"{package.__name__}.{name}", folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[f"{package.__name__}.model"].TransformerModel


def build_pair(shape: tuple, dropout: float, reference_cls: Any) -> tuple[Any, Any]:
    _, layers, d, heads, d_hid, _, _, vocab = shape
    ours = TransformerModel(
        ModelConfig(
            ntoken=vocab,
            d_model=d,
            nhead=heads,
            d_hid=d_hid,
            nlayers=layers,
            dropout=dropout,
            do_mvc=True,
            pad_token_id=0,
            use_generative=False,
        )
    )
    if reference_cls is None:
        return ours, None
    ref = reference_cls(
        ntoken=vocab,
        d_model=d,
        nhead=heads,
        d_hid=d_hid,
        nlayers=layers,
        vocab={"<pad>": 0},
        dropout=dropout,
        pad_token="<pad>",
        pad_value=-2,
        do_mvc=True,
        input_emb_style="continuous",
        cell_emb_style="cls",
        mvc_decoder_style="inner product",
        use_fast_transformer=False,
    )
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        # nn.TransformerEncoderLayer names the packed q, k, v projection in_proj_*.
        target = key.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight").replace(
            "self_attn.Wqkv.bias", "self_attn.in_proj_bias"
        )
        if target in ref_state and ref_state[target].shape == value.shape:
            ref_state[target] = value
    missing = ref.load_state_dict(ref_state, strict=False)
    if missing.missing_keys:
        raise RuntimeError(f"reference model: weights not set: {missing.missing_keys}")
    return ours, ref


def make_step(model: Any, batch: dict[str, torch.Tensor], mode: str, reference: bool):
    """A closure running one timed step."""
    gene_ids, values, pad = batch["genes"], batch["values"], batch["pad"]
    if mode == "inference":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                if reference:
                    model._encode(gene_ids, values, pad)
                else:
                    model.encode(gene_ids, values, pad)

        return step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        masked, mask = mask_values(values, pad, mask_ratio=0.4, mask_value=-1.0, generator=gen)
        out = model(gene_ids, masked, pad, MVC=True)
        loss = masked_mse(out["mlm_output"], values, mask) + masked_mse(
            out["mvc_output"], values, mask
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_pair(steps: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up (allocator, lazy init)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default=",".join(str(i) for i in range(len(SHAPES))))
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/training_speed.json")
    )
    args = parser.parse_args(argv)
    reference_cls = load_reference(args.reference) if args.reference else None
    rows: list[dict[str, Any]] = []
    peaks: dict[int, float] = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        peaks[threads] = measured_peak_gflops()
        print(f"{threads} thread(s): measured fp32 matmul peak {peaks[threads]:.1f} GFLOP/s")
        for index in [int(i) for i in args.shapes.split(",")]:
            shape = SHAPES[index]
            name, layers, d, _, d_hid, L, B, vocab = shape
            for mode, dropout in (("train", 0.2), ("train", 0.0), ("inference", 0.0)):
                torch.manual_seed(0)
                ours, ref = build_pair(shape, dropout, reference_cls)
                g = torch.Generator().manual_seed(1)
                batch = {
                    "genes": torch.randint(1, vocab, (B, L), generator=g),
                    "values": torch.rand(B, L, generator=g) * 50,
                    "pad": torch.zeros(B, L, dtype=torch.bool),
                }
                steps = {"ours": make_step(ours, batch, mode, reference=False)}
                if ref is not None:
                    steps["reference"] = make_step(ref, batch, mode, reference=True)
                diff = None
                if ref is not None and dropout == 0.0:
                    ours.eval(), ref.eval()
                    with torch.no_grad():
                        a = ours.encode(batch["genes"], batch["values"], batch["pad"])
                        b = ref._encode(batch["genes"], batch["values"], batch["pad"])
                    diff = float((a - b).abs().max())
                times = time_pair(steps, args.repeats)
                flops = flops_per_cell(layers, d, d_hid, L, mode) * B
                row: dict[str, Any] = {
                    "shape": name,
                    "mode": mode,
                    "dropout": dropout,
                    "threads": threads,
                    "batch": B,
                    "tokens_per_cell": L,
                    "max_abs_diff_eval_output": diff,
                }
                for impl, values in times.items():
                    median = statistics.median(values)
                    row[f"{impl}_s_per_step"] = round(median, 4)
                    row[f"{impl}_gflops"] = round(flops / median / 1e9, 2)
                    row[f"{impl}_fraction_of_peak"] = round(
                        flops / median / 1e9 / peaks[threads], 4
                    )
                if "reference" in times:
                    row["speedup_vs_reference"] = round(
                        row["reference_s_per_step"] / row["ours_s_per_step"], 3
                    )
                rows.append(row)
                print(
                    f"  {name:24s} {mode:9s} dropout {dropout}: ours {row['ours_s_per_step']:.3f} s"
                    + (
                        f", reference {row['reference_s_per_step']:.3f} s, "
                        f"x{row['speedup_vs_reference']}"
                        if "reference" in times
                        else ""
                    )
                )
    write_json_atomic(
        {
            "command": "benchmarks/training_speed.py " + " ".join(argv or sys.argv[1:]),
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "loadavg_after": os.getloadavg(),
                "measured_fp32_peak_gflops": peaks,
            },
            "rows": rows,
        },
        args.output,
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
