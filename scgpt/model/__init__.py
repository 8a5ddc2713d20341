"""The scGPT model: configuration, building blocks and :class:`TransformerModel`."""

from scgpt.model.config import ModelConfig
from scgpt.model.decoders import (
    AdversarialDiscriminator,
    AffineExprDecoder,
    ClsDecoder,
    ExprDecoder,
    MVCDecoder,
    grad_reverse,
)
from scgpt.model.encoders import (
    BatchLabelEncoder,
    CategoryValueEncoder,
    ContinuousValueEncoder,
    DomainSpecificBatchNorm1d,
    GeneEncoder,
)
from scgpt.model.model import TransformerModel
from scgpt.model.transformer import SelfAttention, TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "AdversarialDiscriminator",
    "AffineExprDecoder",
    "BatchLabelEncoder",
    "CategoryValueEncoder",
    "ClsDecoder",
    "ContinuousValueEncoder",
    "DomainSpecificBatchNorm1d",
    "ExprDecoder",
    "GeneEncoder",
    "MVCDecoder",
    "ModelConfig",
    "SelfAttention",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerModel",
    "grad_reverse",
]
