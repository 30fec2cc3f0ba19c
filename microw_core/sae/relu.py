"""ReLU SAE with an L1 penalty (Bricken et al. 2023; Anthropic's April 2024 training recipe)."""

from __future__ import annotations

import torch

from .base import SAE, SAEConfig, TrainOutput, check_positive, check_unused, dense_encoder_scale, reconstruction_loss

DEFAULT_L1_COEFF = 5.0  # squared error is summed over d_in, inputs scaled to norm sqrt(d_in) (Anthropic's units)


class ReluSAE(SAE):
    arch = "relu"
    training_defaults = {"l1_coeff": DEFAULT_L1_COEFF}

    @staticmethod
    def encoder_init_scale(cfg: SAEConfig) -> float:
        return dense_encoder_scale(cfg)

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        check_positive(cfg, "l1_coeff")
        check_unused(cfg, "k", "l0_coeff", "jumprelu_bandwidth")

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def training_forward(self, x, dead, sparsity_scale):
        f = torch.addmm(self.b_enc, x - self.b_dec, self.W_enc).relu()
        x_hat = torch.addmm(self.b_dec, f, self.W_dec)
        # Decoder rows have unit norm, so the L1 of f is the L1 of the decoded contributions.
        l1 = f.sum(-1).mean()
        loss = reconstruction_loss(x_hat, x) + sparsity_scale * self.cfg.l1_coeff * l1
        f = f.detach()
        return TrainOutput(loss=loss, sq_error=(x_hat.detach() - x).pow(2).sum(), fired=f.sum(0) > 0, latents=f)
