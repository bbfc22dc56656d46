"""Helpers shared by the ImageNet-C corruptions: per-image draws, zoom, motion kernels.

Everything works on ``(B, C, H, W)`` float tensors and is vectorised over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weakspot._fft import spectrum_product
from weakspot._grad import straight_through  # noqa: F401  (re-exported: value y, gradient of x)
from weakspot.degrade.filters import next_fast_len
from weakspot.random import GeneratorLike, rand

#: ITU-R BT.601 luma weights, as OpenCV's ``COLOR_RGB2GRAY`` uses them.
LUMA_601 = (0.299, 0.587, 0.114)


def gray(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(B, 1, H, W)`` of RGB images (a 1-channel input is returned as is)."""
    if images.shape[1] == 1:
        return images
    w = images.new_tensor(LUMA_601).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def per_image_uniform(
    low: float, high: float, batch: int, generator: GeneratorLike, device, stream: str | None = None
) -> torch.Tensor:
    """One uniform draw in ``[low, high)`` per image, shape ``(B,)`` (float64), from ``stream``."""
    return low + (high - low) * rand((batch, 1), generator, device, torch.float64, stream=stream)[:, 0]


def clipped_zoom(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom into the centre by ``zoom`` (≥ 1) and keep the top-left ``H×W``, bilinear.

    Same geometry as the reference: crop the central ``ceil(H/zoom)`` rows/cols, resize
    by ``zoom`` with corner-aligned linear interpolation (``scipy.ndimage.zoom``,
    ``order=1``, output ``round(side*zoom)``), keep ``[:H, :W]`` (edge-replicated if short).
    """
    _, _, h, w = images.shape
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = images[..., top : top + ch, left : left + cw]
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    out = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)[..., :h, :w]
    if out.shape[-2] < h or out.shape[-1] < w:
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]), mode="replicate")
    return out


def motion_kernel(
    radius_px: int, sigma_px: float, angle_deg: torch.Tensor, height: int, width: int, dtype=torch.float32
) -> torch.Tensor:
    """Per-image correlation kernels ``(B, K, K)`` of the reference's one-sided motion blur.

    ``2*radius_px + 1`` taps with half-Gaussian weights ``exp(-i²/2σ²)`` (normalised over
    all taps), tap ``i`` sampling the image ``i`` pixels back along ``angle_deg`` (rounded to
    the pixel grid as the reference does). Taps that would leave an ``height×width`` image are
    dropped, as the reference stops there. ``K = 4*radius_px + 1``.
    """
    n = 2 * int(radius_px) + 1
    i = torch.arange(n, dtype=torch.float64)
    wts = torch.exp(-(i**2) / (2 * float(sigma_px) ** 2))
    wts = wts / wts.sum()
    a = torch.deg2rad(angle_deg.to(torch.float64).cpu()).reshape(-1, 1)
    qy = torch.ceil(i * torch.sin(a) - 0.5).long()  # (B, n) offsets of the sampled pixel
    qx = torch.ceil(i * torch.cos(a) - 0.5).long()
    # the reference stops at the first tap that leaves the image
    inside = ((qy.abs() < height) & (qx.abs() < width)).long().cumprod(1).to(torch.float64)
    r = n - 1
    k = 2 * r + 1
    flat = torch.zeros(a.shape[0], k * k, dtype=torch.float64)
    flat.scatter_add_(1, (qy + r) * k + (qx + r), wts.expand_as(inside) * inside)
    return flat.reshape(-1, k, k).to(dtype)


def fft_correlate(
    images: torch.Tensor, kernels: torch.Tensor, support: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """``out(p) = Σ_q k(q)·x(p + q)`` with per-image kernels ``(B, K, K)`` centred at ``K//2``.

    Only the batch's bounding box of non-zero taps is used: the image is edge-replicated by
    exactly the reach of the kernel on each side and transformed once at a fast FFT length,
    so a one-sided motion trail costs about half of a centred ``K×K`` FFT convolution.
    ``support`` = ``(y0, y1, x0, x1)`` (tap offsets, inclusive) fixes that box instead (e.g.
    from the range the kernels were drawn from), so that an image's result does not depend
    on the other kernels of the batch (the FFT size would).
    """
    _, _, h, w = images.shape
    r = kernels.shape[-1] // 2
    if support is None:
        nz = kernels.abs().sum(0) > 0
        rows = nz.any(1).nonzero().flatten()
        cols = nz.any(0).nonzero().flatten()
        if rows.numel() == 0:
            return torch.zeros_like(images)
        y0, y1 = int(rows[0]) - r, int(rows[-1]) - r
        x0, x1 = int(cols[0]) - r, int(cols[-1]) - r
    else:
        y0, y1, x0, x1 = (int(v) for v in support)
    k = kernels[:, y0 + r : y1 + r + 1, x0 + r : x1 + r + 1].to(images.device, images.dtype)
    top, bottom, left, right = max(0, -y0), max(0, y1), max(0, -x0), max(0, x1)
    n, m = next_fast_len(h + top + bottom), next_fast_len(w + left + right)
    # one replicate pad straight to the FFT size: the kept outputs read only the first
    # h+top+bottom rows and w+left+right columns, so what fills the rest never matters
    xp = F.pad(
        images, (left, right + m - (w + left + right), top, bottom + n - (h + top + bottom)), mode="replicate"
    )
    kp = F.pad(k, (0, m - k.shape[-1], 0, n - k.shape[-2]))
    kp = torch.roll(kp, shifts=(y0, x0), dims=(-2, -1))  # tap q at index q mod (n, m)
    spec = torch.fft.rfft2(xp)
    kspec = torch.conj(torch.fft.rfft2(kp)).unsqueeze(1)
    out = torch.fft.irfft2(spectrum_product(spec, kspec), s=(n, m))
    return out[..., top : top + h, left : left + w]


def motion_support(
    radius_px: int, angle_min_deg: float, angle_max_deg: float, height: int, width: int
) -> tuple[int, int, int, int]:
    """Box ``(y0, y1, x0, x1)`` of the taps of every :func:`motion_kernel` with an angle in
    ``[angle_min_deg, angle_max_deg]``.

    A tap's offsets ``ceil(i·sin a − ½)``, ``ceil(i·cos a − ½)`` are monotone in ``sin a`` and
    ``cos a``, whose extremes over an interval lie at its ends or at the multiples of 90°
    inside it: the kernels at those angles span the box.
    """
    lo, hi = sorted((float(angle_min_deg), float(angle_max_deg)))
    angles = [lo, hi] + [90.0 * q for q in range(math.ceil(lo / 90.0), math.floor(hi / 90.0) + 1)]
    k = motion_kernel(radius_px, 1.0, torch.tensor(angles, dtype=torch.float64), height, width, torch.float64)
    r = k.shape[-1] // 2
    nz = k.abs().sum(0) > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    return int(rows[0]) - r, int(rows[-1]) - r, int(cols[0]) - r, int(cols[-1]) - r


def motion_blur_images(
    images: torch.Tensor,
    radius_px: int,
    sigma_px: float,
    angle_deg: torch.Tensor,
    angle_range_deg: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Apply :func:`motion_kernel` per image (FFT, edge-replicated borders).

    ``angle_range_deg``: the interval the angles were drawn from; the FFT then covers the
    taps of every angle in it (:func:`motion_support`), so an image's result is the same
    whatever else is in the batch.
    """
    _, _, h, w = images.shape
    k = motion_kernel(radius_px, sigma_px, angle_deg, h, w, images.dtype)
    support = None if angle_range_deg is None else motion_support(radius_px, *angle_range_deg, h, w)
    return fft_correlate(images, k, support)
