"""Model input preprocessing as a pure, differentiable function on batched tensors.

The order of operations (the same for every model, documented in docs/evaluate.md):

1. the image arrives as ``(B, C, H, W)`` float in [0, 1] at its *native* resolution
   (degradations have already been applied on that pixel grid);
2. channels are adapted to the model (gray → RGB by replication, RGB → gray by
   ITU-R BT.601 luma);
3. resize: with ``resize_px`` set, the shorter side is scaled to ``resize_px`` (aspect
   kept) and the centre ``size`` is cropped; without it, the image is resized straight to
   ``size`` (aspect not kept). Interpolation is ``bilinear`` by default, with
   anti-aliasing when shrinking (as PIL and torchvision ``antialias=True`` do);
4. normalisation ``(x - mean) / std`` per channel, in [0, 1] units. ``[-1, 1]`` scaling is
   ``mean = std = 0.5``; TensorFlow's inception style (127, 128 on 0…255) is
   ``mean = 127/255, std = 128/255``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from weakspot.errors import InvalidParameterError

__all__ = ["Preprocess", "IMAGENET_MEAN", "IMAGENET_STD", "preprocess_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the centre crop's share of the resized shorter side (torchvision's and timm's 224/256)
CROP_FRACTION = 0.875
_INTERP = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input.

    Attributes:
        size: ``(height, width)`` of the model input in pixels.
        resize_px: shorter side after resizing, before the centre crop to ``size``;
            ``None`` resizes straight to ``size``; ``"auto"`` (the default) is
            ``round(min(size) / 0.875)``, the usual 87.5 % centre crop (256 for a 224 input,
            32 for 28), so a ``size`` given alone never inherits the 224-input resize.
        interpolation: ``bilinear`` (default), ``bicubic``, ``nearest`` or ``area``.
        mean, std: per-channel normalisation in [0, 1] units (length = ``channels``).
        channels: 1 (gray) or 3 (RGB) channels the model expects.
    """

    size: tuple[int, int] = (224, 224)
    resize_px: int | Literal["auto"] | None = "auto"
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, int):
            size = (size, size)
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if min(self.size) < 1:
            raise InvalidParameterError("preprocess.size", self.size, "positive (height, width) in pixels")
        if self.resize_px == "auto":
            object.__setattr__(self, "resize_px", int(round(min(self.size) / CROP_FRACTION)))
        elif isinstance(self.resize_px, str):
            raise InvalidParameterError("preprocess.resize_px", self.resize_px, "pixels, 'auto' or null")
        if self.resize_px is not None and int(self.resize_px) < min(self.size):
            raise InvalidParameterError(
                "preprocess.resize_px", self.resize_px, f">= the crop size {min(self.size)} px, or null"
            )
        if self.interpolation not in _INTERP:
            raise InvalidParameterError("preprocess.interpolation", self.interpolation, ", ".join(_INTERP))
        if self.channels not in (1, 3):
            raise InvalidParameterError("preprocess.channels", self.channels, "1 or 3")
        mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(mean) == 1:
            mean = mean * self.channels
        if len(std) == 1:
            std = std * self.channels
        if len(mean) != self.channels or len(std) != self.channels:
            raise InvalidParameterError(
                "preprocess.mean/std", (self.mean, self.std), f"{self.channels} values each (one per channel)"
            )
        if min(std) <= 0:
            raise InvalidParameterError("preprocess.std", self.std, "positive values")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return preprocess_images(images, self)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)


def _one_size(x: torch.Tensor, p: Preprocess) -> torch.Tensor:
    c = x.shape[1]
    if c != p.channels:
        if c == 1:
            x = x.expand(-1, 3, -1, -1)
        elif c == 3:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(1, keepdim=True)
        else:
            raise InvalidParameterError("images", f"{c} channels", "1 or 3 channels")
    x = x.float() if not x.is_floating_point() else x
    th, tw = p.size
    if p.resize_px is None:
        x = _resize(x, (th, tw), p.interpolation)
    else:
        # shorter side -> resize_px, longer side truncated (torchvision's convention), then the
        # centre crop with torchvision's rounding of the offsets
        h, w = int(x.shape[-2]), int(x.shape[-1])
        r = int(p.resize_px)
        nh, nw = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
        nh, nw = max(th, nh), max(tw, nw)
        x = _resize(x, (nh, nw), p.interpolation)
        top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
        x = x[..., top : top + th, left : left + tw]
    if p.interpolation == "bicubic":
        x = x.clamp(0.0, 1.0)  # bicubic overshoots; the model saw clipped 8-bit pixels
    mean = torch.tensor(p.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def preprocess_images(images: torch.Tensor | Sequence[torch.Tensor], p: Preprocess) -> torch.Tensor:
    """Turn images in [0, 1] at any size into the model input ``(B, channels, *size)``.

    ``images`` is a batch ``(B, C, H, W)`` or a sequence of ``(C, H, W)`` tensors of
    different sizes (each is processed at its own size, then stacked). Differentiable.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            raise InvalidParameterError("images", tuple(images.shape), "(B, C, H, W) or a list of (C, H, W)")
        return _one_size(images, p)
    images = list(images)
    if not images:
        raise InvalidParameterError("images", "[]", "at least one image")
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    for idx in groups.values():
        res = _one_size(torch.stack([images[i] for i in idx]), p)
        for j, i in enumerate(idx):
            out[i] = res[j]
    return torch.stack(out)  # type: ignore[arg-type]
