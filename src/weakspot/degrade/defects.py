"""Sensor defects with a persistent defect map: dead, hot and stuck pixels.

Like a real sensor, the defective positions are a property of the *sensor*, not of the
shot: they depend only on ``(kind, map_seed, H, W)`` — never on the call's ``generator``,
the batch or the image — so every image of a run shows the same defects. Maps are nested:
a larger count keeps all positions of a smaller one (the first ``n`` entries of one fixed
random permutation of the pixels), so severities form a monotone series.

How many pixels
---------------
``density > 0`` wins: ``n = max(1, round(density · H · W))``; otherwise ``n = count``
(capped at ``H · W``). ``count`` suits small images (1–10 on a 28 × 28 MNIST digit);
``density`` is size-independent and is the sweep axis. Severities 1–5 are densities
5·10⁻⁴ … 10⁻² (1, 1, 2, 4, 8 pixels on 28 × 28; 25 … 502 on 224 × 224).

What a defect does (all channels of a pixel unless said otherwise)
-------------------------------------------------------------------
* dead: value 0 (a photosite that collects no charge).
* hot: ``min(1, x + level)``: a large extra dark signal; ``level = 1`` saturates.
* stuck: a fixed value per pixel *and channel*, uniform in [0, 1), drawn from the map seed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, keyed_generator

__all__ = ["defect_positions", "stuck_values", "dead_pixels", "hot_pixels", "stuck_pixels", "defect_count"]

_SEVERITIES = {
    1: {"density": 0.0005},
    2: {"density": 0.001},
    3: {"density": 0.002},
    4: {"density": 0.005},
    5: {"density": 0.01},
}


def defect_count(h: int, w: int, count: int, density: float) -> int:
    """Number of defective pixels on an ``h × w`` sensor (density wins when > 0)."""
    n = max(1, round(density * h * w)) if density > 0 else int(count)
    return min(n, h * w)


@lru_cache(maxsize=64)
def _permutation(kind: str, map_seed: int, h: int, w: int) -> torch.Tensor:
    return torch.randperm(h * w, generator=keyed_generator("weakspot.defects", kind, int(map_seed), h, w))


def defect_positions(kind: str, map_seed: int, h: int, w: int, n: int) -> torch.Tensor:
    """Flat indices ``(n,)`` (``y · w + x``) of the defective pixels of sensor ``map_seed``."""
    return _permutation(kind, int(map_seed), h, w)[:n]


@lru_cache(maxsize=16)
def _stuck_map(map_seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(
        3, h * w, generator=keyed_generator("weakspot.defects", "stuck_values", int(map_seed), h, w)
    )


def stuck_values(map_seed: int, h: int, w: int, idx: torch.Tensor, channels: int) -> torch.Tensor:
    """Stuck values ``(channels, n)`` of the pixels ``idx`` (a fixed value per position and channel)."""
    return _stuck_map(int(map_seed), h, w)[:channels, idx]


def _apply(images: torch.Tensor, kind: str, count: int, density: float, map_seed: int, fn) -> torch.Tensor:
    b, c, h, w = images.shape
    n = defect_count(h, w, count, density)
    if n == 0:
        return images
    idx = defect_positions(kind, map_seed, h, w, n).to(images.device)
    out = images.clone(memory_format=torch.contiguous_format)
    flat = out.view(b, c, h * w)
    flat[:, :, idx] = fn(images.reshape(b, c, h * w)[:, :, idx], idx)
    return out


_COMMON = [
    Param("count", 10, "px", 0, 1e8, "number of defective pixels (used when density is 0)", type=int),
    Param("density", 0.0, "", 0.0, 1.0, "fraction of defective pixels; wins over count when > 0"),
    Param("map_seed", 0, "", 0, 2**31 - 1, "sensor identity: same seed → same defect positions", type=int),
]


@register(
    "dead_pixels",
    params=_COMMON,
    severities=_SEVERITIES,
    family="sensor_defect",
    axis="density",
    random=False,
    differentiable=True,
)
def dead_pixels(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    count: int = 10,
    density: float = 0.0,
    map_seed: int = 0,
) -> torch.Tensor:
    """Dead pixels: a persistent set of pixels reads 0 in every channel."""
    return _apply(images, "dead", count, density, map_seed, lambda v, idx: torch.zeros_like(v))


@register(
    "hot_pixels",
    params=[
        *_COMMON,
        Param("level", 1.0, "", 0.0, 1.0, "extra signal of a hot pixel (1 = saturated)", low_open=True),
    ],
    severities=_SEVERITIES,
    family="sensor_defect",
    axis="density",
    random=False,
    differentiable=True,
)
def hot_pixels(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    count: int = 10,
    density: float = 0.0,
    map_seed: int = 0,
    level: float = 1.0,
) -> torch.Tensor:
    """Hot pixels: a persistent set of pixels gets ``level`` of extra signal, ``min(1, x + level)``."""
    return _apply(images, "hot", count, density, map_seed, lambda v, idx: (v + level).clamp(max=1.0))


@register(
    "stuck_pixels",
    params=_COMMON,
    severities=_SEVERITIES,
    family="sensor_defect",
    axis="density",
    random=False,
    differentiable=True,
)
def stuck_pixels(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    count: int = 10,
    density: float = 0.0,
    map_seed: int = 0,
) -> torch.Tensor:
    """Stuck pixels: a persistent set of pixels reads a fixed value per channel, whatever the light."""
    h, w = images.shape[-2:]

    def value(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        s = stuck_values(map_seed, h, w, idx.cpu(), v.shape[1]).to(device=v.device, dtype=v.dtype)
        return s.unsqueeze(0).expand_as(v)

    return _apply(images, "stuck", count, density, map_seed, value)
