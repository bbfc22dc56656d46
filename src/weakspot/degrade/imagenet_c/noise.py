"""ImageNet-C noise corruptions: Gaussian, shot (Poisson), impulse (salt & pepper), speckle.

All act per pixel and channel on [0, 1] intensities with the reference's constants
(Hendrycks & Dietterich 2019, ``imagecorruptions`` 1.1.2). See ``docs/imagenet_c.md``
for the equivalent camera parameters (electrons per pixel, read noise).
"""

from __future__ import annotations

import functools
import math

import torch

from weakspot.degrade.imagenet_c._common import straight_through
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, rand, randn

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "poisson_8bit"]

_FAMILY = "imagenet_c"


@register(
    "imagenet_c/gaussian_noise",
    params=[
        Param(
            "sigma", 0.18, "", 0.0, 1.0, "standard deviation of additive N(0, σ²) noise on [0, 1] intensities"
        )
    ],
    severities={
        1: {"sigma": 0.08},
        2: {"sigma": 0.12},
        3: {"sigma": 0.18},
        4: {"sigma": 0.26},
        5: {"sigma": 0.38},
    },
    family=_FAMILY,
    axis="sigma",
    differentiable=True,
)
def gaussian_noise(
    images: torch.Tensor, *, generator: GeneratorLike = None, sigma: float = 0.18
) -> torch.Tensor:
    """Additive white Gaussian noise ``x + σ·N(0, 1)`` per pixel and channel, clipped to [0, 1].

    ``sigma`` is on the [0, 1] scale (0.08 ⇒ 20/255). Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """
    noise = randn(images.shape, generator, images.device, images.dtype, stream="imagenet_c.gaussian_noise")
    return (images + noise * float(sigma)).clamp(0.0, 1.0)


_BINS = 1024


@functools.lru_cache(maxsize=16)
def _poisson_tables(photons: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Inverse-CDF tables for the 256 8-bit rates ``λ_l = photons · l / 255``.

    For bin ``j`` of the uniform variate (``u ∈ [j, j+1)/_BINS``) and level ``l``:
    ``start[l·_BINS + j]`` = the smallest ``k`` with ``cdf_l(k) > j/_BINS`` and
    ``stop[...] = cdf_l(start)`` (both float32, 1-D: the fastest gathers): a ``u`` below
    ``stop`` has the answer ``start``.
    Also the full CDFs ``(256·K,)`` (float32) for the rare values that need more steps, and K.
    """
    lam = torch.arange(256, dtype=torch.float64) / 255.0 * photons
    kmax = int(photons + 12 * math.sqrt(photons) + 20)
    k = torch.arange(kmax, dtype=torch.float64)
    logp = k * torch.log(lam.clamp_min(1e-300)).unsqueeze(1) - lam.unsqueeze(1) - torch.lgamma(k + 1)
    logp[0, 1:] = -math.inf  # λ = 0: always 0
    logp[0, 0] = 0.0
    cdf = torch.exp(logp).cumsum(1).clamp(max=1.0).float()
    cdf[:, -1] = 1.0  # float32 CDF: tail probabilities below ~1e-7 are folded into the last count
    edges = (torch.arange(_BINS, dtype=torch.float32) / _BINS).expand(256, -1).contiguous()
    start = torch.searchsorted(cdf, edges, right=True).clamp_max(kmax - 1)
    stop = cdf.gather(1, start)
    return start.reshape(-1).float(), stop.reshape(-1).contiguous(), cdf.reshape(-1).contiguous(), kmax


@functools.lru_cache(maxsize=16)
def _stacked_cdf(photons: float) -> torch.Tensor:
    """The 256 CDFs of :func:`_poisson_tables` as one increasing float64 array ``cdf_l(k) + l``."""
    _, _, cdf, kmax = _poisson_tables(photons)
    return (cdf.double().view(256, kmax) + torch.arange(256, dtype=torch.float64).view(256, 1)).view(-1)


def poisson_8bit(images: torch.Tensor, photons: float, generator: GeneratorLike = None) -> torch.Tensor:
    """Poisson counts with mean ``photons · round(255 x)/255`` (the rate on the 8-bit grid).

    Inverse-CDF sampling with one float32 uniform per value: a table lookup gives the answer
    for ~97% of values, and one binary search (``torch.searchsorted`` over the 256 CDFs stacked
    into one increasing array) answers the remaining few (those whose bin contains a CDF step):
    no loop, so the op count does not depend on the batch. Exact up to float32 resolution of
    the CDF; several times faster than ``torch.poisson`` on the CPU. Returns counts as float,
    shape of ``images``.
    """
    start, stop, _cdf, kmax = _poisson_tables(float(photons))
    dev = images.device
    start, stop, stacked = start.to(dev), stop.to(dev), _stacked_cdf(float(photons)).to(dev)
    u = rand(images.shape, generator, dev, torch.float32, stream="poisson_8bit").reshape(-1)
    # cell = level·_BINS + ⌊u·_BINS⌋ (u < 1, so the truncation is the floor and stays below _BINS)
    cell = images.detach().reshape(-1).mul(255).round_().clamp_(0, 255).int().mul_(_BINS)
    cell.add_(u.mul(_BINS).int())
    k = start.index_select(0, cell)
    cand = (u >= stop.index_select(0, cell)).nonzero().flatten()
    # the rest: the smallest k with cdf_l(k) > u, by one binary search of the rows stacked
    # into one increasing float64 array (row l shifted by l; u + l is exact in float64)
    level = cell.index_select(0, cand).div_(_BINS, rounding_mode="floor")
    found = torch.searchsorted(stacked, u.index_select(0, cand).double() + level, right=True)
    k.index_copy_(0, cand, (found - level * kmax).clamp_(max=kmax - 1).float())
    return k.reshape(images.shape).to(images.dtype)


@register(
    "imagenet_c/shot_noise",
    params=[
        Param(
            "photons",
            12.0,
            "e⁻",
            0.0,
            1e6,
            "expected photo-electrons at full scale (x = 1); counts ~ Poisson(photons·x)/photons",
            low_open=True,
        )
    ],
    severities={
        1: {"photons": 60.0},
        2: {"photons": 25.0},
        3: {"photons": 12.0},
        4: {"photons": 5.0},
        5: {"photons": 3.0},
    },
    family=_FAMILY,
    axis="photons",
    differentiable=True,
)
def shot_noise(
    images: torch.Tensor, *, generator: GeneratorLike = None, photons: float = 12.0
) -> torch.Tensor:
    """Photon shot noise: ``Poisson(photons · x) / photons``, clipped to [0, 1].

    ``photons`` is the mean electron count of a white pixel (full well of the simulated
    sensor). Exact Poisson sampling for 8-bit-quantised rates; the gradient passes straight
    through (∂E[out]/∂x = 1). ``(B, C, H, W) -> (B, C, H, W)``.
    """
    counts = poisson_8bit(images, photons, generator)
    return straight_through(images, counts.div_(float(photons)).clamp_(0.0, 1.0))


@register(
    "imagenet_c/impulse_noise",
    params=[Param("amount", 0.09, "", 0.0, 1.0, "fraction of pixel values replaced by 0 or 1 (half each)")],
    severities={
        1: {"amount": 0.03},
        2: {"amount": 0.06},
        3: {"amount": 0.09},
        4: {"amount": 0.17},
        5: {"amount": 0.27},
    },
    family=_FAMILY,
    axis="amount",
    differentiable=True,
)
def impulse_noise(
    images: torch.Tensor, *, generator: GeneratorLike = None, amount: float = 0.09
) -> torch.Tensor:
    """Salt-and-pepper noise: each value (per channel) is replaced with probability ``amount``,
    by 0 or 1 with equal odds (skimage ``random_noise(mode='s&p')``). Differentiable in the
    values that survive. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    u = rand(images.shape, generator, images.device, images.dtype, stream="imagenet_c.impulse_noise")
    a = float(amount)
    hit = u < a
    salt = (u < a / 2).to(images.dtype)
    return torch.where(hit, salt, images)


@register(
    "imagenet_c/speckle_noise",
    params=[
        Param("sigma", 0.35, "", 0.0, 5.0, "standard deviation of the multiplicative noise: x + x·σ·N(0, 1)")
    ],
    severities={
        1: {"sigma": 0.15},
        2: {"sigma": 0.2},
        3: {"sigma": 0.35},
        4: {"sigma": 0.45},
        5: {"sigma": 0.6},
    },
    family=_FAMILY,
    axis="sigma",
    differentiable=True,
)
def speckle_noise(
    images: torch.Tensor, *, generator: GeneratorLike = None, sigma: float = 0.35
) -> torch.Tensor:
    """Multiplicative (speckle) noise ``x · (1 + σ·N(0, 1))``, clipped to [0, 1].

    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    noise = randn(images.shape, generator, images.device, images.dtype, stream="imagenet_c.speckle_noise")
    return (images + images * noise * float(sigma)).clamp(0.0, 1.0)
