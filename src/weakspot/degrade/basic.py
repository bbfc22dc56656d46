"""Additive Gaussian noise (by variance) and Gaussian blur (by sigma in pixels)."""

from __future__ import annotations

import torch

from weakspot.degrade.filters import gaussian_blur2d
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, randn


@register(
    "gaussian_noise",
    params=[
        Param("variance", 0.01, "", 0.0, 1.0, "variance σ² of additive N(0, σ²) noise on [0, 1] intensities"),
    ],
    severities={
        1: {"variance": 0.001},
        2: {"variance": 0.005},
        3: {"variance": 0.01},
        4: {"variance": 0.025},
        5: {"variance": 0.05},
    },
    family="noise",
    axis="variance",
    differentiable=True,
)
def gaussian_noise(
    images: torch.Tensor, *, generator: GeneratorLike = None, variance: float = 0.01
) -> torch.Tensor:
    """Additive white Gaussian noise N(0, variance) per pixel and channel, then clip to [0, 1].

    ``variance`` is σ² on the [0, 1] scale (0.01 ⇒ σ = 0.1 ≈ 25.5/255).
    Severity levels span the range used in robust-training studies (0.001–0.05).
    """
    if variance == 0:
        return images
    noise = randn(images.shape, generator, images.device, images.dtype, stream="gaussian_noise")
    return (images + noise * float(variance) ** 0.5).clamp(0.0, 1.0)


@register(
    "gaussian_blur",
    params=[Param("sigma_px", 1.0, "px", 0.0, 50.0, "standard deviation of the Gaussian kernel, in pixels")],
    severities={
        1: {"sigma_px": 0.4},
        2: {"sigma_px": 0.7},
        3: {"sigma_px": 1.0},
        4: {"sigma_px": 2.0},
        5: {"sigma_px": 3.0},
    },
    family="blur",
    axis="sigma_px",
    random=False,
    differentiable=True,
)
def gaussian_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, sigma_px: float = 1.0
) -> torch.Tensor:
    """Isotropic Gaussian blur, σ in pixels of the input grid, reflect borders, radius ⌈4σ⌉."""
    return gaussian_blur2d(images, sigma_px)
