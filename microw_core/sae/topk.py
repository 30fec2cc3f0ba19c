"""TopK SAE (Gao et al. 2024): each token keeps its k largest latents; AuxK revives dead ones."""

from __future__ import annotations

import torch

from ..errors import SAEConfigError
from .base import SAE, SAEConfig, TrainOutput, check_unused, reconstruction_loss
from .sparse import SparseCodes, SparseDecode, SparsePreacts, topk_indices

DEFAULT_K = 32
AUXK_ALPHA = 1 / 32  # weight of the AuxK loss (Gao et al.)


def check_k(cfg: SAEConfig) -> None:
    if not isinstance(cfg.k, int) or isinstance(cfg.k, bool) or not 1 <= cfg.k <= cfg.width:
        raise SAEConfigError(f"{cfg.arch} SAEs need k, a whole number from 1 to the width {cfg.width} (got {cfg.k}).")
    check_unused(cfg, "l1_coeff", "l0_coeff", "jumprelu_bandwidth")


class TopKSAE(SAE):
    arch = "topk"
    sparse_training = True
    training_defaults = {"k": DEFAULT_K}

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        check_k(cfg)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        top = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())

    def training_forward(self, x, dead, sparsity_scale):
        x_in = x - self.b_dec
        codes = SparseCodes.from_topk(topk_indices(x_in, self.W_enc, self.b_enc, self.cfg.k, self.selection_dtype),
                                      self.cfg.width)
        return sparse_training_output(self, x, x_in, codes, dead)


def sparse_training_output(sae: SAE, x: torch.Tensor, x_in: torch.Tensor, codes: SparseCodes,
                           dead: torch.Tensor | None) -> TrainOutput:
    """Loss for SAEs whose active latents were chosen outside autograd (TopK, BatchTopK)."""
    values = SparsePreacts.apply(x_in, sae.W_enc, sae.b_enc, codes).relu()
    x_hat = SparseDecode.apply(values, sae.W_dec, codes) + sae.b_dec
    loss = reconstruction_loss(x_hat, x)
    if dead is not None and dead.numel():
        loss = loss + AUXK_ALPHA * auxk_loss(sae, x_in, (x - x_hat).detach(), dead)
    active = values.detach() > 0
    return TrainOutput(loss=loss, sq_error=(x_hat.detach() - x).pow(2).sum(), fired=codes.col[active],
                       l0=active.sum())


def auxk_loss(sae: SAE, x_in: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """How well the top dead latents alone reconstruct what the live ones missed.

    Only dead latents get this gradient, so they move towards directions the SAE still needs
    (Gao et al. 2024, appendix A.2: k_aux = d_in / 2).
    """
    k_aux = min(x_in.shape[1] // 2, dead.numel())
    with torch.no_grad():
        x_in = x_in.detach()  # AuxK trains the dead latents, not the decoder bias
        pre_dead = torch.addmm(sae.b_enc[dead], x_in, sae.W_enc[:, dead])
        chosen = dead[pre_dead.topk(k_aux, dim=-1, sorted=False).indices]
    codes = SparseCodes.from_topk(chosen, sae.cfg.width)
    values = SparsePreacts.apply(x_in, sae.W_enc, sae.b_enc, codes).relu()
    return (SparseDecode.apply(values, sae.W_dec, codes) - residual).pow(2).sum(-1).mean()
