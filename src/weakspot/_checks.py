"""Input validation shared by every degradation: fail early, name the argument."""

from __future__ import annotations

import math

import torch

from weakspot.errors import InvalidImageError, InvalidParameterError

#: Values this far outside [0, 1] are tolerated as float round-off and clamped.
RANGE_TOLERANCE = 1e-4


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate a batch ``(B, C, H, W)`` of float images in [0, 1].

    Returns the tensor unchanged. Raises :class:`InvalidImageError` with a message
    naming ``name`` for a wrong type, rank, dtype, channel count, NaN/Inf or range.
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidImageError(f"'{name}' must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise InvalidImageError(
            f"'{name}' must have shape (B, C, H, W), got {tuple(images.shape)}; "
            "add a batch dimension with images.unsqueeze(0)"
        )
    if not images.is_floating_point():
        raise InvalidImageError(
            f"'{name}' must be a float tensor in [0, 1], got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 255"
        )
    if images.shape[1] not in (1, 3):
        raise InvalidImageError(f"'{name}' must have 1 or 3 channels, got {images.shape[1]}")
    if images.numel() == 0:
        raise InvalidImageError(f"'{name}' is empty: shape {tuple(images.shape)}")
    with torch.no_grad():
        # one pass: NaN propagates into min/max, and Inf lands outside [0, 1]
        lo_t, hi_t = torch.aminmax(images.detach())
        lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidImageError(f"'{name}' contains NaN or Inf values")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InvalidImageError(
            f"'{name}' must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "divide 8-bit images by 255 (16-bit by 65535)"
        )
    return images


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
) -> float:
    """Check a scalar parameter lies in its valid interval; return it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(name, value, "a number") from None
    if math.isnan(v):
        raise InvalidParameterError(name, value, "a number, not NaN")
    ok = True
    if low is not None:
        ok &= v >= low if low_inclusive else v > low
    if high is not None:
        ok &= v <= high if high_inclusive else v < high
    if not ok:
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        u = f" {unit}" if unit else ""
        raise InvalidParameterError(name, value, f"{lb}{lo}, {hi}{hb}{u}")
    return v
