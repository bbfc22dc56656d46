"""ImageNet-C blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Kernel sizes are in pixels of the input grid, exactly as the reference (tuned for 224²);
they are not rescaled for other sizes (pass explicit parameters to do so).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from weakspot.degrade.filters import fft_filter2d, gaussian_blur2d, separable_filter2d
from weakspot.degrade.imagenet_c._common import (
    clipped_zoom,
    motion_blur_images,
    per_image_uniform,
    straight_through,
)
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, rand

__all__ = [
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "disk_kernel",
    "simulate_glass_shuffle",
    "glass_displacement_table",
]

_FAMILY = "imagenet_c"
_GLASS_TABLE = Path(__file__).with_name("glass_displacements.npz")


def _gaussian_taps(ksize: int, sigma: float) -> torch.Tensor:
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def disk_kernel(radius_px: int, alias_blur_px: float) -> torch.Tensor:
    """The reference's anti-aliased pillbox ``(K, K)`` float64, summing to 1.

    A binary disk ``x² + y² ≤ r²`` on a grid of half-width ``max(8, r)``, normalised, then
    smoothed by a Gaussian of σ = ``alias_blur_px`` (3×3 taps for r ≤ 8, else 5×5; mirrored
    borders, as OpenCV's ``GaussianBlur``).
    """
    half = 8 if radius_px <= 8 else int(radius_px)
    ks = 3 if radius_px <= 8 else 5
    ax = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((ax[:, None] ** 2 + ax[None, :] ** 2) <= radius_px**2).to(torch.float64)
    disk = disk / disk.sum()
    g = _gaussian_taps(ks, float(alias_blur_px))
    d = disk[None, None]

    return separable_filter2d(d, g, border="reflect")[0, 0]


@register(
    "imagenet_c/defocus_blur",
    params=[
        Param("radius_px", 6, "px", 1, 100, "radius of the pillbox (blur circle) in pixels", type=int),
        Param("alias_blur_px", 0.5, "px", 0.0, 10.0, "σ of the Gaussian that anti-aliases the disk", low_open=True),
    ],
    severities={1: {"radius_px": 3, "alias_blur_px": 0.1}, 2: {"radius_px": 4, "alias_blur_px": 0.5},
                3: {"radius_px": 6, "alias_blur_px": 0.5}, 4: {"radius_px": 8, "alias_blur_px": 0.5},
                5: {"radius_px": 10, "alias_blur_px": 0.5}},
    family=_FAMILY,
    axis="radius_px",
    random=False,
    differentiable=True,
)
def defocus_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, radius_px: int = 6, alias_blur_px: float = 0.5
) -> torch.Tensor:
    """Defocus: convolution with an anti-aliased pillbox of radius ``radius_px`` (mirrored borders).

    A thin lens maps a defocus of ΔD diopters to a blur-circle diameter ``f·ΔD·f/N``
    (see ``docs/imagenet_c.md`` for the diopter equivalents). ``(B, C, H, W) -> (B, C, H, W)``.
    """
    k = disk_kernel(int(radius_px), float(alias_blur_px)).to(images.dtype)
    return fft_filter2d(images, k, border="reflect").clamp(0.0, 1.0)


def simulate_glass_shuffle(size: int, max_delta_px: int, iterations: int, seed: int = 0) -> np.ndarray:
    """Run ImageNet-C's sequential local pixel swap on a ``size²`` grid of coordinates.

    Returns the source offsets ``(size, size, 2)`` (dy, dx): the pixel that ends at ``p`` came
    from ``p + offset``. A slow Python loop: used to tabulate the displacement distribution
    (:func:`glass_displacement_table`) and by the tests, never at run time.
    """
    rng = np.random.default_rng(seed)
    d = int(max_delta_px)
    grid = np.stack(np.mgrid[0:size, 0:size], -1)
    pos = grid.copy()
    for _ in range(iterations):
        for h in range(size - d, d, -1):
            for w in range(size - d, d, -1):
                dx, dy = rng.integers(-d, d, size=2)
                a = pos[h, w].copy()
                pos[h, w] = pos[h + dy, w + dx]
                pos[h + dy, w + dx] = a
    return pos - grid


def build_glass_tables(size: int = 224, runs: int = 6, margin: int = 40, reach: int = 20) -> dict[str, np.ndarray]:
    """Histogram the swap chain's interior displacements for every reference setting.

    Writes nothing; :mod:`weakspot.degrade.imagenet_c.blur` ships the result as
    ``glass_displacements.npz`` (regenerate with :func:`write_glass_tables`).
    """
    out = {}
    for d, it in sorted({(1, 2), (2, 1), (2, 3), (3, 2), (4, 2)}):
        hist = np.zeros((2 * reach + 1, 2 * reach + 1))
        for run in range(runs):
            off = simulate_glass_shuffle(size, d, it, seed=1000 * d + 10 * it + run)[margin:-margin, margin:-margin]
            off = off.reshape(-1, 2)
            keep = (np.abs(off) <= reach).all(1)
            np.add.at(hist, (off[keep, 0] + reach, off[keep, 1] + reach), 1)
        out[f"d{d}_i{it}"] = hist / hist.sum()
    return out


@functools.lru_cache(maxsize=32)
def glass_displacement_table(max_delta_px: int, iterations: int) -> tuple[torch.Tensor, int]:
    """CDF over the ``(2R+1)²`` source offsets of the reference's swap chain, and ``R``.

    Reference settings use the tabulated histograms; other settings are simulated once
    (on a 96² grid) and cached.
    """
    key = f"d{int(max_delta_px)}_i{int(iterations)}"
    tables = np.load(_GLASS_TABLE) if _GLASS_TABLE.exists() else {}
    if key in tables:
        hist = np.asarray(tables[key], dtype=np.float64)
    else:
        reach = 20
        hist = np.zeros((2 * reach + 1, 2 * reach + 1))
        m = 4 * int(max_delta_px) + 8
        size = 96 + 2 * m
        off = simulate_glass_shuffle(size, max_delta_px, iterations, seed=0)[m:-m, m:-m].reshape(-1, 2)
        off = off[(np.abs(off) <= reach).all(1)]
        np.add.at(hist, (off[:, 0] + reach, off[:, 1] + reach), 1)
        hist /= hist.sum()
    reach = hist.shape[0] // 2
    cdf = torch.from_numpy(hist.reshape(-1)).cumsum(0)
    cdf = cdf / cdf[-1]
    return cdf, reach


def _glass_shuffle(images: torch.Tensor, max_delta_px: int, iterations: int, generator: GeneratorLike) -> torch.Tensor:
    b, c, h, w = images.shape
    cdf, reach = glass_displacement_table(int(max_delta_px), int(iterations))
    u = rand((b, h, w), generator, images.device, torch.float64)
    k = torch.searchsorted(cdf.to(images.device), u.reshape(b, -1), right=True).clamp_max(cdf.numel() - 1)
    side = 2 * reach + 1
    dy, dx = k // side - reach, k % side - reach
    yy = torch.arange(h, device=images.device).repeat_interleave(w)
    xx = torch.arange(w, device=images.device).repeat(h)
    src = (yy + dy).clamp(0, h - 1) * w + (xx + dx).clamp(0, w - 1)  # (B, H*W)
    flat = images.reshape(b, c, h * w)
    return flat.gather(2, src.unsqueeze(1).expand(b, c, h * w)).reshape(b, c, h, w)


@register(
    "imagenet_c/glass_blur",
    params=[
        Param("sigma_px", 1.0, "px", 0.0, 20.0, "σ of the Gaussian blur before and after the shuffle", low_open=True),
        Param("max_delta_px", 2, "px", 1, 10, "maximum step of one local pixel swap", type=int),
        Param("iterations", 3, "", 1, 10, "passes of the local pixel shuffle", type=int),
    ],
    severities={1: {"sigma_px": 0.7, "max_delta_px": 1, "iterations": 2},
                2: {"sigma_px": 0.9, "max_delta_px": 2, "iterations": 1},
                3: {"sigma_px": 1.0, "max_delta_px": 2, "iterations": 3},
                4: {"sigma_px": 1.1, "max_delta_px": 3, "iterations": 2},
                5: {"sigma_px": 1.5, "max_delta_px": 4, "iterations": 2}},
    family=_FAMILY,
    axis="max_delta_px",
)
def glass_blur(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    sigma_px: float = 1.0,
    max_delta_px: int = 2,
    iterations: int = 3,
) -> torch.Tensor:
    """Frosted glass: Gaussian blur, local pixel shuffle, Gaussian blur again.

    The reference swaps pixels one by one in a sequential scan (1.4 s per 224² image). Here
    every pixel instead fetches its value from an offset drawn i.i.d. from the exact
    distribution that scan produces (tabulated by simulating it, ``glass_displacements.npz``),
    one gather for the whole batch. Differentiable in the image (not in the offsets).
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    x = gaussian_blur2d(images, float(sigma_px), border="replicate")
    x = straight_through(x, torch.floor(x.clamp(0, 1) * 255) / 255)  # the reference's uint8 step
    x = _glass_shuffle(x, max_delta_px, iterations, generator)
    return gaussian_blur2d(x, float(sigma_px), border="replicate").clamp(0.0, 1.0)


@register(
    "imagenet_c/motion_blur",
    params=[
        Param("radius_px", 15, "px", 1, 100, "the blur trail has 2·radius+1 taps, one pixel apart", type=int),
        Param("sigma_px", 5.0, "px", 0.0, 100.0, "σ of the half-Gaussian tap weights along the trail", low_open=True),
        Param("angle_min_deg", -45.0, "deg", -360.0, 360.0, "lower end of the uniform random direction"),
        Param("angle_max_deg", 45.0, "deg", -360.0, 360.0, "upper end of the uniform random direction"),
    ],
    severities={1: {"radius_px": 10, "sigma_px": 3.0}, 2: {"radius_px": 15, "sigma_px": 5.0},
                3: {"radius_px": 15, "sigma_px": 8.0}, 4: {"radius_px": 15, "sigma_px": 12.0},
                5: {"radius_px": 20, "sigma_px": 15.0}},
    family=_FAMILY,
    axis="sigma_px",
    differentiable=True,
)
def motion_blur(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    radius_px: int = 15,
    sigma_px: float = 5.0,
    angle_min_deg: float = -45.0,
    angle_max_deg: float = 45.0,
) -> torch.Tensor:
    """Linear camera motion: a one-sided trail of ``2·radius_px+1`` taps with half-Gaussian
    weights, in a direction drawn uniformly per image (set both angle bounds equal for a fixed
    kernel). Edge-replicated borders; one FFT convolution for the batch.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    angle = per_image_uniform(float(angle_min_deg), float(angle_max_deg), images.shape[0], generator, "cpu")
    return motion_blur_images(images, int(radius_px), float(sigma_px), angle).clamp(0.0, 1.0)


def zoom_factors(zoom_stop: float, zoom_step: float) -> np.ndarray:
    """The reference's zoom factors ``np.arange(1, zoom_stop, zoom_step)``."""
    return np.arange(1, zoom_stop, zoom_step)


@register(
    "imagenet_c/zoom_blur",
    params=[
        Param("zoom_stop", 1.21, "", 1.0, 4.0, "zoom factors run from 1 up to (excluding) this", low_open=True),
        Param("zoom_step", 0.02, "", 0.0, 1.0, "spacing of the zoom factors", low_open=True),
    ],
    severities={1: {"zoom_stop": 1.11, "zoom_step": 0.01}, 2: {"zoom_stop": 1.16, "zoom_step": 0.01},
                3: {"zoom_stop": 1.21, "zoom_step": 0.02}, 4: {"zoom_stop": 1.26, "zoom_step": 0.02},
                5: {"zoom_stop": 1.31, "zoom_step": 0.03}},
    family=_FAMILY,
    axis="zoom_stop",
    random=False,
    differentiable=True,
)
def zoom_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, zoom_stop: float = 1.21, zoom_step: float = 0.02
) -> torch.Tensor:
    """Zoom (radial) blur: the mean of the image and its centre zooms by every factor in
    ``arange(1, zoom_stop, zoom_step)`` (bilinear). ``(B, C, H, W) -> (B, C, H, W)``.
    """
    factors = zoom_factors(float(zoom_stop), float(zoom_step))
    acc = images.clone()
    for z in factors:
        acc = acc + (images if z == 1.0 else clipped_zoom(images, float(z)))
    return (acc / (len(factors) + 1)).clamp(0.0, 1.0)


@register(
    "imagenet_c/gaussian_blur",
    params=[Param("sigma_px", 3.0, "px", 0.0, 50.0, "σ of the Gaussian kernel in pixels", low_open=True)],
    severities={1: {"sigma_px": 1.0}, 2: {"sigma_px": 2.0}, 3: {"sigma_px": 3.0}, 4: {"sigma_px": 4.0},
                5: {"sigma_px": 6.0}},
    family=_FAMILY,
    axis="sigma_px",
    random=False,
    differentiable=True,
)
def gaussian_blur(images: torch.Tensor, *, generator: GeneratorLike = None, sigma_px: float = 3.0) -> torch.Tensor:
    """Isotropic Gaussian blur (radius ⌈4σ⌉, edge-replicated borders as skimage's default).

    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    return gaussian_blur2d(images, float(sigma_px), border="replicate").clamp(0.0, 1.0)


def write_glass_tables(path: Path = _GLASS_TABLE) -> Path:
    """Regenerate the shipped ``glass_displacements.npz`` (about a minute, pure Python)."""
    np.savez_compressed(path, **build_glass_tables())
    return path
