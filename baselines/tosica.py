"""TOSICA (Chen et al. 2023, Nat Commun 14:223), re-implemented from the paper and its code.

Architecture (paper defaults):

- Input: log1p(CP10k) expression of every gene of the dataset.
- Gene-set-masked embedding: one token per gene set ("pathway"); token ``j`` is a linear map
  of the cell's expression restricted to the genes of set ``j`` (``embed_dim`` outputs per
  token). Gene sets come from a GMT file (sets with more than ``max_g`` genes are dropped,
  sets with at most 4 genes in the data are dropped, at most ``max_gs`` of the largest are
  kept) plus ``n_unannotated`` fully connected tokens that see every gene.
- A class token and a ViT encoder: ``depth`` 2 pre-norm blocks, ``num_heads`` 4,
  ``embed_dim`` 48, MLP ratio 4, dropout / attention dropout / stochastic depth 0.5.
- Classifier: a linear head on the normalised class token (also the cell embedding,
  ``query.obsm["X_tosica"]``).
- Interpretability: attention rollout (heads averaged, identity added for the residual,
  rows renormalised, multiplied over layers); the class token's row over the gene-set
  tokens is each cell's pathway attention, written to
  ``query.obsm["tosica_pathway_attention"]`` with the token names in
  ``query.uns["tosica_pathway_attention_columns"]``.

Training (TOSICA defaults): classes re-sampled to equal size, SGD (lr 1e-3, momentum 0.9,
weight decay 5e-5), cosine schedule down to ``lrf * lr``, batch size 8, 10 epochs, the final
model kept. A query cell whose top class probability is below ``cutoff`` (0.1) is labelled
``"Unknown"``. The harness's validation cells (``reference.obs["train_val"] == "val"``) are
held out of training and reported each epoch; ``select_best=True`` keeps the epoch with the
best validation accuracy instead of the last.

Token layout: TOSICA's released code reshapes the masked layer's output with
``rearrange('h (w c) -> h c w', c=n_tokens)`` although the outputs are ordered token by
token, so each of its "pathway" tokens actually mixes features of many gene sets. The
default here (``official_token_layout=False``) is the model the paper describes: token ``j``
holds gene set ``j`` only, so the pathway attention is interpretable. ``True`` reproduces
the released code (closer to what the scGPT paper ran; on data whose cell types differ by
the overall level of whole gene sets it learns faster, because the blocks' LayerNorm
otherwise removes a pure token's overall scale); its attention columns are then tokens, not
gene sets, and are named ``token <i>``.

Small data: the paper's regularisation (dropout, attention dropout and stochastic depth all
0.5) and learning rate are tuned for tens of thousands of cells; a few hundred cells need a
larger ``lr`` (e.g. 0.05) and sometimes a smaller ``drop_ratio`` to learn in a few epochs.

Gene sets (``gmt``): a path to a ``.gmt`` file; the name of a file in ``baselines/data/``
(``"immune_markers"``, see its README); ``"simulation"`` (the gene programs of a simulated
data set, ``uns["simulation"]["programs"]``); ``"coexpression"`` (gene modules built from the
reference: k-means on the genes' standardised expression profiles); or ``None``: the
simulation's programs when present, else ``immune_markers`` when at least 10 of its sets
pass the size filter on this data, else co-expression modules.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from contract.registry import register

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
MIN_SET_GENES = 5
"""TOSICA keeps a gene set when more than 4 of its genes are in the data."""


# ------------------------------------------------------------------------------------------
# Gene sets and the mask
# ------------------------------------------------------------------------------------------


def read_gmt(path: str | Path, *, max_size: int | None = None) -> OrderedDict[str, list[str]]:
    """Read a GMT file (name, description, genes; tab-separated) into ``{name: genes}``.

    Sets with more than ``max_size`` genes (counted in the file) are skipped.
    """
    sets: OrderedDict[str, list[str]] = OrderedDict()
    path = Path(path)
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = [f for f in line.rstrip("\n\r").split("\t")]
            if not fields or not fields[0].strip():
                continue
            if len(fields) < 3:
                raise ValueError(
                    f"{path}:{lineno}: a GMT line needs name, description and genes "
                    f"(tab-separated); got {len(fields)} field(s)"
                )
            genes = [g.strip() for g in fields[2:] if g.strip()]
            if max_size is not None and len(genes) > max_size:
                continue
            sets[fields[0].strip()] = genes
    if not sets:
        raise ValueError(f"{path}: no gene sets read (empty file or every set above max_size)")
    return sets


def coexpression_modules(
    x: np.ndarray, genes: list[str], *, n_modules: int | None = None, seed: int = 0
) -> OrderedDict[str, list[str]]:
    """Gene modules from the data: k-means on genes' standardised expression profiles.

    ``x`` is cells x genes (log-normalised). Genes are clustered in a PCA space of their
    profiles across cells; ``n_modules`` defaults to ``n_genes // 20`` clipped to [8, 100].
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n_genes = x.shape[1]
    if n_modules is None:
        n_modules = int(np.clip(n_genes // 20, 8, 100))
    n_modules = min(n_modules, n_genes)
    profiles = x.T.astype(np.float64)
    profiles = profiles - profiles.mean(axis=1, keepdims=True)
    sd = profiles.std(axis=1, keepdims=True)
    profiles = profiles / np.where(sd > 0, sd, 1.0)
    n_comps = int(min(20, profiles.shape[0] - 1, profiles.shape[1] - 1))
    if n_comps >= 2:
        profiles = PCA(n_components=n_comps, random_state=seed).fit_transform(profiles)
    labels = KMeans(n_clusters=n_modules, n_init=4, random_state=seed).fit_predict(profiles)
    return OrderedDict(
        (f"module_{m}", [genes[i] for i in np.flatnonzero(labels == m)]) for m in range(n_modules)
    )


def _simulation_programs(adata: Any) -> OrderedDict[str, list[str]] | None:
    sim = adata.uns.get("simulation") if hasattr(adata, "uns") else None
    programs = sim.get("programs") if isinstance(sim, dict) else None
    if not programs:
        return None
    return OrderedDict((str(k), [str(g) for g in v]) for k, v in programs.items())


def resolve_gene_sets(
    gmt: str | None,
    reference: Any,
    x_reference: np.ndarray,
    genes: list[str],
    *,
    max_g: int = 300,
    seed: int = 0,
) -> tuple[OrderedDict[str, list[str]], str]:
    """Gene sets for the mask and a description of their source (see the module docstring)."""
    gene_set = set(genes)

    def n_passing(sets: dict[str, list[str]]) -> int:
        return sum(len(gene_set.intersection(v)) >= MIN_SET_GENES for v in sets.values())

    if gmt is None:
        programs = _simulation_programs(reference)
        if programs is not None:
            return programs, "simulation programs (uns['simulation']['programs'])"
        shipped = DATA_DIR / "immune_markers.gmt"
        if shipped.exists():
            markers = read_gmt(shipped, max_size=max_g)
            if n_passing(markers) >= 10:
                return markers, "baselines/data/immune_markers.gmt"
        else:
            log.warning("tosica: %s is missing; using co-expression modules", shipped)
        return coexpression_modules(x_reference, genes, seed=seed), "co-expression modules"
    if gmt == "simulation":
        programs = _simulation_programs(reference)
        if programs is None:
            raise KeyError(
                "tosica: gmt='simulation' but reference.uns['simulation']['programs'] is missing"
            )
        return programs, "simulation programs (uns['simulation']['programs'])"
    if gmt == "coexpression":
        return coexpression_modules(x_reference, genes, seed=seed), "co-expression modules"
    path = Path(gmt)
    if not path.exists() and (DATA_DIR / f"{gmt}.gmt").exists():
        path = DATA_DIR / f"{gmt}.gmt"
    if not path.exists():
        shipped = sorted(p.stem for p in DATA_DIR.glob("*.gmt"))
        raise FileNotFoundError(
            f"tosica: gmt {gmt!r} is neither a file nor a shipped set ({shipped}) nor "
            "'simulation' / 'coexpression'"
        )
    return read_gmt(path, max_size=max_g), str(path)


def build_mask(
    genes: list[str],
    gene_sets: dict[str, list[str]],
    *,
    max_gs: int = 300,
    n_unannotated: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """Gene x token connection mask and token names.

    ``mask[i, j] = 1`` when gene ``i`` belongs to set ``j``; ``n_unannotated`` extra tokens
    connect to every gene. Tokens with fewer than 5 genes are dropped, then the ``max_gs``
    largest are kept in their original order (TOSICA's ``create_pathway_mask`` + filters).
    """
    index = {g: i for i, g in enumerate(genes)}
    names = list(gene_sets)
    mask = np.zeros((len(genes), len(names) + n_unannotated), dtype=np.float32)
    for j, name in enumerate(names):
        rows = [index[g] for g in gene_sets[name] if g in index]
        mask[rows, j] = 1.0
    mask[:, len(names) :] = 1.0
    names = names + [f"node {i}" for i in range(n_unannotated)]
    sizes = mask.sum(axis=0)
    keep = np.flatnonzero(sizes >= MIN_SET_GENES)
    if keep.size > max_gs:
        keep = np.sort(keep[np.argsort(sizes[keep], kind="stable")[-max_gs:]])
    if keep.size == 0:
        raise ValueError(
            f"tosica: no gene set has {MIN_SET_GENES} or more genes among the {len(genes)} genes "
            "of the data; check that the GMT uses the data's gene symbols"
        )
    return mask[:, keep], [names[j] for j in keep]


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------


@functools.cache
def _torch_modules():
    """Define the torch modules once, on first use (torch is imported lazily)."""
    import torch
    from torch import nn

    class MaskedGeneEmbedding(nn.Module):
        """Linear map genes -> (tokens x embed_dim) whose token ``j`` sees only its genes."""

        def __init__(self, mask: np.ndarray, embed_dim: int, official_layout: bool = False) -> None:
            super().__init__()
            n_genes, n_tokens = mask.shape
            self.n_tokens, self.embed_dim = n_tokens, embed_dim
            self.official_layout = official_layout
            # (tokens, 1, genes): broadcast over the embed_dim outputs of each token.
            self.register_buffer("mask", torch.as_tensor(mask.T, dtype=torch.float32)[:, None, :])
            self.weight = nn.Parameter(torch.empty(n_tokens, embed_dim, n_genes))
            self.bias = nn.Parameter(torch.empty(n_tokens, embed_dim))
            bound = 1.0 / math.sqrt(n_genes)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
            with torch.no_grad():
                self.weight.mul_(self.mask)

        def masked_weight(self) -> torch.Tensor:
            # Multiplying in the forward pass makes the gradient outside the mask exactly 0.
            return self.weight * self.mask

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.masked_weight().reshape(self.n_tokens * self.embed_dim, -1)
            out = (x @ w.T).reshape(x.shape[0], self.n_tokens, self.embed_dim) + self.bias
            if self.official_layout:
                # The official code reshapes the token-major outputs with
                # rearrange('h (w c) -> h c w', c=n_tokens): token c, feature w reads output
                # w * n_tokens + c, so each token mixes outputs of several gene sets.
                out = out.reshape(x.shape[0], self.embed_dim, self.n_tokens).transpose(1, 2)
            return out

    class DropPath(nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.p == 0.0 or not self.training:
                return x
            keep = 1.0 - self.p
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
            return x * torch.bernoulli(torch.full(shape, keep, device=x.device)) / keep

    class Attention(nn.Module):
        def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
            super().__init__()
            if dim % num_heads:
                raise ValueError(
                    f"tosica: embed_dim {dim} is not divisible by num_heads {num_heads}"
                )
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            weights = attn.detach()
            out = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj_drop(self.proj(out)), weights

    class Block(nn.Module):
        def __init__(self, dim: int, num_heads: int, drop: float, drop_path: float) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, num_heads, attn_drop=drop, proj_drop=drop)
            self.drop_path = DropPath(drop_path)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(
                nn.Linear(dim, 4 * dim),
                nn.GELU(),
                nn.Dropout(drop),
                nn.Linear(4 * dim, dim),
                nn.Dropout(drop),
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h, weights = self.attn(self.norm1(x))
            x = x + self.drop_path(h)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x, weights

    class TosicaModel(nn.Module):
        """Masked gene-set tokens + class token + ViT blocks + linear head."""

        def __init__(
            self,
            mask: np.ndarray,
            n_classes: int,
            *,
            embed_dim: int = 48,
            depth: int = 2,
            num_heads: int = 4,
            drop_ratio: float = 0.5,
            official_layout: bool = False,
        ) -> None:
            super().__init__()
            self.feature_embed = MaskedGeneEmbedding(mask, embed_dim, official_layout)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            rates = torch.linspace(0, drop_ratio, depth).tolist()
            self.blocks = nn.ModuleList(Block(embed_dim, num_heads, drop_ratio, r) for r in rates)
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, n_classes)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            for module in self.modules():  # ViT initialisation of the dense layers
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.01)
                    nn.init.zeros_(module.bias)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Return ``(latent, logits, pathway attention)`` for a batch of cells."""
            tokens = self.feature_embed(x)
            h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
            weights = []
            for block in self.blocks:
                h, w = block(h)
                weights.append(w)
            latent = self.norm(h)[:, 0]
            return latent, self.head(latent), attention_rollout(weights)

    def attention_rollout(weights: list[torch.Tensor]) -> torch.Tensor:
        """Class-token attention to each gene-set token through all layers (Abnar & Zuidema)."""
        joint = None
        for w in weights:
            a = w.mean(dim=1)  # (B, N, N), heads averaged
            a = a + torch.eye(a.shape[-1], device=a.device)
            a = a / a.sum(dim=-1, keepdim=True)
            joint = a if joint is None else a @ joint
        return joint[:, 0, 1:]

    return MaskedGeneEmbedding, TosicaModel, attention_rollout


def build_model(mask: np.ndarray, n_classes: int, **kwargs: Any):
    """A :class:`TosicaModel` (torch module) for ``mask`` (genes x tokens) and ``n_classes``."""
    _, model_cls, _ = _torch_modules()
    return model_cls(mask, n_classes, **kwargs)


# ------------------------------------------------------------------------------------------
# Data helpers
# ------------------------------------------------------------------------------------------


def log_normalise(adata: Any, *, target_sum: float = 1e4) -> np.ndarray:
    """Dense float32 log1p(counts / total * target_sum) of ``adata.X``."""
    import scipy.sparse as sp

    x = adata.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float32)
    total = x.sum(axis=1, keepdims=True)
    return np.log1p(x / np.where(total > 0, total, 1.0) * target_sum).astype(np.float32)


def validation_mask(reference: Any, *, seed: int, fraction: float) -> np.ndarray:
    """Boolean mask of validation cells: the harness's ``train_val`` column when present."""
    if "train_val" in reference.obs:
        return reference.obs["train_val"].astype(str).to_numpy() == "val"
    rng = np.random.default_rng(seed)
    return rng.random(reference.n_obs) < fraction


def balanced_indices(
    labels: np.ndarray, rng: np.random.Generator, *, cap: int = 2_000_000
) -> np.ndarray:
    """Re-sample every class (with replacement) to the largest class size (TOSICA)."""
    classes, counts = np.unique(labels, return_counts=True)
    size = int(min(counts.max(), cap // len(classes)))
    parts = [rng.choice(np.flatnonzero(labels == c), size=size, replace=True) for c in classes]
    return rng.permutation(np.concatenate(parts))


# ------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------


@register("annotation", "tosica", label="TOSICA")
def tosica(
    reference,
    query,
    *,
    seed: int,
    gmt: str | None = None,
    max_g: int = 300,
    max_gs: int = 300,
    n_unannotated: int = 1,
    embed_dim: int = 48,
    depth: int = 2,
    num_heads: int = 4,
    drop_ratio: float = 0.5,
    batch_size: int = 8,
    lr: float = 1e-3,
    lrf: float = 0.01,
    epochs: int = 10,
    balance: bool = True,
    cutoff: float = 0.1,
    select_best: bool = False,
    official_token_layout: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """TOSICA: gene-set-masked tokens + class-token transformer (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm

    if list(reference.var_names) != list(query.var_names):
        raise ValueError("tosica: reference and query must have the same genes in the same order")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    genes = [str(g) for g in reference.var_names]
    x_ref, x_query = log_normalise(reference), log_normalise(query)
    gene_sets, source = resolve_gene_sets(gmt, reference, x_ref, genes, max_g=max_g, seed=seed)
    mask, token_names = build_mask(genes, gene_sets, max_gs=max_gs, n_unannotated=n_unannotated)
    log.info(
        "tosica: %d tokens (%d gene sets + %d unannotated) from %s",
        len(token_names),
        len(token_names) - n_unannotated,
        n_unannotated,
        source,
    )

    classes, y = np.unique(reference.obs["cell_type"].astype(str).to_numpy(), return_inverse=True)
    is_val = validation_mask(reference, seed=seed, fraction=0.1)
    train_idx = np.flatnonzero(~is_val)
    if balance:
        train_idx = train_idx[balanced_indices(y[train_idx], rng)]
    val_idx = np.flatnonzero(is_val)

    model = build_model(
        mask,
        len(classes),
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_ratio=drop_ratio,
        official_layout=official_token_layout,
    ).to(dev)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda e: ((1 + math.cos(e * math.pi / epochs)) / 2) * (1 - lrf) + lrf
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    x_train = torch.as_tensor(x_ref, device=dev)
    y_train = torch.as_tensor(y, device=dev)
    generator = torch.Generator().manual_seed(seed)

    best_acc, best_state = -1.0, None
    for epoch in tqdm(range(epochs), desc="tosica", disable=epochs < 2):
        model.train()
        order = train_idx[torch.randperm(train_idx.size, generator=generator).numpy()]
        n_batches = max(1, order.size // batch_size)  # drop_last, as TOSICA
        total = 0.0
        for b in range(n_batches):
            idx = torch.as_tensor(order[b * batch_size : (b + 1) * batch_size], device=dev)
            _, logits, _ = model(x_train[idx])
            loss = loss_fn(logits, y_train[idx])
            optimiser.zero_grad()
            loss.backward()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"tosica: non-finite loss at epoch {epoch}")
            optimiser.step()
            total += float(loss.detach())
        schedule.step()
        val_acc = float("nan")
        if val_idx.size:
            pred, _, _, _ = _predict(model, x_ref[val_idx], dev)
            val_acc = float((pred == y[val_idx]).mean())
        log.info(
            "tosica epoch %d: train loss %.4f, val accuracy %.3f", epoch, total / n_batches, val_acc
        )
        if select_best and val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
    if select_best and best_state is not None:
        model.load_state_dict(best_state)

    pred, prob, latent, attention = _predict(model, x_query, dev)
    query.obsm["X_tosica"] = latent
    query.obsm["tosica_pathway_attention"] = attention
    query.uns["tosica_pathway_attention_columns"] = (
        [f"token {i}" for i in range(len(token_names))]
        if official_token_layout
        else list(token_names)
    )
    labels = classes[pred].astype(object)
    labels[prob < cutoff] = "Unknown"
    return labels.astype(str)


def _predict(model, x: np.ndarray, dev, batch_size: int = 256):
    """Class index, top probability, latent and pathway attention for every row of ``x``."""
    import torch

    model.eval()
    preds, probs, latents, attns = [], [], [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], device=dev)
            latent, logits, attn = model(xb)
            p = logits.softmax(dim=-1)
            top, arg = p.max(dim=-1)
            preds.append(arg.cpu().numpy())
            probs.append(top.cpu().numpy())
            latents.append(latent.cpu().numpy())
            attns.append(attn.cpu().numpy())
    return (
        np.concatenate(preds),
        np.concatenate(probs),
        np.concatenate(latents).astype(np.float32),
        np.concatenate(attns).astype(np.float32),
    )
