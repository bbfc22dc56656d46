"""No-reference image quality: NIQE and BRISQUE as batched torch operations,
patch quality maps, PaQ-2-PiQ from a user's weights, and the relations between
quality, accuracy and saliency (:mod:`weakspot.quality.relations`).

Quick use::

    import weakspot.quality as q

    q.niqe(images)  # (B,) higher = worse; images (B, C, H, W) in [0, 1]
    q.brisque(images)  # (B,) higher = worse (LIVE SVR, about 0–100)
    q.quality_map(images, "brisque", grid=(7, 7))  # (B, 7, 7) per-cell scores
"""

from weakspot.quality.brisque import BrisqueModel, brisque, brisque_features, load_brisque_model
from weakspot.quality.maps import MEASURES, brisque_map, grid_box, grid_pool, niqe_map, quality_map
from weakspot.quality.niqe import niqe, niqe_features, niqe_params
from weakspot.quality.paq2piq import PaQ2PiQ, PaQ2PiQResult, load_paq2piq

__all__ = [
    "niqe",
    "brisque",
    "niqe_features",
    "brisque_features",
    "niqe_params",
    "BrisqueModel",
    "load_brisque_model",
    "quality_map",
    "brisque_map",
    "niqe_map",
    "grid_box",
    "grid_pool",
    "MEASURES",
    "PaQ2PiQ",
    "PaQ2PiQResult",
    "load_paq2piq",
]
