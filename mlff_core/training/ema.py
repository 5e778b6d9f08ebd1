"""Exponential moving average of model weights (evaluated and exported instead of raw weights)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """shadow ← d · shadow + (1 − d) · θ after each optimiser step, d = min(decay, (1+n)/(10+n))
    at update n (the warm-up keeps early averages from clinging to the random initialisation).

    Buffers (species tables, scales) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                self.shadow[name].copy_(value)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into `model`."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (a model state dict)."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int = 0) -> None:
        self.shadow = {k: v.detach().clone() for k, v in state.items()}
        self.updates = updates
