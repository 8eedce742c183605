"""Exponential moving average of model weights (timm ``ModelEma`` semantics, as unilm ``--model_ema`` uses it).

The reference keeps it optionally on CPU, updates it after every optimiser step, saves it as ``model_ema`` and
never evaluates with it. Floating-point parameters *and* buffers are averaged; integer buffers (e.g. BatchNorm's
``num_batches_tracked``) are copied, where timm would round a float average back into the integer tensor.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    """ema ← decay·ema + (1 − decay)·model for every state-dict tensor.

    Args:
        model: the model to track; a frozen deep copy is kept in ``self.module`` (eval mode).
        decay: averaging factor per update.
        device: device to keep the copy on (e.g. "cpu" to save accelerator memory); None follows the tracked
            model's device at each update.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: str | torch.device | None = None) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.device = torch.device(device) if device is not None else None
        self.module = copy.deepcopy(_unwrap(model)).eval()
        if self.device is not None:
            self.module.to(self.device)
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` (DDP-wrapped or not) into the average."""
        current = _unwrap(model).state_dict()
        if self.device is None and current:
            # Follow the tracked model (a LightningModule builds the EMA on CPU, then moves to the GPU), so the
            # update does not copy every weight across devices each step.
            self.module.to(next(iter(current.values())).device)
        for name, ema_value in self.module.state_dict().items():
            if name not in current:
                raise KeyError(f"EMA update: model has no state entry {name!r}; was the architecture changed?")
            value = current[name].detach().to(ema_value.device)
            if ema_value.is_floating_point():
                ema_value.mul_(self.decay).add_(value.to(ema_value.dtype), alpha=1.0 - self.decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights, keyed like the tracked model's own state dict."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore averaged weights saved by :meth:`state_dict` (strict)."""
        self.module.load_state_dict(state_dict)


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip a DistributedDataParallel/DataParallel ``.module`` wrapper if present."""
    wrapped = isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
    return model.module if wrapped else model
