"""BatchTopK SAE (Bussmann et al. 2024): a batch keeps its k * n_tokens largest latents.

Tokens get as many latents as they need, k on average. Selection across a batch cannot run one
token at a time, so after training the threshold that keeps k latents per token on average is
measured, and inference uses it as a JumpReLU threshold: the saved SAE runs token by token and
exports as a SAELens JumpReLU.
"""

from __future__ import annotations

import torch
from .base import SAE, SAEConfig
from .sparse import SparseCodes, batch_topk_pairs
from .topk import DEFAULT_K, check_k, sparse_training_output


class BatchTopKSAE(SAE):
    arch = "batchtopk"
    sparse_training = True
    calibrates = True
    training_defaults = {"k": DEFAULT_K}

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        # One value per latent (all equal) so inference matches JumpReLU exactly; zero until calibrated.
        self.register_buffer("threshold", torch.zeros(cfg.width))

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        check_k(cfg)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu() * (pre > self.threshold)

    def training_forward(self, x, dead, sparsity_scale):
        x_in = x - self.b_dec
        with torch.no_grad():
            dtype = self.selection_dtype or x.dtype
            pre = torch.addmm(self.b_enc.to(dtype), x_in.to(dtype), self.W_enc.to(dtype))
            row, col = batch_topk_pairs(pre, self.cfg.k * x.shape[0])
        codes = SparseCodes.from_pairs(row, col, x.shape[0], self.cfg.width)
        return sparse_training_output(self, x, x_in, codes, dead)

    @torch.no_grad()
    def calibrate(self, batches: list[torch.Tensor]) -> None:
        """Threshold = the mean over batches of the smallest activation BatchTopK keeps."""
        smallest = []
        for x in batches:
            pre = self.pre_acts(x)
            row, col = batch_topk_pairs(pre, self.cfg.k * x.shape[0])
            if row.numel():
                smallest.append(pre[row, col].min())
        if smallest:
            self.threshold.fill_(float(torch.stack(smallest).mean()))
