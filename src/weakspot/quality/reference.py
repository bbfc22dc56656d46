"""Full-reference quality: every degraded image has its clean original.

* :func:`psnr_db` – peak signal-to-noise ratio in dB, ``10·log10(L² / MSE)`` over all
  pixels and channels, ``L = data_range`` (1 for images in [0, 1]); higher = better,
  ``inf`` for identical images.
* :func:`ssim` – structural similarity (Wang et al. 2004) with the standard Gaussian
  window σ = 1.5 px truncated at 3.5 σ (11 × 11), ``K1 = 0.01``, ``K2 = 0.03``,
  population (co)variances, computed **per channel and averaged over channels** (RGB
  is not converted to luminance), mean over the window positions that fit entirely
  inside the image (no padding). This is exactly scikit-image's
  ``structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``; higher = better, 1 for identical images.
* :func:`lpips_distance` – LPIPS (AlexNet) only from weights already on disk; without
  them the result is NaN and :func:`lpips_status` says why (nothing downloads).

All take ``(B, C, H, W)`` float tensors in [0, 1] of equal shape and return ``(B,)``.

>>> import torch
>>> x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
>>> bool(torch.isinf(psnr_db(x, x)).all()), torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
(True, True)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from weakspot.errors import InvalidImageError, InvalidParameterError

__all__ = [
    "psnr_db",
    "ssim",
    "ssim_window",
    "lpips_distance",
    "lpips_status",
    "SSIM_SIGMA_PX",
    "SSIM_K1",
    "SSIM_K2",
    "ALEXNET_WEIGHTS",
]

SSIM_SIGMA_PX = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_TRUNCATE = 3.5
#: torchvision's AlexNet ImageNet weights file, looked up in ``$TORCH_HOME/hub/checkpoints``
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


def _check_pair(degraded: torch.Tensor, clean: torch.Tensor) -> None:
    for name, t in (("degraded", degraded), ("clean", clean)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise InvalidImageError(
                f"{name} must be a (B, C, H, W) tensor, got "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
            )
    if degraded.shape != clean.shape:
        raise InvalidImageError(
            f"degraded {tuple(degraded.shape)} and clean {tuple(clean.shape)} must have the same "
            "shape; resize one to the other first"
        )


def psnr_db(degraded: torch.Tensor, clean: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image, ``(B,)``; ``inf`` where the images are identical."""
    _check_pair(degraded, clean)
    if not data_range > 0:
        raise InvalidParameterError("data_range", data_range, "a positive number (1 for images in [0, 1])")
    dt = torch.promote_types(degraded.dtype, torch.float32)
    mse = (degraded.to(dt) - clean.to(dt)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim_window(
    sigma_px: float = SSIM_SIGMA_PX, truncate: float = SSIM_TRUNCATE, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The normalised 1-D Gaussian of SSIM: radius ``int(truncate·σ + 0.5)`` (11 taps at σ = 1.5)."""
    r = int(truncate * sigma_px + 0.5)
    x = torch.arange(-r, r + 1, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return g / g.sum()


def ssim(
    degraded: torch.Tensor,
    clean: torch.Tensor,
    data_range: float = 1.0,
    sigma_px: float = SSIM_SIGMA_PX,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> torch.Tensor:
    """Mean SSIM per image, ``(B,)``: per channel, averaged over channels (see the module doc)."""
    _check_pair(degraded, clean)
    if not data_range > 0:
        raise InvalidParameterError("data_range", data_range, "a positive number (1 for images in [0, 1])")
    g = ssim_window(sigma_px, dtype=torch.promote_types(degraded.dtype, torch.float32)).to(degraded.device)
    k = g.numel()
    b, c, h, w = degraded.shape
    if h < k or w < k:
        raise InvalidImageError(
            f"SSIM needs images of at least {k}×{k} px (its Gaussian window), got {h}×{w}"
        )
    x = degraded.to(g.dtype).reshape(b * c, 1, h, w)
    y = clean.to(g.dtype).reshape(b * c, 1, h, w)

    def blur(t):  # separable valid-mode Gaussian: only positions where the window fits
        t = F.conv2d(t, g.view(1, 1, 1, k))
        return F.conv2d(t, g.view(1, 1, k, 1))

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(b, c, -1).mean(-1).mean(-1)


# ------------------------------------------------------------------ LPIPS (weights on disk only)
def _alexnet_path(weights: str | Path | None) -> Path | None:
    if weights is not None:
        return Path(weights)
    hub = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch") / "hub" / "checkpoints"
    p = hub / ALEXNET_WEIGHTS
    return p if p.is_file() else None


def lpips_status(weights: str | Path | None = None) -> tuple[bool, str]:
    """``(available, one-line note)``. LPIPS needs the ``lpips`` package (its linear heads)
    and torchvision's AlexNet ImageNet weights on disk: ``weights`` or
    ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``. Nothing is downloaded."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return (
            False,
            "LPIPS not computed: the 'lpips' package is not installed (pip install lpips; weights stay local)",
        )
    p = _alexnet_path(weights)
    if p is None:
        return False, (
            f"LPIPS not computed: no AlexNet weights on disk (put {ALEXNET_WEIGHTS} under "
            "$TORCH_HOME/hub/checkpoints or pass --lpips-weights FILE)"
        )
    if not p.is_file():
        return False, f"LPIPS not computed: {p} does not exist"
    return True, f"LPIPS (AlexNet, v0.1) with backbone weights {p}"


_LPIPS_CACHE: dict[str, torch.nn.Module] = {}


def lpips_distance(
    degraded: torch.Tensor, clean: torch.Tensor, weights: str | Path | None = None
) -> torch.Tensor:
    """LPIPS distance per image ``(B,)`` (higher = worse); NaN when :func:`lpips_status` is False."""
    _check_pair(degraded, clean)
    ok, _ = lpips_status(weights)
    if not ok:
        return torch.full((degraded.shape[0],), math.nan, dtype=torch.float64)
    import lpips

    p = str(_alexnet_path(weights))
    net = _LPIPS_CACHE.get(p)
    if net is None:
        net = lpips.LPIPS(
            net="alex", pretrained=True, pnet_rand=True, verbose=False
        )  # heads from the package
        sd = torch.load(p, map_location="cpu", weights_only=True)
        feats = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
        slices = [net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5]
        for sl in slices:
            sl.load_state_dict(
                {
                    k.split(".", 1)[0] + "." + k.split(".", 1)[1]: v
                    for k, v in feats.items()
                    if k.split(".", 1)[0] in dict(sl.named_children())
                },
                strict=True,
            )
        net.eval()
        _LPIPS_CACHE[p] = net
    x = degraded.float() * 2 - 1
    y = clean.float() * 2 - 1
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    with torch.inference_mode():
        return net(x, y).flatten().double()
