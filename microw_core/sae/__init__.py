"""Sparse autoencoders: ReLU + L1, TopK, BatchTopK and JumpReLU; training, evaluation, storage."""

from . import batchtopk, jumprelu, relu, topk  # noqa: F401  (each registers its architecture)
from .base import ARCHITECTURES, SAE, SAEConfig, build_sae
from .batchtopk import BatchTopKSAE
from .io import load_sae, save_sae
from .jumprelu import JumpReluSAE
from .relu import ReluSAE
from .topk import TopKSAE
from .trainer import SAETrainer, TrainConfig, TrainedSAE

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "BatchTopKSAE", "JumpReluSAE", "ReluSAE", "SAETrainer", "TopKSAE",
    "TrainConfig", "TrainedSAE", "build_sae", "load_sae", "save_sae",
]
