"""Sparse latent codes and their cheap backward pass (TopK and BatchTopK training).

A TopK SAE uses k of `width` latents per token, so a dense step wastes ~width/k of its work on
zeros: both decoder products and the encoder's weight gradient. Here latents are chosen without
autograd, and only the chosen (token, latent) pairs enter the graph: their pre-activations come
from a sampled matmul (SDDMM) and the decode is a sparse @ dense product, so the backward pass costs
O(nnz * d) instead of O(batch * width * d). The one dense product left is the selection matmul.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

_CHUNK_ELEMENTS = 1 << 20  # selection works on row blocks of ~4 MB so the block stays in cache


@dataclass
class SparseCodes:
    """Active (token, latent) pairs in CSR order: token r owns entries crow[r]:crow[r + 1]."""

    crow: torch.Tensor   # [n_tokens + 1]
    col: torch.Tensor    # [nnz] latent index
    row: torch.Tensor    # [nnz] token index (the same pairs in COO form, for transposed products)
    n_tokens: int
    width: int

    @classmethod
    def from_topk(cls, indices: torch.Tensor, width: int) -> SparseCodes:
        n, k = indices.shape
        device = indices.device
        crow = torch.arange(0, n * k + 1, k, device=device)
        row = torch.arange(n, device=device).repeat_interleave(k)
        return cls(crow, indices.reshape(-1), row, n, width)

    @classmethod
    def from_pairs(cls, row: torch.Tensor, col: torch.Tensor, n_tokens: int, width: int) -> SparseCodes:
        """Pairs sorted by token (row-major order, as nonzero() returns them)."""
        counts = torch.bincount(row, minlength=n_tokens)
        crow = torch.zeros(n_tokens + 1, dtype=torch.long, device=row.device)
        crow[1:] = counts.cumsum(0)
        return cls(crow, col, row, n_tokens, width)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """[n_tokens, width] sparse matrix holding `values`."""
        with warnings.catch_warnings():  # torch calls CSR "beta"; the kernels used here are tested
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(self.crow, self.col, values, (self.n_tokens, self.width),
                                           check_invariants=False)

    def coo_t(self, values: torch.Tensor) -> torch.Tensor:
        """[width, n_tokens] sparse matrix holding `values` (the transpose of `csr`)."""
        return torch.sparse_coo_tensor(torch.stack([self.col, self.row]), values, (self.width, self.n_tokens),
                                       check_invariants=False)

    def sampled(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(a @ b) at the active pairs only [nnz] (an SDDMM)."""
        pattern = self.csr(torch.zeros(self.col.numel(), dtype=a.dtype, device=a.device))
        return torch.sparse.sampled_addmm(pattern, a, b, beta=0.0).values()


class SparsePreacts(torch.autograd.Function):
    """Pre-activations (x @ W_enc + b_enc) at the active pairs, with a sparse backward."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, codes: SparseCodes):
        ctx.save_for_backward(x, W_enc)
        ctx.codes = codes
        return codes.sampled(x, W_enc) + b_enc[codes.col]

    @staticmethod
    def backward(ctx, grad):
        x, W_enc = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad_x = codes.csr(grad) @ W_enc.t() if ctx.needs_input_grad[0] else None
        grad_W_enc = torch.sparse.mm(codes.coo_t(grad), x).t() if ctx.needs_input_grad[1] else None
        grad_b_enc = torch.zeros(codes.width, dtype=grad.dtype, device=grad.device).index_add_(0, codes.col, grad)
        return grad_x, grad_W_enc, grad_b_enc, None


class SparseDecode(torch.autograd.Function):
    """sum_j values_j * W_dec[col_j] per token, with a sparse backward."""

    @staticmethod
    def forward(ctx, values, W_dec, codes: SparseCodes):
        ctx.save_for_backward(values, W_dec)
        ctx.codes = codes
        return codes.csr(values) @ W_dec

    @staticmethod
    def backward(ctx, grad):
        values, W_dec = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad_values = codes.sampled(grad, W_dec.t())
        grad_W_dec = torch.sparse.mm(codes.coo_t(values), grad) if ctx.needs_input_grad[1] else None
        return grad_values, grad_W_dec, None


def topk_indices(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """Indices [n, k] of each row's k largest pre-activations x @ W_enc + b_enc; no autograd.

    On CPU the product runs on row blocks that stay in cache while topk reads them, and the bias
    rides in the matmul as an extra input column (addmm would first write the bias into every
    row: one more pass over the largest tensor of the step). `dtype` (e.g. bfloat16) only affects
    which latents win: their values are recomputed in float32.
    """
    with torch.no_grad():
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        weights = torch.cat([W_enc, b_enc[None]], 0)
        if dtype is not None:
            x, weights = x.to(dtype), weights.to(dtype)
        if x.is_cuda:
            return (x @ weights).topk(k, dim=-1, sorted=False).indices
        rows = max(1, _CHUNK_ELEMENTS // weights.shape[1])
        out = torch.empty(x.shape[0], k, dtype=torch.long)
        for start in range(0, x.shape[0], rows):
            block = x[start : start + rows] @ weights
            out[start : start + rows] = block.topk(k, dim=-1, sorted=False).indices
        return out


def batch_topk_pairs(pre: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of the n largest positive entries of `pre` [tokens, width], row-major; no autograd.

    A flat topk over the whole matrix is slow on CPU, so a threshold taken from a strided sample
    first cuts the candidates to a little more than n, then an exact topk runs on those.
    """
    with torch.no_grad():
        flat = pre.reshape(-1)
        n = min(n, flat.numel())
        if not pre.is_cuda and n < flat.numel() // 4:
            sample = flat[::127]  # stride coprime with the width: the sample spans all latents
            wanted = min(sample.numel(), int(1.5 * n * sample.numel() / flat.numel()) + 64)
            threshold = sample.topk(wanted, sorted=False).values.min()
            candidates = (pre >= threshold).nonzero()
            if len(candidates) >= n:
                values = pre[candidates[:, 0], candidates[:, 1]]
                chosen = values.topk(n, sorted=False).indices.sort().values
                row, col = candidates[chosen].unbind(1)
                return _positive(pre, row, col)
        chosen = flat.topk(n, sorted=False).indices.sort().values
        return _positive(pre, chosen // pre.shape[1], chosen % pre.shape[1])


def _positive(pre: torch.Tensor, row: torch.Tensor, col: torch.Tensor):
    keep = pre[row, col] > 0
    return row[keep], col[keep]
