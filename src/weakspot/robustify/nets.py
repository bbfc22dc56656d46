"""The small built-in classifier and the head surgery of the transfer strategy."""

from __future__ import annotations

import torch
from torch import nn

from weakspot.errors import InvalidParameterError

__all__ = ["SmallCNN", "replace_head", "find_head", "TRANSFER_HIDDEN"]

#: Units of the new fully connected layers the transfer strategy puts on top.
TRANSFER_HIDDEN = (256, 512)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks, Dropout, a hidden fully connected layer and a linear head.

    Input ``(B, in_channels, H, W)`` float in [0, 1]; the last feature map is
    average-pooled to ``pooled × pooled`` (a no-op for 28×28 digits with the two
    default blocks, 7×7), so any input size ≥ 4 works. Output logits
    ``(B, num_classes)``. Defaults on 28×28 digits: ≈ 0.42 M parameters,
    ≈ 8.5 MFLOPs per image (2 FLOPs per multiply-add).

    Example:
        >>> import torch
        >>> SmallCNN(1, 10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
        pooled: int = 7,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise InvalidParameterError("in_channels", in_channels, "1 or 3")
        if num_classes < 2:
            raise InvalidParameterError("num_classes", num_classes, "an integer >= 2")
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c * pooled * pooled, hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.in_channels, self.num_classes = in_channels, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x - 0.5)).flatten(1)
        x = self.dropout(torch.relu(self.fc(self.dropout(x))))
        return self.head(x)


def find_head(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The last ``nn.Linear`` of ``model`` as ``(parent, attribute, layer)``."""
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    if last is None:
        raise InvalidParameterError(
            "model", type(model).__name__, "a classifier whose head is an nn.Linear (transfer strategy)"
        )
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, getattr(parent, attr)


def replace_head(
    model: nn.Module,
    hidden: tuple[int, ...] = TRANSFER_HIDDEN,
    dropout: float = 0.25,
    generator_seed: int = 0,
) -> nn.Module:
    """Replace the last linear layer with new fully connected layers (``hidden`` units,
    ReLU, Dropout) and a fresh output layer with the same number of classes; in place.

    The new layers are initialised from ``generator_seed`` (no global seed).
    """
    parent, attr, old = find_head(model)
    layers: list[nn.Module] = []
    c = old.in_features
    for h in hidden:
        layers += [nn.Linear(c, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        c = h
    layers.append(nn.Linear(c, old.out_features))
    new = nn.Sequential(*layers).to(old.weight.device)
    g = torch.Generator().manual_seed(int(generator_seed))
    with torch.no_grad():
        for m in new:
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=g))
                m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=g))
    setattr(parent, attr, new)
    return model
