"""Built-in detectors: record activations, model inputs and model outputs."""

from __future__ import annotations

import torch

from ..layers import ROOT
from .base import Detector, HookContext, StopForward


class ActivationRecorder(Detector):
    """Keeps a CPU copy of the layer's activation (and the padding mask) for every forward."""

    def __init__(self, layer: str, stop_forward: bool = False):
        super().__init__(layer)
        self.stop_forward = stop_forward  # end the forward here: deeper layers are never computed
        self.activations: list[torch.Tensor] = []
        self.attention_masks: list[torch.Tensor | None] = []

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        self.activations.append(activation.detach().to("cpu", copy=True))
        self.attention_masks.append(None if ctx.attention_mask is None else ctx.attention_mask.detach().cpu())
        if self.stop_forward:
            raise StopForward

    @property
    def last(self) -> torch.Tensor:
        if not self.activations:
            raise RuntimeError(f"ActivationRecorder('{self.layer}') has not seen a forward pass yet")
        return self.activations[-1]

    def clear(self) -> None:
        self.activations.clear()
        self.attention_masks.clear()


class InputRecorder(Detector):
    """Records the input ids and attention mask of every forward of the model."""

    def __init__(self):
        super().__init__(ROOT)
        self.input_ids: list[torch.Tensor] = []
        self.attention_masks: list[torch.Tensor | None] = []

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        # The root module's output is the logits; the inputs come from the context.
        if ctx.input_ids is not None:
            self.input_ids.append(ctx.input_ids.detach().cpu())
        self.attention_masks.append(None if ctx.attention_mask is None else ctx.attention_mask.detach().cpu())


class OutputRecorder(Detector):
    """Records the logits of every forward of the model."""

    def __init__(self):
        super().__init__(ROOT)
        self.logits: list[torch.Tensor] = []

    def observe(self, ctx: HookContext, activation: torch.Tensor) -> None:
        self.logits.append(activation.detach().cpu())
