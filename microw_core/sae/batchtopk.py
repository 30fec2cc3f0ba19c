"""BatchTopK SAE (Bussmann et al. 2024): a batch keeps its k * n_tokens largest latents.

Tokens get as many latents as they need, k on average. Selection across a batch cannot run one
token at a time, so training tracks the smallest kept activation and inference uses it as a
JumpReLU threshold: the saved SAE runs token by token and exports as a SAELens JumpReLU.
"""

from __future__ import annotations

import torch
from .base import SAE, SAEConfig
from .sparse import SparseCodes, batch_topk_pairs
from .topk import DEFAULT_K, check_k, sparse_training_output

THRESHOLD_EMA = 0.01  # weight of each batch's smallest kept activation in the threshold


class BatchTopKSAE(SAE):
    arch = "batchtopk"
    sparse_training = True

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        # One value per latent (all equal after training) so inference matches JumpReLU exactly;
        # negative until the first batch sets it.
        self.register_buffer("threshold", torch.full((cfg.width,), -1.0))

    training_defaults = {"k": DEFAULT_K}

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
        out = sparse_training_output(self, x, x_in, codes, dead)
        self._update_threshold(out.values)
        return out

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        if not kept.numel():
            return
        smallest = kept.min().expand_as(self.threshold)
        self.threshold.copy_(torch.where(self.threshold < 0, smallest, self.threshold.lerp(smallest, THRESHOLD_EMA)))
