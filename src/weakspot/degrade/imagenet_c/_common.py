"""Helpers shared by the ImageNet-C corruptions: per-image draws, zoom, motion kernels.

Everything works on ``(B, C, H, W)`` float tensors and is vectorised over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weakspot.random import GeneratorLike, rand

#: ITU-R BT.601 luma weights, as OpenCV's ``COLOR_RGB2GRAY`` uses them.
LUMA_601 = (0.299, 0.587, 0.114)


def gray(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(B, 1, H, W)`` of RGB images (a 1-channel input is returned as is)."""
    if images.shape[1] == 1:
        return images
    w = images.new_tensor(LUMA_601).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def per_image_uniform(low: float, high: float, batch: int, generator: GeneratorLike, device) -> torch.Tensor:
    """One uniform draw in ``[low, high)`` per image, shape ``(B,)``."""
    return low + (high - low) * rand((batch, 1), generator, device, torch.float64)[:, 0]


def straight_through(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Value ``y`` with the gradient of ``x`` (identity pass-through for sampling steps)."""
    return x + (y - x).detach()


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


def motion_blur_images(
    images: torch.Tensor, radius_px: int, sigma_px: float, angle_deg: torch.Tensor
) -> torch.Tensor:
    """Apply :func:`motion_kernel` per image (FFT, edge-replicated borders)."""
    from weakspot.degrade.filters import fft_filter2d

    _, _, h, w = images.shape
    k = motion_kernel(radius_px, sigma_px, angle_deg, h, w, images.dtype).to(images.device)
    return fft_filter2d(images, k, border="replicate")
