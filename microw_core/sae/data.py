"""Activation streams for training: validation, outlier filtering, a shuffling buffer, held-out split.

A source is any callable returning a fresh iterable of [n, d_in] chunks (one pass over the data);
`run_source` builds one over a stored run's training rows, tests pass plain tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from ..errors import InvalidInputError, ShapeMismatchError

ActivationSource = Callable[[], Iterable[torch.Tensor]]

OUTLIER_FACTOR = 10.0  # rows with a norm above this many times the median are dropped when asked


def checked(chunks: Iterable[torch.Tensor], d_in: int) -> Iterator[torch.Tensor]:
    for chunk in chunks:
        if chunk.ndim != 2 or chunk.shape[1] != d_in:
            raise ShapeMismatchError(
                f"Activations of shape {tuple(chunk.shape)} cannot train an SAE with d_in={d_in}; "
                "an SAE must be trained on [tokens, d_in] activations of one layer."
            )
        if not torch.isfinite(chunk).all():
            raise InvalidInputError(
                "The activations contain NaN or inf; capture them again in float32 (the model may overflow in float16)."
            )
        yield chunk.float()


def without_outliers(chunks: Iterable[torch.Tensor], max_norm: float) -> Iterator[torch.Tensor]:
    for chunk in chunks:
        yield chunk[chunk.norm(dim=1) <= max_norm]


def endless(source: ActivationSource) -> Iterator[torch.Tensor]:
    """Pass after pass over the source, so a short run can train on more tokens than it holds."""
    while True:
        rows = 0
        for chunk in source():
            rows += len(chunk)
            yield chunk
        if rows == 0:
            raise InvalidInputError("There are no activations to train on; capture a run with more tokens.")


def shuffled_batches(chunks: Iterable[torch.Tensor], batch_size: int, buffer_tokens: int,
                     seed: int) -> Iterator[torch.Tensor]:
    """Batches of rows mixed across chunks, holding at most ~buffer_tokens rows (plus one chunk).

    Consecutive rows come from the same documents, so rows wait in a buffer that is shuffled
    whenever it fills; half of it is emitted and half stays to mix with the next chunks.
    """
    generator = torch.Generator().manual_seed(seed)
    buffer_tokens = max(buffer_tokens, 2 * batch_size)
    pending: list[torch.Tensor] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held < buffer_tokens:
            continue
        buffer = torch.cat(pending)
        buffer = buffer[torch.randperm(len(buffer), generator=generator)]
        emit = max(batch_size, len(buffer) // 2 // batch_size * batch_size)
        for start in range(0, emit, batch_size):
            yield buffer[start : start + batch_size]
        pending, held = [buffer[emit:]], len(buffer) - emit
    buffer = torch.cat(pending) if pending else torch.empty(0)
    buffer = buffer[torch.randperm(len(buffer), generator=generator)]
    for start in range(0, len(buffer) - batch_size + 1, batch_size):
        yield buffer[start : start + batch_size]


def first_rows(source: ActivationSource, n: int, d_in: int) -> torch.Tensor:
    parts, held = [], 0
    for chunk in checked(source(), d_in):
        parts.append(chunk[: n - held])
        held += len(parts[-1])
        if held >= n:
            break
    if not held:
        raise InvalidInputError("There are no activations to train on; capture a run with more tokens.")
    return torch.cat(parts)


@torch.no_grad()
def geometric_median(points: torch.Tensor, iterations: int = 50, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the summed distance to `points` (Weiszfeld): a robust centre for b_dec."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-8)
        new = (weights[:, None] * points).sum(0) / weights.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * median.norm().clamp_min(1.0):
            break
    return median


# ----- stored runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutSplit:
    """Rows [0, train_tokens) of a run train the SAE; rows [train_tokens, total) only evaluate it."""

    train_tokens: int
    total_tokens: int

    @property
    def eval_tokens(self) -> int:
        return self.total_tokens - self.train_tokens


def heldout_split(total_tokens: int, eval_tokens: int | None = None) -> HeldOutSplit:
    """By default 10% of the run is held out, at least 2,048 and at most 100,000 tokens."""
    if eval_tokens is None:
        eval_tokens = min(max(total_tokens // 10, 2048), 100_000)
    if total_tokens < 2 * eval_tokens or eval_tokens < 1:
        raise InvalidInputError(
            f"The run holds {total_tokens} tokens: too few to hold out {eval_tokens} for evaluation and train "
            "on the rest. Capture more tokens (e.g. --max-tokens 200000)."
        )
    return HeldOutSplit(total_tokens - eval_tokens, total_tokens)


def run_rows(run, layer: str, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
    """A run's activation rows [start, stop) shard by shard; shards outside the range are not read.

    Rows of special tokens (BOS, EOS ...; stored only when the capture kept them) are skipped:
    their activations are outliers an SAE should not spend latents on.
    """
    stop = run.tokens if stop is None else stop
    keep_special = run.manifest.get("config", {}).get("keep_special", False)
    offset = 0
    for shard in run.manifest["shards"]:
        lo, hi = offset, offset + shard["tokens"]
        offset = hi
        if hi <= start or lo >= stop:
            continue
        part = slice(max(start - lo, 0), min(stop, hi) - lo)
        rows = _read(run, shard["files"][layer])["activations"][part].float()
        if keep_special:
            rows = rows[~_read(run, shard["files"]["meta"])["special"][part].bool()]
        yield rows


def _read(run, record: dict) -> dict[str, torch.Tensor]:
    return run.store.read_tensors(record["path"], record["sha256"])


def heldout_documents(run, split: HeldOutSplit) -> list[int]:
    """Documents whose every captured token is held out: the texts for CE-loss evaluation."""
    docs = run.meta()["doc_index"]
    held = set(docs[split.train_tokens :].tolist()) - set(docs[: split.train_tokens].tolist())
    return sorted(held)


def default_dead_tokens(total_tokens: int, batch_size: int) -> int:
    """Tokens without firing after which a latent counts as dead (and gets AuxK gradient)."""
    return int(min(10_000_000, max(4 * batch_size, total_tokens // 20)))


def lr_for_width(width: int) -> float:
    """Scaled by 1 / sqrt(width) as in sparsify, but about 6x larger, since our runs are hundreds of steps.

    On the demo model (TopK, width 3072, 600k tokens) sparsify's 4.6e-4 reached a held-out explained
    variance of 0.78; 2e-3 0.92; 4e-3 0.95 with 0.6% dead latents; 8e-3 0.96 but 15% dead.
    """
    return 2.5e-3 / math.sqrt(width / 4096)
