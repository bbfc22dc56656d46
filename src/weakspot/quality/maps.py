"""Patch quality maps: NIQE and BRISQUE on a grid of cells, one map per image.

The image is cut from its top-left corner into ``rows × cols`` equal cells of an
even side (at most ``2·rows − 1`` px at the bottom and ``2·cols − 1`` px at the
right are left out; :func:`grid_box` says exactly which). MSCN coefficients are
computed on the whole image at each scale (no artificial borders at cell edges)
and each cell's statistics come from its own coefficients.

* BRISQUE map: the LIVE SVR applied to each cell's 36 features.
* NIQE map: the Mahalanobis distance ``sqrt((f − μ₀)ᵀ (Σ₀ + λI)⁻¹ (f − μ₀))`` of
  each cell's feature vector to the pristine model. One patch has no covariance of
  its own, so the image term of the whole-image formula drops out; the ridge
  ``λ = 1e-3`` is needed because Σ₀ has four zero and several ~1e-7 eigenvalues
  that would amplify single-patch noise a millionfold (with it, sharp cells of
  real photos score about 5–8 and blurred ones clearly more; the tests check it).

Both maps are "higher = worse", like the whole-image scores. The measures were
calibrated on whole images: small cells (< ~48 px) give noisy, content-dependent
values, so the default grid uses cells of about 48 px (4×4 at 224²). Blur shows up
reliably at any cell size; moderate noise often does not (a property of BRISQUE
and NIQE, measured in the tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakspot._checks import check_images
from weakspot.errors import InvalidParameterError
from weakspot.quality.brisque import BrisqueModel, cell_features_brisque, load_brisque_model
from weakspot.quality.niqe import _mahalanobis, cell_features_niqe, niqe_params
from weakspot.quality.nss import luminance

__all__ = ["quality_map", "brisque_map", "niqe_map", "grid_box", "grid_pool", "MEASURES", "MIN_CELL_PX"]

#: Quality measures that have a map.
MEASURES = ("brisque", "niqe")
#: Smallest cell side (px): the half-resolution statistics need about 8×8 samples.
MIN_CELL_PX = 16


#: Cell side (px) of the default grid.
DEFAULT_CELL_PX = 48


def _grid(grid, height: int | None = None, width: int | None = None) -> tuple[int, int]:
    if grid is None:
        return max(1, (height or 0) // DEFAULT_CELL_PX), max(1, (width or 0) // DEFAULT_CELL_PX)
    if isinstance(grid, int):
        grid = (grid, grid)
    try:
        rows, cols = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise InvalidParameterError("grid", grid, "an int or (rows, cols)") from None
    if rows < 1 or cols < 1:
        raise InvalidParameterError("grid", grid, "positive (rows, cols)")
    return rows, cols


def grid_box(height: int, width: int, grid=None) -> tuple[int, int]:
    """``(cell_h, cell_w)`` in px of the cells of a ``height × width`` image; the map
    covers rows ``[0, rows·cell_h)`` and columns ``[0, cols·cell_w)``."""
    rows, cols = _grid(grid, height, width)
    ch, cw = 2 * (height // (2 * rows)), 2 * (width // (2 * cols))
    if min(ch, cw) < MIN_CELL_PX:
        raise InvalidParameterError(
            "grid",
            (rows, cols),
            f"cells of at least {MIN_CELL_PX} px",
            f"a {height}×{width} image allows at most {height // MIN_CELL_PX}×{width // MIN_CELL_PX} cells",
        )
    return ch, cw


def grid_pool(maps: torch.Tensor, grid=None) -> torch.Tensor:
    """Average ``(B, H, W)`` pixel maps (e.g. saliency) over the same cells as
    :func:`quality_map` → ``(B, rows, cols)``, so the two can be compared cell by cell."""
    rows, cols = _grid(grid, *maps.shape[-2:])
    ch, cw = grid_box(maps.shape[-2], maps.shape[-1], (rows, cols))
    x = maps[..., : rows * ch, : cols * cw]
    return F.avg_pool2d(x.unsqueeze(1).float(), (ch, cw)).squeeze(1)


def brisque_map(images: torch.Tensor, grid=None, model: BrisqueModel | None = None) -> torch.Tensor:
    """BRISQUE of every cell: ``(B, C, H, W)`` in [0, 1] → ``(B, rows, cols)`` float32."""
    check_images(images)
    h, w = images.shape[-2], images.shape[-1]
    rows, cols = _grid(grid, h, w)
    grid_box(h, w, (rows, cols))
    feats = cell_features_brisque(luminance(images), rows, cols)
    model = model or load_brisque_model()
    return model.decision(feats).to(torch.float32)


def niqe_map(images: torch.Tensor, grid=None, ridge: float = 1e-3) -> torch.Tensor:
    """NIQE distance of every cell: ``(B, C, H, W)`` in [0, 1] → ``(B, rows, cols)`` float32.

    ``ridge`` is added to the diagonal of the pristine covariance (see the module doc).
    """
    check_images(images)
    h, w = images.shape[-2], images.shape[-1]
    rows, cols = _grid(grid, h, w)
    grid_box(h, w, (rows, cols))
    b = images.shape[0]
    feats = cell_features_niqe(luminance(images), rows, cols).reshape(b, rows * cols, 36)
    mu0, cov0 = niqe_params(device=feats.device)
    cov = cov0 + ridge * torch.eye(36, dtype=cov0.dtype, device=cov0.device)
    dist = _mahalanobis(feats - mu0, cov)
    return dist.reshape(b, rows, cols).to(torch.float32)


def quality_map(images: torch.Tensor, measure: str = "brisque", grid=None) -> torch.Tensor:
    """A ``(B, rows, cols)`` map of ``measure`` (``"brisque"`` or ``"niqe"``), higher = worse.

    ``grid`` is ``(rows, cols)``, an int for a square grid, or ``None`` for cells of
    about 48 px. :func:`grid_box` gives the cell size, :func:`grid_pool` averages a
    pixel map (saliency) over the same cells.

    Example:
        >>> import torch, weakspot.quality as q
        >>> q.quality_map(torch.rand(1, 3, 224, 224), "brisque", grid=(7, 7)).shape
        torch.Size([1, 7, 7])
    """
    if measure == "brisque":
        return brisque_map(images, grid)
    if measure == "niqe":
        return niqe_map(images, grid)
    hint = ""
    if measure == "paq2piq":
        hint = "PaQ-2-PiQ needs a weights file: use weakspot.quality.load_paq2piq(path).predict(images)"
    raise InvalidParameterError("measure", measure, " or ".join(MEASURES), hint)
