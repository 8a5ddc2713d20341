"""Fine-tuning scGPT for the paper's tasks (generic APIs the task adapters call)."""

from scgpt.finetune._common import adapt_model
from scgpt.finetune.classifier import ClassifierResult, finetune_classifier, predict_classifier
from scgpt.finetune.integration import IntegrationResult, finetune_integration
from scgpt.finetune.multiomics import MultiomicsResult, finetune_multiomics
from scgpt.finetune.perturbation import (
    PerturbationResult,
    perturbation_model,
    predict_perturbation,
    train_perturbation_model,
)

__all__ = [
    "ClassifierResult",
    "IntegrationResult",
    "MultiomicsResult",
    "PerturbationResult",
    "adapt_model",
    "finetune_classifier",
    "finetune_integration",
    "finetune_multiomics",
    "perturbation_model",
    "predict_classifier",
    "predict_perturbation",
    "train_perturbation_model",
]
