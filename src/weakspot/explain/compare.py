"""Comparing two maps of the same images: where they agree and how far one moved.

All functions take ``(B, h, w)`` tensors of the same shape (saliency maps, or a
quality map and a saliency map pooled to the same grid) and return ``(B,)``.
"""

from __future__ import annotations

import torch

from weakspot.errors import InvalidParameterError

__all__ = ["centroid", "centroid_shift", "cosine_distance", "topk_overlap", "pearson", "spearman"]


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 3:
        raise InvalidParameterError(
            "maps", (tuple(a.shape), tuple(b.shape)), "two (B, h, w) maps of equal shape"
        )
    return a.double(), b.double()


def centroid(maps: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(B, 2)`` = (row, col) in pixels of the positive part of ``(B, h, w)``
    (NaN for an all-zero map)."""
    m = maps.double().clamp_min(0)
    h, w = m.shape[-2:]
    ys = torch.arange(h, dtype=m.dtype).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=m.dtype).view(1, 1, w) + 0.5
    tot = m.sum((-2, -1))
    tot = torch.where(tot > 0, tot, torch.nan)
    return torch.stack([(m * ys).sum((-2, -1)) / tot, (m * xs).sum((-2, -1)) / tot], -1)


def centroid_shift(a: torch.Tensor, b: torch.Tensor, relative: bool = True) -> torch.Tensor:
    """Distance between the centroids of ``a`` and ``b``: in pixels, or (``relative``) as
    a fraction of the map diagonal."""
    a, b = _pair(a, b)
    d = (centroid(a) - centroid(b)).norm(dim=-1)
    if relative:
        h, w = a.shape[-2:]
        d = d / (h**2 + w**2) ** 0.5
    return d


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 − cos(a, b)`` of the flattened maps (0 = same pattern, any strength)."""
    a, b = _pair(a, b)
    a, b = a.flatten(1), b.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return 1 - cos


def topk_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Share of the top ``fraction`` cells of ``a`` that are also in the top ``fraction`` of ``b``
    (chance level = ``fraction``; ties broken by cell order)."""
    a, b = _pair(a, b)
    if not 0 < fraction <= 1:
        raise InvalidParameterError("fraction", fraction, "(0, 1]")
    n = a[0].numel()
    k = max(1, int(round(fraction * n)))
    ta = torch.zeros(a.shape[0], n, dtype=torch.bool).scatter_(1, a.flatten(1).topk(k, 1).indices, True)
    tb = torch.zeros(b.shape[0], n, dtype=torch.bool).scatter_(1, b.flatten(1).topk(k, 1).indices, True)
    return (ta & tb).sum(1).double() / k


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the cells of ``a`` and ``b`` per image."""
    a, b = _pair(a, b)
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.numpy(), axis=1)).double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation (average ranks for ties) of the cells per image."""
    a, b = _pair(a, b)
    return pearson(_ranks(a.flatten(1).cpu()).unsqueeze(1), _ranks(b.flatten(1).cpu()).unsqueeze(1))
