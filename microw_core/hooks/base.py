"""Hook base classes: Detectors observe activations, Controllers replace them.

The framework unpacks tuple outputs and ModelOutputs, so a hook always sees the hidden-state
tensor [batch, seq, d] and a Controller returns a tensor of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a detector to end the forward pass early (nothing deeper is computed)."""


@dataclass
class HookContext:
    """What a hook knows about the call it runs in."""

    layer: str
    module: nn.Module
    attention_mask: torch.Tensor | None  # [batch, seq] for the positions in `activation`, 1 = real token
    input_ids: torch.Tensor | None       # ids of the current forward (only the new tokens during cached generation)
    past_length: int                     # tokens before this forward (0 for a prompt, >0 for cached generation steps)


class Hook:
    """A hook bound to one layer (alias or dotted name). `pre=True` hooks see the module input."""

    def __init__(self, layer: str):
        self.layer = layer


class Detector(Hook):
    """Observes activations and never changes the output."""

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        raise NotImplementedError


class Controller(Hook):
    """Returns a modified activation of the same shape."""

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
