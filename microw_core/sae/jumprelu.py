"""JumpReLU SAE (Rajamanoharan et al. 2024): a latent fires only above its learned threshold.

The threshold gets gradients through straight-through estimators with a rectangle kernel of
width `jumprelu_bandwidth`, from both the reconstruction and an L0 penalty.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SAE, SAEConfig, TrainOutput, check_positive, check_unused, dense_encoder_scale, reconstruction_loss

DEFAULT_L0_COEFF = 1e-3   # per active latent, in units of squared error / d_in: one setting fits any d_in
DEFAULT_BANDWIDTH = 0.05  # straight-through window, in units of the scaled input
INITIAL_THRESHOLD = 0.1
THRESHOLD_LR_SCALE = 10.0  # in units of the scaled input (norm sqrt(d_in)), where pre-activations are O(1)


def _window(pre, threshold, bandwidth):
    """Rectangle kernel: which pre-activations lie within bandwidth / 2 of their threshold."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / ctx.bandwidth) * (_window(pre, threshold, ctx.bandwidth) * grad).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_threshold = -(1.0 / ctx.bandwidth) * (_window(pre, threshold, ctx.bandwidth) * grad).sum(0)
        return None, grad_threshold, None


class JumpReluSAE(SAE):
    arch = "jumprelu"
    # Adam moves a parameter by about lr per step; thresholds must travel O(1) within short runs.
    lr_scales = {"threshold": THRESHOLD_LR_SCALE}
    training_defaults = {"l0_coeff": DEFAULT_L0_COEFF, "jumprelu_bandwidth": DEFAULT_BANDWIDTH}

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((cfg.width,), INITIAL_THRESHOLD))

    @staticmethod
    def encoder_init_scale(cfg: SAEConfig) -> float:
        return dense_encoder_scale(cfg)

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        check_positive(cfg, "l0_coeff", "jumprelu_bandwidth")
        check_unused(cfg, "k", "l1_coeff")

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu() * (pre > self.threshold)

    def training_forward(self, x, dead, sparsity_scale):
        bandwidth = self.cfg.jumprelu_bandwidth
        pre = torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)
        f = _JumpReLU.apply(pre, self.threshold, bandwidth)
        x_hat = torch.addmm(self.b_dec, f, self.W_dec)
        l0 = _Step.apply(pre, self.threshold, bandwidth).sum(-1).mean()
        # The penalty is per latent in units of squared error / d_in, so one setting fits any d_in.
        penalty = sparsity_scale * self.cfg.l0_coeff * self.cfg.d_in * l0
        loss = reconstruction_loss(x_hat, x) + penalty
        f = f.detach()
        return TrainOutput(loss=loss, sq_error=(x_hat.detach() - x).pow(2).sum(), fired=f.sum(0) > 0, latents=f)

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        self.threshold.clamp_(min=0.0)
