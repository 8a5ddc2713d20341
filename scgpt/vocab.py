"""Gene vocabulary: the released flat ``vocab.json`` ({symbol: index}) and gene matching."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scgpt._utils import logger, write_json_atomic

PAD_TOKEN = "<pad>"
CLS_TOKEN = "<cls>"
EOC_TOKEN = "<eoc>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, CLS_TOKEN, EOC_TOKEN)
"""Special tokens of the released vocabularies."""


class GeneVocab:
    """Mapping between gene symbols (and special tokens) and embedding rows.

    Parameters
    ----------
    token_to_index
        ``{token: index}``; indices must be unique non-negative integers.
    pad_token
        Name of the padding token (``"<pad>"`` in the released models).

    Notes
    -----
    The number of embedding rows a model needs is :attr:`num_embeddings` (largest index + 1),
    which equals ``len(vocab)`` for the released, contiguous vocabularies.
    """

    def __init__(self, token_to_index: Mapping[str, int], pad_token: str = PAD_TOKEN) -> None:
        stoi = {str(k): int(v) for k, v in token_to_index.items()}
        if not stoi:
            raise ValueError("a GeneVocab needs at least one token")
        indices = np.fromiter(stoi.values(), dtype=np.int64, count=len(stoi))
        if indices.min() < 0:
            raise ValueError(f"vocabulary indices must be >= 0, found {int(indices.min())}")
        uniq, counts = np.unique(indices, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            names = [t for t, i in stoi.items() if i == dup]
            raise ValueError(f"vocabulary index {dup} is used by several tokens: {names[:5]}")
        self._stoi = stoi
        self._itos: list[str | None] = [None] * (int(indices.max()) + 1)
        for tok, idx in stoi.items():
            self._itos[idx] = tok
        self.pad_token = pad_token

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str], pad_token: str = PAD_TOKEN) -> GeneVocab:
        """Read a flat ``vocab.json`` (``{symbol: index}``) as released with scGPT checkpoints."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"vocabulary file not found: {path}") from None
        except UnicodeDecodeError as err:
            # The codec's own message names neither the file nor what it should have held.
            raise ValueError(
                f"{path} is not UTF-8 text ({err}); expected a flat JSON object "
                "{gene: index} (the vocab.json of a scGPT checkpoint)"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a flat JSON object {{gene: index}}, got {type(data).__name__}"
            )
        return cls(data, pad_token=pad_token)

    @classmethod
    def from_genes(
        cls,
        genes: Iterable[str],
        specials: Sequence[str] = SPECIAL_TOKENS,
        *,
        specials_first: bool = False,
    ) -> GeneVocab:
        """Build a vocabulary from gene symbols (duplicates dropped, order kept).

        Parameters
        ----------
        genes
            Gene symbols.
        specials
            Special tokens to add (default ``"<pad>", "<cls>", "<eoc>"``).
        specials_first
            Put the special tokens at indices 0.. instead of after the genes (the released
            CELLxGENE vocabulary has them after the genes).
        """
        special_set = set(specials)
        seen: dict[str, None] = {}
        for g in genes:
            g = str(g)
            if g not in special_set:
                seen.setdefault(g, None)
        tokens = [*specials, *seen] if specials_first else [*seen, *specials]
        pad = PAD_TOKEN if PAD_TOKEN in special_set or not specials else specials[0]
        return cls({t: i for i, t in enumerate(tokens)}, pad_token=pad)

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the flat ``{symbol: index}`` JSON, atomically."""
        write_json_atomic(dict(sorted(self._stoi.items(), key=lambda kv: kv[1])), path)

    def with_specials(self, specials: Sequence[str] = SPECIAL_TOKENS) -> GeneVocab:
        """Return a vocabulary with any missing special token appended at the end."""
        stoi = dict(self._stoi)
        nxt = len(self._itos)
        for tok in specials:
            if tok not in self._stoi:
                stoi[tok] = nxt
                nxt += 1
        return GeneVocab(stoi, pad_token=self.pad_token)

    # lookup --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._stoi)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __getitem__(self, token: str) -> int:
        try:
            return self._stoi[token]
        except KeyError:
            raise KeyError(
                f"token {token!r} is not in the vocabulary ({len(self)} tokens)"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocab) and self._stoi == other._stoi

    def __hash__(self) -> int:  # pragma: no cover - vocabularies are not used as dict keys
        return hash(tuple(sorted(self._stoi.items())))

    def __repr__(self) -> str:
        return f"GeneVocab({len(self)} tokens, pad={self.pad_token!r})"

    def get(self, token: str, default: int | None = None) -> int | None:
        """Index of ``token`` or ``default``."""
        return self._stoi.get(token, default)

    def lookup(self, index: int) -> str:
        """Token at ``index``."""
        tok = self._itos[index] if 0 <= index < len(self._itos) else None
        if tok is None:
            raise IndexError(f"no token at vocabulary index {index}")
        return tok

    def indices(self, tokens: Iterable[str], missing: int = -1) -> np.ndarray:
        """Indices of ``tokens`` as int64, ``missing`` where a token is unknown."""
        return np.fromiter((self._stoi.get(str(t), missing) for t in tokens), dtype=np.int64)

    @property
    def stoi(self) -> dict[str, int]:
        """Copy of the ``{token: index}`` mapping."""
        return dict(self._stoi)

    @property
    def itos(self) -> list[str | None]:
        """Token per index (``None`` for unused indices)."""
        return list(self._itos)

    @property
    def num_embeddings(self) -> int:
        """Rows a token embedding needs (largest index + 1)."""
        return len(self._itos)

    @property
    def genes(self) -> list[str]:
        """Non-special tokens in index order."""
        return [
            t for t in self._itos if t is not None and not (t.startswith("<") and t.endswith(">"))
        ]

    @property
    def pad_id(self) -> int:
        """Index of the padding token."""
        return self[self.pad_token]

    @property
    def cls_id(self) -> int:
        """Index of ``"<cls>"``."""
        return self[CLS_TOKEN]


@dataclass(frozen=True)
class GeneMatchReport:
    """How many genes of a data set were found in a vocabulary.

    Attributes
    ----------
    n_total
        Genes in the data.
    n_matched
        Genes found in the vocabulary.
    unmatched
        Up to 20 example gene names that were not found.
    """

    n_total: int
    n_matched: int
    unmatched: tuple[str, ...] = field(default=())

    @property
    def fraction(self) -> float:
        """Matched fraction (0 when there are no genes)."""
        return self.n_matched / self.n_total if self.n_total else 0.0

    def __str__(self) -> str:
        text = f"{self.n_matched}/{self.n_total} genes ({100 * self.fraction:.1f}%) found in the vocabulary"
        if self.unmatched:
            text += f"; not found e.g. {list(self.unmatched[:5])}"
        return text


def map_genes(
    var_names: Iterable[str], vocab: GeneVocab, *, warn_below: float = 0.5
) -> tuple[np.ndarray, GeneMatchReport]:
    """Map gene names to vocabulary indices.

    Parameters
    ----------
    var_names
        Gene symbols (e.g. ``adata.var_names`` or a ``var`` column).
    vocab
        Vocabulary to match against.
    warn_below
        Log a warning when less than this fraction of genes is found (gene-name
        mismatches, e.g. Ensembl IDs against a symbol vocabulary, are the usual cause).

    Returns
    -------
    indices
        int64 array, vocabulary index per gene and ``-1`` where not found.
    report
        :class:`GeneMatchReport` with the counts.
    """
    names = [str(g) for g in var_names]
    idx = vocab.indices(names)
    unmatched = tuple(n for n, i in zip(names, idx) if i < 0)[:20]
    report = GeneMatchReport(
        n_total=len(names), n_matched=int((idx >= 0).sum()), unmatched=unmatched
    )
    logger.info("%s", report)
    if names and report.fraction < warn_below:
        logger.warning(
            "only %s; check that the gene names are symbols of the same species as the vocabulary",
            report,
        )
    return idx, report
