"""The SAE every architecture shares: config, parameters, encode / decode, input checks.

An SAE maps an activation x [..., d_in] to non-negative latents f = act((x - b_dec) @ W_enc + b_enc)
and back to x_hat = f @ W_dec + b_dec. Architectures differ only in `act` (and in how they train),
so each lives in a small module that registers itself in ARCHITECTURES.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InvalidInputError, SAEConfigError, ShapeMismatchError

ARCHITECTURES: dict[str, type[SAE]] = {}


@dataclass
class SAEConfig:
    """Everything needed to rebuild an SAE; saved next to its weights as config.json."""

    arch: str
    d_in: int
    width: int
    k: int | None = None                 # topk: latents per token; batchtopk: per token on average
    l1_coeff: float | None = None        # relu: L1 penalty
    l0_coeff: float | None = None        # jumprelu: L0 penalty
    jumprelu_bandwidth: float | None = None
    layer: str = ""
    model: str = ""
    run: str = ""

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise SAEConfigError(f"Unknown SAE architecture '{self.arch}'; use one of {', '.join(ARCHITECTURES)}.")
        if self.d_in < 1 or self.width < 1:
            raise SAEConfigError(f"d_in and width must be positive (got d_in={self.d_in}, width={self.width}).")
        ARCHITECTURES[self.arch].check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        missing = {"arch", "d_in", "width"} - data.keys()
        if missing:
            raise SAEConfigError(f"SAE config lacks {', '.join(sorted(missing))}; it was not written by microw.")
        return cls(**{k: v for k, v in data.items() if k in known})


def check_positive(cfg: SAEConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SAEConfigError(f"{name} must be a positive number for {cfg.arch} SAEs (got {value}).")


def check_unused(cfg: SAEConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) is not None:
            raise SAEConfigError(f"{name} does not apply to {cfg.arch} SAEs; leave it unset.")


class SAE(nn.Module):
    """Base class. Subclasses implement `activate` (inference) and `training_forward` (training)."""

    arch: ClassVar[str]
    sparse_training: ClassVar[bool] = False  # picks latents outside autograd (see sparse.py)
    calibrates: ClassVar[bool] = False       # needs `calibrate` on a few batches after training
    lr_scales: ClassVar[dict[str, float]] = {}  # learning-rate multipliers by parameter name
    training_defaults: ClassVar[dict[str, float]] = {}  # settings filled into a config before training
    selection_dtype: torch.dtype | None = None  # sparse training: bfloat16 picks latents faster; values stay fp32

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d, w = cfg.d_in, cfg.width
        # Unit-norm decoder rows, encoder = decoder transpose: every latent starts as a
        # matched detector/writer pair, which trains faster and leaves fewer dead latents.
        W_dec = torch.randn(w, d)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.t() * self.encoder_init_scale(cfg))
        self.b_enc = nn.Parameter(torch.zeros(w))
        self.b_dec = nn.Parameter(torch.zeros(d))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ARCHITECTURES[cls.arch] = cls

    @staticmethod
    def encoder_init_scale(cfg: SAEConfig) -> float:
        return 1.0

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        """Reject settings that are out of range or do not apply to this architecture."""

    # ----- inference ------------------------------------------------------------------------

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.d_in:
            raise ShapeMismatchError(
                f"This SAE reads {self.cfg.d_in}-dimensional activations (layer '{self.cfg.layer or '?'}'), "
                f"but got shape {tuple(x.shape)}; use an SAE trained on this layer of this model."
            )
        if not torch.isfinite(x).all():
            raise InvalidInputError("The activations contain NaN or inf; check the model's dtype (try float32).")
        return x.to(self.W_enc.dtype)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., width] (non-negative, mostly zero) of raw activations x [..., d_in]."""
        return self.activate(self.pre_acts(self.check_input(x)))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        if f.shape[-1] != self.cfg.width:
            raise ShapeMismatchError(f"This SAE has {self.cfg.width} latents, but got shape {tuple(f.shape)}.")
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ----- training --------------------------------------------------------------------------

    def training_forward(self, x: torch.Tensor, dead: torch.Tensor | None, sparsity_scale: float) -> TrainOutput:
        """One batch of (scaled) activations -> reconstruction and loss terms. See TrainOutput."""
        raise NotImplementedError

    def calibrate(self, batches: list[torch.Tensor]) -> None:
        """Fit inference-only settings on a few (scaled) training batches once training is done."""

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on `scale * x` read raw x, keeping the decoder unit-norm.

        Latents shrink by the same factor, so they are measured in raw activation units.
        """
        self.b_dec /= scale
        self.b_enc /= scale
        threshold = getattr(self, "threshold", None)
        if threshold is not None:
            threshold /= scale

    @torch.no_grad()
    def after_step(self) -> None:
        """Restore constraints after an optimizer step: unit-norm decoder rows."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component that would change decoder norms (they are renormalised anyway)."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec


@dataclass
class TrainOutput:
    """What one training batch produced. `loss` is differentiable; the rest are detached."""

    loss: torch.Tensor
    sq_error: torch.Tensor        # summed squared reconstruction error over the batch
    fired: torch.Tensor           # indices (or a bool mask) of latents active in this batch
    l0: torch.Tensor | None = None        # sparse training: active latents summed over the batch
    latents: torch.Tensor | None = None   # dense training: the latents, counted only when metrics are due

    def active_count(self) -> torch.Tensor:
        return self.l0 if self.l0 is not None else torch.count_nonzero(self.latents)


def build_sae(cfg: SAEConfig) -> SAE:
    return ARCHITECTURES[cfg.arch](cfg)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error summed over d_in, averaged over tokens (the SAELens / Anthropic convention)."""
    return (x_hat - x).pow(2).sum(-1).mean()


def dense_encoder_scale(cfg: SAEConfig) -> float:
    """Encoder scale for ReLU-like SAEs: about half of random unit latents fire, and sum_i relu(w_i . x) w_i
    is then about (width / 2 d_in) x, so this scale starts the reconstruction near x instead of width/d times it."""
    return min(1.0, 2 * cfg.d_in / cfg.width)
