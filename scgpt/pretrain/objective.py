"""Loss of one pre-training batch (generative or masked objective) and the LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from scgpt.losses import masked_bernoulli_nll, masked_mse
from scgpt.masking import mask_values, sample_ratio, split_for_generation
from scgpt.model import TransformerModel
from scgpt.pretrain.config import PretrainConfig


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PretrainObjective(nn.Module):
    """The whole per-batch loss in one ``forward`` (so DDP sees one forward per backward).

    Parameters
    ----------
    model
        The scGPT model.
    config
        Pre-training options (objective, ratios, MVC, zero-probability head).
    """

    def __init__(self, model: TransformerModel, config: PretrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = config

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, prompt: bool
    ) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch: ``loss`` plus its parts."""
        cfg, m = self.cfg, self.model
        device = m.device
        mc = m.config
        if cfg.objective == "generative":
            ratio = sample_ratio(cfg.gen_ratios, generator)
            gb = split_for_generation(
                batch["gene_ids"],
                batch["values"],
                batch["padding_mask"],
                gen_ratio=ratio,
                pad_id=mc.pad_token_id,
                pad_value=mc.pad_value,
                generator=generator,
            ).to(device)
            target_mask = ~gb.gen_padding_mask
            out = m.generative_forward(
                gb.known_gene_ids,
                gb.known_values,
                gb.known_padding_mask,
                gb.gen_gene_ids,
                gb.gen_padding_mask,
                MVC=mc.do_mvc,
            )
            parts = {"loss_gen": masked_mse(out["gen_preds"], gb.gen_target, target_mask)}
            if mc.do_mvc:
                parts["loss_mvc"] = masked_mse(out["gen_mvc_output"], gb.gen_target, target_mask)
            if mc.explicit_zero_prob:
                n_known = gb.known_gene_ids.shape[1]
                parts["loss_zero"] = masked_bernoulli_nll(
                    out["zero_probs"][:, n_known:], gb.gen_target, target_mask
                )
            if prompt:
                out2 = m.generative_forward(
                    gb.known_gene_ids,
                    gb.known_values,
                    gb.known_padding_mask,
                    gb.gen_gene_ids,
                    gb.gen_padding_mask,
                    input_cell_emb=out["cell_emb"].detach(),
                )
                parts["loss_prompt"] = masked_mse(out2["gen_preds"], gb.gen_target, target_mask)
        else:
            ratio = sample_ratio(cfg.mask_ratios, generator)
            values = batch["values"]
            masked, mask = mask_values(
                values,
                batch["padding_mask"],
                mask_ratio=ratio,
                mask_value=mc.mask_value,
                generator=generator,
            )
            gene_ids, pad = batch["gene_ids"].to(device), batch["padding_mask"].to(device)
            values, masked, mask = values.to(device), masked.to(device), mask.to(device)
            out = m(gene_ids, masked, pad, MVC=mc.do_mvc)
            parts = {"loss_mlm": masked_mse(out["mlm_output"], values, mask)}
            if mc.do_mvc:
                parts["loss_mvc"] = masked_mse(out["mvc_output"], values, mask)
            if mc.explicit_zero_prob:
                parts["loss_zero"] = masked_bernoulli_nll(out["mlm_zero_probs"], values, mask)
        parts["loss"] = sum(parts.values())  # type: ignore[assignment]
        return parts
