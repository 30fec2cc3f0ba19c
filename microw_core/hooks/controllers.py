"""Built-in controllers: arbitrary functions, vector addition, and edits along a direction."""

from __future__ import annotations

from typing import Callable

import torch

from .base import Controller, HookContext

ActivationFn = Callable[[HookContext, torch.Tensor], torch.Tensor]


def _unit(direction: torch.Tensor) -> torch.Tensor:
    return direction / direction.norm().clamp_min(1e-12)


class FunctionController(Controller):
    """Applies `fn(ctx, activation) -> activation`."""

    def __init__(self, layer: str, fn: ActivationFn):
        super().__init__(layer)
        self.fn = fn

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        return self.fn(ctx, activation)


class AddVector(Controller):
    """Adds `scale * vector` at every position (or where `positions(ctx, activation)` is True)."""

    def __init__(self, layer: str, vector: torch.Tensor, scale: float = 1.0,
                 positions: Callable[[HookContext, torch.Tensor], torch.Tensor] | None = None):
        super().__init__(layer)
        self.vector, self.scale, self.positions = vector, scale, positions

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        delta = (self.scale * self.vector).to(activation.device, activation.dtype)
        if self.positions is None:
            return activation + delta
        where = self.positions(ctx, activation).to(activation.device)  # [batch, seq] bool
        return activation + where.unsqueeze(-1).to(activation.dtype) * delta


class ScaleDirection(Controller):
    """Multiplies the component of the activation along `direction` by `scale`."""

    def __init__(self, layer: str, direction: torch.Tensor, scale: float):
        super().__init__(layer)
        self.direction, self.scale = _unit(direction), scale

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        u = self.direction.to(activation.device, activation.dtype)
        coeff = activation @ u
        return activation + ((self.scale - 1.0) * coeff).unsqueeze(-1) * u


class ZeroDirection(ScaleDirection):
    """Projects `direction` out of the activation (directional ablation)."""

    def __init__(self, layer: str, direction: torch.Tensor):
        super().__init__(layer, direction, scale=0.0)


class ClampDirection(Controller):
    """Sets the component of the activation along `direction` to `value`."""

    def __init__(self, layer: str, direction: torch.Tensor, value: float):
        super().__init__(layer)
        self.direction, self.value = _unit(direction), value

    def modify(self, ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        u = self.direction.to(activation.device, activation.dtype)
        coeff = activation @ u
        return activation + (self.value - coeff).unsqueeze(-1) * u
