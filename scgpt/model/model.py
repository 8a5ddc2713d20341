"""The scGPT ``TransformerModel``: encoders, post-norm transformer and task heads.

Submodule names are those of the released checkpoints, so their state dicts load directly
(see :mod:`scgpt.checkpoint` for the mapping of older attention names).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scgpt.losses import ecs_loss
from scgpt.masking import build_generative_mask
from scgpt.model.config import ModelConfig
from scgpt.model.decoders import (
    AdversarialDiscriminator,
    AffineExprDecoder,
    ClsDecoder,
    ExprDecoder,
    MVCDecoder,
)
from scgpt.model.encoders import (
    BatchLabelEncoder,
    CategoryValueEncoder,
    ContinuousValueEncoder,
    DomainSpecificBatchNorm1d,
    GeneEncoder,
)
from scgpt.model.transformer import TransformerEncoder, merge_attention_masks


class TransformerModel(nn.Module):
    """scGPT: a transformer over (gene, value) tokens of one cell.

    Parameters
    ----------
    config
        Architecture, see :class:`~scgpt.model.ModelConfig`.

    Attributes
    ----------
    config
        The configuration.
    vocab
        The :class:`~scgpt.vocab.GeneVocab` when the model came from
        :func:`~scgpt.checkpoint.load_pretrained` (``None`` otherwise).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.vocab: Any = None
        self.encoder = GeneEncoder(c.ntoken, c.d_model, padding_idx=c.pad_token_id)
        if c.use_generative:
            self.flag_encoder = nn.Embedding(2, c.d_model)
        if c.input_emb_style == "continuous":
            self.value_encoder: nn.Module = ContinuousValueEncoder(
                c.d_model,
                c.dropout,
                c.max_value,
                init_value_range=float(c.n_bins),
                special_values=(float(c.mask_value), float(c.pad_value)),
            )
        elif c.input_emb_style == "category":
            pad = int(c.pad_value)
            if not 0 <= pad < c.n_input_bins:
                raise ValueError(
                    f"input_emb_style='category' needs 0 <= pad_value < n_bins + 2, got pad_value={c.pad_value}"
                )
            self.value_encoder = CategoryValueEncoder(c.n_input_bins, c.d_model, padding_idx=pad)
        else:
            self.value_encoder = nn.Identity()
        if c.use_batch_labels:
            self.batch_encoder = BatchLabelEncoder(int(c.num_batch_labels), c.d_model)
        if c.use_mod:
            self.mod_encoder = BatchLabelEncoder(
                int(c.ntokens_mod), c.d_model, padding_idx=c.mod_pad_id
            )
        if c.uses_dsbn:
            self.dsbn = DomainSpecificBatchNorm1d(
                c.d_model,
                int(c.num_batch_labels),
                eps=6.1e-5,
                affine=c.domain_spec_batchnorm == "do_affine",
            )
        elif c.domain_spec_batchnorm == "batchnorm":
            self.bn = nn.BatchNorm1d(c.d_model, eps=6.1e-5)
        if c.use_pert_flags:
            self.pert_encoder = nn.Embedding(3, c.d_model, padding_idx=c.pert_pad_id)
        self.transformer_encoder = TransformerEncoder(
            c.d_model, c.nhead, c.d_hid, c.nlayers, c.dropout, c.norm_scheme, c.layer_norm_eps
        )
        # the decoders' inputs are the token state and, with batch labels and/or modalities,
        # their (summed) embeddings: 2 d
        conditioned = c.use_batch_labels or c.use_mod
        self.decoder: nn.Module = (
            AffineExprDecoder(c.d_model, c.explicit_zero_prob, conditioned)
            if c.expr_decoder_style == "affine"
            else ExprDecoder(c.d_model, c.explicit_zero_prob, conditioned)
        )
        if c.n_cls > 1:
            self.cls_decoder = ClsDecoder(c.d_model, c.n_cls, nlayers=c.nlayers_cls)
        if c.do_mvc:
            self.mvc_decoder = MVCDecoder(
                c.d_model,
                detach_genes=c.mvc_decoder_style.endswith("detach"),
                explicit_zero_prob=c.explicit_zero_prob,
                use_batch_labels=c.use_batch_labels,
                use_mod=c.use_mod,
            )
        if c.do_dab:
            self.grad_reverse_discriminator = AdversarialDiscriminator(
                c.d_model, int(c.num_batch_labels)
            )
        self._init_weights()

    def _init_weights(self) -> None:
        # the released code draws the gene embedding from U(-0.1, 0.1); the pad row stays zero
        with torch.no_grad():
            self.encoder.embedding.weight.uniform_(-0.1, 0.1)
            self.encoder.embedding.weight[self.config.pad_token_id].zero_()

    # ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.encoder.embedding.weight.device

    def _check_batch_labels(self, batch_labels: torch.Tensor | None) -> None:
        c = self.config
        if (c.use_batch_labels or c.uses_dsbn) and batch_labels is None:
            raise ValueError(
                "this model uses batch labels (use_batch_labels or DSBN): pass batch_labels"
            )

    def _input_norm(self, x: torch.Tensor, batch_labels: torch.Tensor | None) -> torch.Tensor:
        if hasattr(self, "dsbn"):
            return self.dsbn(x, batch_labels)
        if hasattr(self, "bn"):
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        return x

    def _embed(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        pert_flags: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        genes = self.encoder(gene_ids)
        if self.config.input_emb_style == "scaling":
            total = genes * values.unsqueeze(-1).to(genes.dtype)
        else:
            total = genes + self.value_encoder(values)
        if pert_flags is not None:
            if not hasattr(self, "pert_encoder"):
                raise ValueError(
                    "pert_flags given but the model has no perturbation encoder (use_pert_flags=False)"
                )
            total = total + self.pert_encoder(pert_flags.long())
        return total, genes

    @staticmethod
    def _set_first_token(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return torch.cat([emb.to(x.dtype).unsqueeze(1), x[:, 1:]], dim=1)

    def encode(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        batch_labels: torch.Tensor | None = None,
        pert_flags: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        input_cell_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states of the last layer, B x L x d.

        Parameters
        ----------
        gene_ids, values
            B x L token ids and values.
        key_padding_mask
            B x L, True at padding.
        batch_labels
            B batch indices (models with batch labels or DSBN).
        pert_flags
            B x L perturbation flags (perturbation model).
        attn_mask
            Extra boolean (True = may attend) or additive mask.
        input_cell_emb
            B x d embedding replacing the first (``<cls>``) input token: the cell-prompt
            condition of generative pre-training.
        """
        return self._encode(
            gene_ids, values, key_padding_mask, batch_labels, pert_flags, attn_mask, input_cell_emb
        )[0]

    def _encode(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        batch_labels: torch.Tensor | None,
        pert_flags: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        input_cell_emb: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_batch_labels(batch_labels)
        total, genes = self._embed(gene_ids, values, pert_flags)
        total = self._input_norm(total, batch_labels)
        if input_cell_emb is not None:
            total = self._set_first_token(total, input_cell_emb)
        return self.transformer_encoder(total, key_padding_mask, attn_mask), genes

    def cell_embedding(
        self,
        hidden: torch.Tensor,
        values: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cell embedding B x d from hidden states, per ``config.cell_emb_style``.

        ``"cls"`` takes position 0; ``"avg-pool"`` averages the non-padding positions;
        ``"w-pool"`` sums the states weighted by the (non-negative) input values and
        L2-normalises, as the official code intends.
        """
        style = self.config.cell_emb_style
        if style == "cls":
            return hidden[:, 0, :]
        keep = (
            torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            if key_padding_mask is None
            else ~key_padding_mask.bool()
        )
        if style == "avg-pool":
            w = keep.to(hidden.dtype)
            return (hidden * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)
        if values is None:
            raise ValueError("cell_emb_style='w-pool' needs the input values as weights")
        w = values.to(hidden.dtype).clamp(min=0) * keep.to(hidden.dtype)
        return F.normalize((hidden * w.unsqueeze(-1)).sum(1), p=2, dim=1)

    def _with_batch(self, x: torch.Tensor, batch_emb: torch.Tensor | None) -> torch.Tensor:
        # ``batch_emb``: B x d (one per cell, repeated over tokens) or B x L x d (per token)
        if batch_emb is None:
            return x
        if x.dim() == 3 and batch_emb.dim() == 3:
            return torch.cat([x, batch_emb.to(x.dtype)], dim=2)
        if x.dim() == 3:
            return torch.cat(
                [x, batch_emb.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)], dim=2
            )
        return torch.cat([x, batch_emb.to(x.dtype)], dim=1)

    def _modality_conditions(
        self,
        batch_emb: torch.Tensor | None,
        mod_types: torch.Tensor | None,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        gene_embs: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Decoder conditions of the multi-omic model (the official ``use_mod`` wiring).

        Returns the per-token condition (batch + modality embedding, B x L x d) joined to
        the expression decoder's input, the per-cell condition of the MVC decoder (batch
        embedding + the modality embeddings pooled like the cell embedding: the ``<cls>``
        token's modality for ``"cls"``) and the MVC decoder's gene side (gene embeddings
        joined with the per-token condition). Without ``use_mod`` they are the batch
        embedding and the gene embeddings as before.
        """
        if not self.config.use_mod:
            return batch_emb, batch_emb, gene_embs
        if mod_types is None:
            raise ValueError("this model uses modality embeddings (use_mod): pass mod_types")
        if mod_types.shape != gene_embs.shape[:2]:
            raise ValueError(
                f"mod_types has shape {tuple(mod_types.shape)}, expected the token shape "
                f"{tuple(gene_embs.shape[:2])}"
            )
        mod_emb = self.mod_encoder(mod_types.long())
        token_cond = mod_emb
        cell_cond = self.cell_embedding(mod_emb, values, key_padding_mask)
        if batch_emb is not None:
            token_cond = token_cond + batch_emb.unsqueeze(1).to(mod_emb.dtype)
            cell_cond = cell_cond + batch_emb.to(cell_cond.dtype)
        genes = torch.cat([gene_embs, token_cond.to(gene_embs.dtype)], dim=2)
        return token_cond, cell_cond, genes

    def _heads(
        self,
        out: dict[str, torch.Tensor],
        cell_emb: torch.Tensor,
        gene_embs: torch.Tensor,
        batch_emb: torch.Tensor | None,
        *,
        CLS: bool,
        MVC: bool,
        ECS: bool,
        DAB: bool,
        do_sample: bool,
    ) -> dict[str, torch.Tensor]:
        out["cell_emb"] = cell_emb
        if CLS:
            if not hasattr(self, "cls_decoder"):
                raise ValueError("CLS=True but the model has no classification head (n_cls <= 1)")
            out["cls_output"] = self.cls_decoder(cell_emb)
        if MVC:
            if not hasattr(self, "mvc_decoder"):
                raise ValueError("MVC=True but the model has no MVC decoder (do_mvc=False)")
            mvc = self.mvc_decoder(self._with_batch(cell_emb, batch_emb), gene_embs)
            out["mvc_output"] = self._maybe_sample(mvc, do_sample)
            if "zero_probs" in mvc:
                out["mvc_zero_probs"] = mvc["zero_probs"]
        if ECS:
            out["loss_ecs"] = ecs_loss(cell_emb, self.config.ecs_threshold)
        if DAB:
            if not hasattr(self, "grad_reverse_discriminator"):
                raise ValueError("DAB=True but the model has no discriminator (do_dab=False)")
            out["dab_output"] = self.grad_reverse_discriminator(cell_emb)
        return out

    @staticmethod
    def _maybe_sample(dec: dict[str, torch.Tensor], do_sample: bool) -> torch.Tensor:
        if do_sample and "zero_probs" in dec:
            return torch.bernoulli(dec["zero_probs"].float()).to(dec["pred"].dtype) * dec["pred"]
        return dec["pred"]

    def forward(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        batch_labels: torch.Tensor | None = None,
        pert_flags: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        input_cell_emb: torch.Tensor | None = None,
        CLS: bool = False,
        MVC: bool = False,
        ECS: bool = False,
        DAB: bool = False,
        do_sample: bool = False,
        mod_types: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the model on a padded batch.

        Parameters
        ----------
        gene_ids, values, key_padding_mask
            B x L token ids, values and padding mask (True at padding).
        batch_labels, pert_flags, attn_mask, input_cell_emb
            See :meth:`encode`.
        mod_types
            B x L modality index of every token (models with ``use_mod``); the modality
            embedding conditions the decoders only, so the cell embedding does not need it.
        CLS, MVC, ECS, DAB
            Compute the classifier logits, the MVC prediction, the ECS loss and the batch
            discriminator logits.
        do_sample
            With explicit zero probabilities, multiply predictions by a Bernoulli sample
            instead of returning the raw regression output.

        Returns
        -------
        dict
            ``cell_emb`` (B x d), ``mlm_output`` (B x L) and, as requested / available,
            ``mlm_zero_probs``, ``cls_output``, ``mvc_output``, ``mvc_zero_probs``,
            ``loss_ecs``, ``dab_output``.
        """
        hidden, gene_embs = self._encode(
            gene_ids, values, key_padding_mask, batch_labels, pert_flags, attn_mask, input_cell_emb
        )
        batch_emb = self.batch_encoder(batch_labels) if hasattr(self, "batch_encoder") else None
        token_cond, cell_cond, gene_side = self._modality_conditions(
            batch_emb, mod_types, values, key_padding_mask, gene_embs
        )
        dec_in = self._with_batch(hidden, token_cond)
        dec = (
            self.decoder(dec_in, values)
            if isinstance(self.decoder, AffineExprDecoder)
            else self.decoder(dec_in)
        )
        out: dict[str, torch.Tensor] = {"mlm_output": self._maybe_sample(dec, do_sample)}
        if "zero_probs" in dec:
            out["mlm_zero_probs"] = dec["zero_probs"]
        cell_emb = self.cell_embedding(hidden, values, key_padding_mask)
        return self._heads(
            out,
            cell_emb,
            gene_side,
            cell_cond,
            CLS=CLS,
            MVC=MVC,
            ECS=ECS,
            DAB=DAB,
            do_sample=do_sample,
        )

    def generative_forward(
        self,
        known_gene_ids: torch.Tensor,
        known_values: torch.Tensor,
        known_padding_mask: torch.Tensor,
        gen_gene_ids: torch.Tensor,
        gen_padding_mask: torch.Tensor,
        *,
        batch_labels: torch.Tensor | None = None,
        input_cell_emb: torch.Tensor | None = None,
        MVC: bool = False,
        ECS: bool = False,
        do_sample: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Generative pass: predict the values of ``gen_gene_ids`` from the known tokens.

        The sequence is ``[known..., to-generate...]``; tokens to generate carry their gene
        embedding plus the learned flag ``flag_encoder.weight[1]`` and no value, and attend
        to the known tokens and themselves only (:func:`scgpt.masking.generative_attention_mask`).

        Parameters
        ----------
        known_gene_ids, known_values, known_padding_mask
            B x Lk known part (``<cls>`` first).
        gen_gene_ids, gen_padding_mask
            B x Lg genes to generate.
        batch_labels
            As in :meth:`encode`.
        input_cell_emb
            B x d cell embedding fed back in place of the ``<cls>`` input (cell prompt).
        MVC, ECS, do_sample
            As in :meth:`forward`.

        Returns
        -------
        dict
            ``gen_preds`` (B x Lg), ``pcpt_preds`` (B x Lk), ``cell_emb`` and, with MVC,
            ``mvc_output`` over both parts (B x (Lk + Lg)) and ``gen_mvc_output`` (B x Lg).
        """
        if isinstance(self.decoder, AffineExprDecoder):
            raise ValueError(
                "generative_forward needs expr_decoder_style='mlp': the affine decoder scales "
                "input values, which tokens to generate do not have"
            )
        if not hasattr(self, "flag_encoder"):
            raise ValueError(
                "generative_forward needs a model with use_generative=True (flag_encoder)"
            )
        if self.config.use_mod:
            raise ValueError("generative_forward does not support modality embeddings (use_mod)")
        self._check_batch_labels(batch_labels)
        known_total, known_genes = self._embed(known_gene_ids, known_values, None)
        gen_genes = self.encoder(gen_gene_ids)
        flag = self.flag_encoder.weight[1].to(gen_genes.dtype)
        gen_total = gen_genes + flag
        # batch statistics are taken on each part separately, as in the released code
        known_total = self._input_norm(known_total, batch_labels)
        gen_total = self._input_norm(gen_total, batch_labels)
        if input_cell_emb is not None:
            known_total = self._set_first_token(known_total, input_cell_emb)
        n_known = known_total.shape[1]
        x = torch.cat([known_total, gen_total.to(known_total.dtype)], dim=1)
        mask = build_generative_mask(known_padding_mask, gen_padding_mask)
        hidden = self.transformer_encoder(
            x, None, mask, raw_from=n_known if self.config.legacy_gen_attention else None
        )
        batch_emb = self.batch_encoder(batch_labels) if hasattr(self, "batch_encoder") else None
        dec = self.decoder(self._with_batch(hidden, batch_emb))
        preds = self._maybe_sample(dec, do_sample)
        out: dict[str, torch.Tensor] = {
            "pcpt_preds": preds[:, :n_known],
            "gen_preds": preds[:, n_known:],
        }
        if "zero_probs" in dec:
            out["zero_probs"] = dec["zero_probs"]
        cell_emb = self.cell_embedding(hidden[:, :n_known], known_values, known_padding_mask)
        out = self._heads(
            out,
            cell_emb,
            torch.cat([known_genes, gen_genes], dim=1),
            batch_emb,
            CLS=False,
            MVC=MVC,
            ECS=ECS,
            DAB=False,
            do_sample=do_sample,
        )
        if MVC:
            out["gen_mvc_output"] = out["mvc_output"][:, n_known:]
        return out

    # convenience -------------------------------------------------------------------------
    def get_cell_embeddings(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        batch_labels: torch.Tensor | None = None,
        normalize: bool = False,
    ) -> torch.Tensor:
        """Cell embeddings B x d (L2-normalised with ``normalize=True``)."""
        hidden = self.encode(gene_ids, values, key_padding_mask, batch_labels=batch_labels)
        emb = self.cell_embedding(hidden, values, key_padding_mask)
        return F.normalize(emb.float(), p=2, dim=1) if normalize else emb

    def gene_embeddings(self, gene_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Gene token embeddings (embedding + LayerNorm), for ``gene_ids`` or the whole vocabulary."""
        if gene_ids is None:
            gene_ids = torch.arange(self.config.ntoken, device=self.device)
        return self.encoder(gene_ids.to(self.device))

    def attention_scores(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        *,
        layer: int = -1,
        batch_labels: torch.Tensor | None = None,
        pert_flags: torch.Tensor | None = None,
        softmax: bool = True,
    ) -> torch.Tensor:
        """Attention of one layer, B x H x L x L (the attention-GRN input).

        Probabilities, or with ``softmax=False`` the raw scores ``q k^T`` the GRN tutorial
        rank-normalises (see :meth:`SelfAttention.attention_weights`).
        """
        self._check_batch_labels(batch_labels)
        n = len(self.transformer_encoder.layers)
        layer = layer % n
        total, _ = self._embed(gene_ids, values, pert_flags)
        x = self._input_norm(total, batch_labels)
        mask = merge_attention_masks(key_padding_mask, None)
        for i, mod in enumerate(self.transformer_encoder.layers):
            if i == layer:
                inp = mod.norm1(x) if mod.norm_scheme == "pre" else x
                return mod.self_attn.attention_weights(inp, mask, softmax=softmax)
            x = mod(x, mask)
        raise AssertionError("unreachable")  # pragma: no cover
