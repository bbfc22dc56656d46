"""Natural-scene statistics shared by NIQE and BRISQUE, as batched torch operations.

The building blocks of both measures (Mittal et al. 2012, 2013):

* :func:`luminance` — BT.601 luma of ``(B, C, H, W)`` images in [0, 1], on the
  0…255 scale the published parameters were fitted on;
* :func:`mscn` — mean-subtracted contrast-normalised coefficients
  ``(I − μ) / (σ + C)`` with a 7-tap Gaussian window (σ = 7/6 px) and zero padding
  (MATLAB ``filter2(…, 'same')``);
* :func:`paired_products` — products of each coefficient with its horizontal,
  vertical and two diagonal neighbours (circular shift within the last two dims);
* :func:`ggd_fit`, :func:`aggd_fit` — moment-matching fits of a generalised
  Gaussian and an asymmetric generalised Gaussian, batched over any leading dims.
  The shape parameter is the nearest entry of the published 0.2:0.001:10 table.

All functions keep the leading batch dimensions, so one call fits thousands of
patches. The fitted statistics are float64; pixel-wise work runs in float64 on
the CPU and float32 on accelerators (the MSCN moments are computed on the
mean-removed image, see :func:`mscn`, so float32 stays accurate). The shape lookup
is not differentiable; everything else is.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "luminance",
    "gaussian_window",
    "mscn",
    "paired_products",
    "ggd_fit",
    "aggd_fit",
    "downsample_half",
]

_EPS = 1e-12


def luminance(images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Luma ``(B, H, W)`` on the 0…255 scale from ``(B, C, H, W)`` images in [0, 1].

    RGB uses the BT.601 weights of MATLAB's ``rgb2gray`` (0.2989, 0.5870, 0.1140),
    without its rounding to 8 bits; one channel is used as is. ``dtype`` defaults to
    float64 on the CPU (the measures then match the references to the last table step)
    and float32 on accelerators (float64 is slow there; scores move by < 0.5 %).
    """
    if dtype is None:
        dtype = torch.float64 if images.device.type == "cpu" else torch.float32
    x = images.to(dtype)
    if x.shape[1] == 3:
        w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=dtype, device=x.device)
        y = torch.einsum("bchw,c->bhw", x, w)
    else:
        y = x[:, 0]
    return y * 255.0


def gaussian_window(
    radius: int = 3, sigma: float = 7.0 / 6.0, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``(2·radius + 1,)`` (σ in pixels)."""
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * t**2 / sigma**2)
    return w / w.sum()


def _blur(x: torch.Tensor, w: list[float]) -> torch.Tensor:
    """Separable correlation of ``(N, H, W)`` with taps ``w``, zero padding, same size.

    Shift-and-add over the taps: for a 7-tap single-channel filter this is several
    times faster on CPU than ``conv2d`` (im2col) and identical in value.
    """
    r = len(w) // 2
    h, wd = x.shape[-2:]
    p = F.pad(x, (0, 0, r, r))
    y = w[0] * p[..., 0:h, :]
    for i in range(1, len(w)):
        y = y + w[i] * p[..., i : i + h, :]
    p = F.pad(y, (r, r, 0, 0))
    z = w[0] * p[..., 0:wd]
    for i in range(1, len(w)):
        z = z + w[i] * p[..., i : i + wd]
    return z


def mscn(gray: torch.Tensor, c: float = 1.0, radius: int = 3, sigma: float = 7.0 / 6.0) -> torch.Tensor:
    """MSCN coefficients of ``(N, H, W)`` gray images (0…255 scale): ``(I − μ)/(σ + c)``.

    ``μ`` and ``σ² = E[I²] − μ²`` are local Gaussian-weighted moments (window
    ``2·radius+1`` taps, ``sigma`` px) with zero padding outside the image;
    ``c = 1`` on the 0…255 scale, as published.

    The moments are taken of ``J = I − m`` (``m`` = 127.5, mid-grey: a constant, so
    no batch-dependent reduction enters) and corrected exactly for the zero padding,
    so the cancellation in ``E[I²] − μ²`` happens on smaller numbers.
    """
    w = gaussian_window(radius, sigma).tolist()  # python floats: scalar multiplies
    m = 127.5
    j = gray - m
    mu_j = _blur(j, w)
    var = _blur(j * j, w) - mu_j * mu_j
    # zero padding: the window's weight inside the image w1 < 1 within `radius` of a border
    w1 = _blur(torch.ones_like(gray[:1]), w)
    edge = 1 - w1
    var = var + (2 * m * mu_j + m * m * w1) * edge
    mu = mu_j + m * w1
    return (gray - mu) / (torch.sqrt(var.abs()) + c)


def paired_products(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizontal, vertical, main- and anti-diagonal neighbour products of ``(..., h, w)``.

    Neighbours wrap around within the last two dims (MATLAB ``circshift``).
    """
    h = x * torch.roll(x, 1, dims=-1)
    v = x * torch.roll(x, 1, dims=-2)
    d1 = x * torch.roll(x, (1, 1), dims=(-2, -1))
    d2 = x * torch.roll(x, (1, -1), dims=(-2, -1))
    return h, v, d1, d2


@lru_cache(maxsize=8)
def _tables(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.special import gamma

    alphas = np.arange(0.2, 10, 0.001)
    rho = gamma(2.0 / alphas) ** 2 / (gamma(1.0 / alphas) * gamma(3.0 / alphas))  # increasing in alpha
    return (
        torch.tensor(alphas, dtype=dtype, device=device),
        torch.tensor(rho, dtype=dtype, device=device),
    )


def _nearest(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index of the entry of the ascending ``table`` nearest to each of ``values``."""
    v = values.contiguous()
    idx = torch.searchsorted(table, v).clamp(1, table.numel() - 1)
    lo, hi = table[idx - 1], table[idx]
    return torch.where((v - lo).abs() <= (hi - v).abs(), idx - 1, idx)


def _lgamma_ratio(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.lgamma(1.0 / alpha), torch.lgamma(2.0 / alpha), torch.lgamma(3.0 / alpha)


def ggd_fit(x: torch.Tensor, dim: int | tuple[int, ...] = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a zero-mean generalised Gaussian to the samples along ``dim``.

    Returns ``(alpha, sigma_sq)``: the shape (nearest in the 0.2:0.001:10 table to
    ``E[x²]/E[|x|]²``) and the second moment ``E[x²]``.
    """
    alphas, rho_tab = _tables(str(x.device), torch.float64)
    sigma_sq = (x * x).mean(dim).double()
    e = x.abs().mean(dim).double()
    ratio = e * e / (sigma_sq + _EPS)  # 1/rho, compared against the increasing table
    alpha = alphas[_nearest(rho_tab, ratio)]
    return alpha, sigma_sq


def aggd_fit(
    x: torch.Tensor, dim: int | tuple[int, ...] = -1, right_inclusive: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit an asymmetric generalised Gaussian to the samples along ``dim``.

    Returns ``(alpha, mean, beta_left, beta_right)`` where ``beta = std·√(Γ(1/α)/Γ(3/α))``
    per side (left = negative samples, right = non-negative, or strictly positive when
    ``right_inclusive`` is False, as in the BRISQUE release) and
    ``mean = (beta_r − beta_l)·Γ(2/α)/Γ(1/α)``.
    """
    alphas, rho_tab = _tables(str(x.device), torch.float64)
    # zeros add nothing to the sums of squares, only to the right side's count; the
    # statistics are float64 from here (the shape table is steep at large alpha)
    sq_all = (x * x).sum(dim).double()
    sq_left = x.clamp(max=0).square().sum(dim).double()
    n_left = (x < 0).sum(dim)
    n_all = x.numel() // sq_all.numel()
    n_right = (n_all - n_left) if right_inclusive else (x > 0).sum(dim)
    left_sd = torch.sqrt(sq_left / n_left.clamp_min(1))
    right_sd = torch.sqrt((sq_all - sq_left).clamp_min(0) / n_right.clamp_min(1))
    gamma_hat = left_sd / right_sd.clamp_min(_EPS)
    r_hat = x.abs().mean(dim).double() ** 2 / (sq_all / n_all + _EPS)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = alphas[_nearest(rho_tab, r_norm)]
    lg1, lg2, lg3 = _lgamma_ratio(alpha)
    ratio = torch.exp(0.5 * (lg1 - lg3))
    bl, br = ratio * left_sd, ratio * right_sd
    mean = (br - bl) * torch.exp(lg2 - lg1)
    return alpha, mean, bl, br


def downsample_half(gray: torch.Tensor, antialias: bool = True) -> torch.Tensor:
    """Half-size bicubic resampling of ``(N, H, W)``.

    ``antialias=True`` widens the kernel as MATLAB ``imresize(I, 0.5)`` and Pillow do
    (NIQE's reference); ``False`` is plain bicubic interpolation (a = −0.75) at the
    half-pixel centres, as OpenCV ``INTER_CUBIC`` in the BRISQUE C++ release.
    """
    h, w = gray.shape[-2:]
    y = F.interpolate(
        gray.unsqueeze(1), size=(h // 2, w // 2), mode="bicubic", antialias=antialias, align_corners=False
    )
    return y.squeeze(1)
