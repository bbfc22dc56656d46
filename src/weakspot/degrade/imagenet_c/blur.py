"""ImageNet-C blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Kernel sizes are in pixels of the input grid, exactly as the reference (tuned for 224²);
they are not rescaled for other sizes (pass explicit parameters to do so).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from weakspot.degrade.filters import (
    fast_gaussian_blur2d,
    fft_filter2d,
    gaussian_kernel1d,
    separable_filter2d,
)
from weakspot.degrade.imagenet_c import _cpu
from weakspot.degrade.imagenet_c._common import (
    clipped_zoom,
    motion_blur_images,
    per_image_uniform,
)
from weakspot.degrade.imagenet_c.glass import (
    glass_blur_codes,
    glass_blur_from_steps,
    glass_shuffle_map,
    glass_step_codes,
    simulate_glass_shuffle,
)
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike

__all__ = [
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "disk_kernel",
    "simulate_glass_shuffle",
    "glass_shuffle_map",
    "glass_blur_from_steps",
    "zoom_blur_resampled",
    "zoom_stack_matrix",
]

_FAMILY = "imagenet_c"


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
        Param(
            "alias_blur_px",
            0.5,
            "px",
            0.0,
            10.0,
            "σ of the Gaussian that anti-aliases the disk",
            low_open=True,
        ),
    ],
    severities={
        1: {"radius_px": 3, "alias_blur_px": 0.1},
        2: {"radius_px": 4, "alias_blur_px": 0.5},
        3: {"radius_px": 6, "alias_blur_px": 0.5},
        4: {"radius_px": 8, "alias_blur_px": 0.5},
        5: {"radius_px": 10, "alias_blur_px": 0.5},
    },
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


@register(
    "imagenet_c/glass_blur",
    params=[
        Param(
            "sigma_px",
            1.0,
            "px",
            0.0,
            20.0,
            "σ of the Gaussian blur before and after the shuffle",
            low_open=True,
        ),
        Param("max_delta_px", 2, "px", 1, 10, "maximum step of one local pixel swap", type=int),
        Param("iterations", 3, "", 1, 10, "passes of the local pixel shuffle", type=int),
    ],
    severities={
        1: {"sigma_px": 0.7, "max_delta_px": 1, "iterations": 2},
        2: {"sigma_px": 0.9, "max_delta_px": 2, "iterations": 1},
        3: {"sigma_px": 1.0, "max_delta_px": 2, "iterations": 3},
        4: {"sigma_px": 1.1, "max_delta_px": 3, "iterations": 2},
        5: {"sigma_px": 1.5, "max_delta_px": 4, "iterations": 2},
    },
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

    The reference moves pixels one by one in a sequential scan (1.4 s per 224² image). The
    same random steps are drawn here and the scan's outcome is resolved exactly, for all
    pixels of the batch at once, by pointer jumping (:func:`glass_shuffle_map`); the result is
    the reference's process, not an approximation of it. On the CPU the batch runs in tiles
    of a few images that fit the cache (:mod:`weakspot.degrade.imagenet_c.glass`).
    Differentiable in the image.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    d = int(max_delta_px)
    shape = (images.shape[0], int(iterations), *images.shape[-2:])
    return glass_blur_codes(
        images,
        glass_step_codes(shape, d, generator, images.device, stream="imagenet_c.glass_blur.steps"),
        float(sigma_px),
        d,
    )


@register(
    "imagenet_c/motion_blur",
    params=[
        Param("radius_px", 15, "px", 1, 100, "the blur trail has 2·radius+1 taps, one pixel apart", type=int),
        Param(
            "sigma_px",
            5.0,
            "px",
            0.0,
            100.0,
            "σ of the half-Gaussian tap weights along the trail",
            low_open=True,
        ),
        Param("angle_min_deg", -45.0, "deg", -360.0, 360.0, "lower end of the uniform random direction"),
        Param("angle_max_deg", 45.0, "deg", -360.0, 360.0, "upper end of the uniform random direction"),
    ],
    severities={
        1: {"radius_px": 10, "sigma_px": 3.0},
        2: {"radius_px": 15, "sigma_px": 5.0},
        3: {"radius_px": 15, "sigma_px": 8.0},
        4: {"radius_px": 15, "sigma_px": 12.0},
        5: {"radius_px": 20, "sigma_px": 15.0},
    },
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
    angle = per_image_uniform(
        float(angle_min_deg),
        float(angle_max_deg),
        images.shape[0],
        generator,
        "cpu",
        stream="imagenet_c.motion_blur.angle",
    )
    return motion_blur_images(
        images, int(radius_px), float(sigma_px), angle, (float(angle_min_deg), float(angle_max_deg))
    ).clamp(0.0, 1.0)


def zoom_factors(zoom_stop: float, zoom_step: float) -> np.ndarray:
    """The reference's zoom factors ``np.arange(1, zoom_stop, zoom_step)``."""
    return np.arange(1, zoom_stop, zoom_step)


@register(
    "imagenet_c/zoom_blur",
    params=[
        Param(
            "zoom_stop", 1.21, "", 1.0, 4.0, "zoom factors run from 1 up to (excluding) this", low_open=True
        ),
        Param("zoom_step", 0.02, "", 0.0, 1.0, "spacing of the zoom factors", low_open=True),
    ],
    severities={
        1: {"zoom_stop": 1.11, "zoom_step": 0.01},
        2: {"zoom_stop": 1.16, "zoom_step": 0.01},
        3: {"zoom_stop": 1.21, "zoom_step": 0.02},
        4: {"zoom_stop": 1.26, "zoom_step": 0.02},
        5: {"zoom_stop": 1.31, "zoom_step": 0.03},
    },
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

    The whole zoom stack is one linear map of each plane, which depends only on ``H×W`` and
    the factors. On the CPU (no autograd, up to ~500² px) it is built once as a sparse
    matrix (:func:`zoom_stack_matrix`, cached) and applied to all planes in one sparse × dense
    product, 5–10× faster than one bilinear resampling per factor; elsewhere the resamplings
    are summed (:func:`zoom_blur_resampled`). Both give the same values up to float rounding.
    """
    factors = tuple(float(z) for z in zoom_factors(float(zoom_stop), float(zoom_step)))
    b, c, h, w = images.shape
    use_matrix = (
        images.device.type == "cpu"
        and not (images.requires_grad and torch.is_grad_enabled())
        and images.dtype in (torch.float32, torch.float64)
        and h * w * 4 * (len(factors) + 1) <= _ZOOM_MATRIX_MAX_NNZ
    )
    if not use_matrix:
        return zoom_blur_resampled(images, factors)
    m = zoom_stack_matrix(h, w, factors, images.dtype)
    planes = images.reshape(b * c, h * w).t().contiguous()  # (H·W, B·C): each row one pixel of every plane
    out = torch.mm(m, planes)
    return out.clamp_(0.0, 1.0).t().reshape(b, c, h, w).contiguous()


#: above this many non-zeros (4 per pixel and factor, 8 bytes each) the zoom matrix is not built
_ZOOM_MATRIX_MAX_NNZ = 16_000_000


def zoom_blur_resampled(images: torch.Tensor, factors) -> torch.Tensor:
    """:func:`zoom_blur` as the mean of the image and one :func:`clipped_zoom` per factor in
    ``factors`` (a factor of 1 is the image itself). Differentiable, any device."""
    acc = images
    for z in factors:
        acc = acc + (images if z == 1.0 else clipped_zoom(images, float(z)))
    return (acc / (len(factors) + 1)).clamp(0.0, 1.0)


def _zoom_axis_taps(
    n: int, zoom: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one axis of length ``n``, :func:`clipped_zoom`'s two source indices per output
    position and the weight of the second, ``(n,)`` each: the central ``ceil(n/zoom)`` samples
    resized to ``round(·×zoom)`` with corner-aligned linear interpolation (coordinates in
    ``dtype``, as ``F.interpolate`` computes them), the first ``n`` kept, a short output
    edge-replicated."""
    crop = int(math.ceil(n / zoom))
    start = (n - crop) // 2
    size = int(round(crop * zoom))
    dst = torch.arange(n).clamp(max=size - 1).to(dtype)  # past the end: the edge (replicated)
    scale = (crop - 1) / (size - 1) if size > 1 else 0.0
    src = dst * torch.tensor(scale, dtype=dtype)
    i0 = src.floor().long().clamp(max=crop - 1)
    i1 = (i0 + 1).clamp(max=crop - 1)
    return i0 + start, i1 + start, (src - i0).double()


@functools.lru_cache(maxsize=6)
def zoom_stack_matrix(
    h: int, w: int, factors: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The zoom stack of :func:`zoom_blur` as a sparse CSR matrix ``(H·W, H·W)`` on the CPU:
    row ``p`` holds the bilinear weights, over the source pixels, of output pixel ``p``
    averaged over the identity and each factor (duplicates summed; ≤ 4 per factor)."""
    pix = torch.arange(h * w)
    yy, xx = pix // w, pix % w
    rows, cols, vals = [pix], [pix], [torch.ones(h * w, dtype=torch.float64)]
    for z in factors:
        if z == 1.0:
            rows.append(pix)
            cols.append(pix)
            vals.append(torch.ones(h * w, dtype=torch.float64))
            continue
        r0, r1, a = _zoom_axis_taps(h, z, dtype)
        c0, c1, bw = _zoom_axis_taps(w, z, dtype)
        for ri, wr in ((r0, 1 - a), (r1, a)):
            for ci, wc in ((c0, 1 - bw), (c1, bw)):
                rows.append(pix)
                cols.append(ri[yy] * w + ci[xx])
                vals.append(wr[yy] * wc[xx])
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore")
        coo = torch.sparse_coo_tensor(
            torch.stack([torch.cat(rows), torch.cat(cols)]),
            torch.cat(vals) / (len(factors) + 1),
            (h * w, h * w),
        ).coalesce()
        return coo.to_sparse_csr().to(dtype)


@register(
    "imagenet_c/gaussian_blur",
    params=[Param("sigma_px", 3.0, "px", 0.0, 50.0, "σ of the Gaussian kernel in pixels", low_open=True)],
    severities={
        1: {"sigma_px": 1.0},
        2: {"sigma_px": 2.0},
        3: {"sigma_px": 3.0},
        4: {"sigma_px": 4.0},
        5: {"sigma_px": 6.0},
    },
    family=_FAMILY,
    axis="sigma_px",
    random=False,
    differentiable=True,
)
def gaussian_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, sigma_px: float = 3.0
) -> torch.Tensor:
    """Isotropic Gaussian blur (radius ⌈4σ⌉, edge-replicated borders as skimage's default).

    On the CPU without autograd the same taps run through ``cv2.sepFilter2D`` per plane
    (same values up to float rounding); elsewhere the torch separable filter.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    sigma = float(sigma_px)
    if sigma > 0 and _cpu.fast_path_ok(images, needs_cv2=True):
        k = gaussian_kernel1d(
            sigma, max(1, math.ceil(4.0 * sigma)), dtype=images.dtype
        )  # the torch path's taps
        return _cpu.sep_filter_planes(images, k, k, border="replicate").clamp_(0.0, 1.0)
    return fast_gaussian_blur2d(images, sigma, border="replicate").clamp(0.0, 1.0)
