"""Sparse autoencoders: ReLU + L1, TopK, BatchTopK and JumpReLU; training, evaluation, storage."""

from . import batchtopk, jumprelu, relu, topk  # noqa: F401  (each registers its architecture)
from .base import ARCHITECTURES, SAE, SAEConfig, build_sae
from .batchtopk import BatchTopKSAE
from .evaluate import evaluate_sae, reconstruction_metrics, splice_metrics
from .io import load_sae, save_sae
from .jumprelu import JumpReluSAE
from .pipeline import TrainResult, saes_command, train_command, train_sae, train_saes
from .relu import ReluSAE
from .saelens import export_saelens, import_saelens
from .topk import TopKSAE
from .trainer import SAETrainer, TrainConfig, TrainedSAE

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "BatchTopKSAE", "JumpReluSAE", "ReluSAE", "SAETrainer", "TopKSAE",
    "TrainConfig", "TrainResult", "TrainedSAE", "build_sae", "evaluate_sae", "export_saelens", "import_saelens",
    "load_sae", "reconstruction_metrics", "saes_command", "save_sae", "splice_metrics", "train_command",
    "train_sae", "train_saes",
]
