"""Can a saliency map be trusted? Deletion and insertion curves (Petsiuk et al., RISE 2018).

Deletion removes the most salient pixels first (replacing them with a
``deletion_substrate``: the blurred image by default, black as in RISE on request) and records the target-class
probability: a faithful map makes it fall fast (low area under the curve).
Insertion starts from a blurred copy and restores the most salient pixels first: a
faithful map makes it rise fast (high AUC). Compare against a random map on the
same images (:func:`random_maps`): a useful map beats it on both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weakspot._checks import check_images
from weakspot.errors import InvalidParameterError
from weakspot.explain._net import as_net

__all__ = ["Faithfulness", "deletion_insertion", "random_maps"]


@dataclass
class Faithfulness:
    """``fractions (S+1,)`` of pixels deleted/inserted; ``deletion``/``insertion``
    ``(B, S+1)`` target probabilities; ``deletion_auc``/``insertion_auc`` ``(B,)``
    trapezoidal areas over ``fractions`` in [0, 1] (lower / higher = more faithful)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray


def random_maps(batch: int, height: int, width: int, generator=0, cell_px: int = 1) -> torch.Tensor:
    """Random saliency ``(B, h, w)`` (uniform; constant over ``cell_px`` blocks) — the chance baseline."""
    from weakspot.random import rand

    gh, gw = -(-height // cell_px), -(-width // cell_px)
    r = rand((batch, 1, gh, gw), generator)
    r = torch.nn.functional.interpolate(r, scale_factor=cell_px, mode="nearest")[:, 0, :height, :width]
    return r


def _auc(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[:, 1:] + y[:, :-1]) / 2 * np.diff(x)).sum(1)


@torch.no_grad()
def deletion_insertion(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets=None,
    *,
    steps: int = 16,
    deletion_substrate: float | str = "blur",
    insertion_blur_px: float = 5.0,
    preprocess=None,
    is_view: bool = False,
) -> Faithfulness:
    """Deletion and insertion curves of saliency ``maps`` on ``images``.

    Args:
        model, preprocess: as :func:`~weakspot.explain.grad_cam`.
        images: ``(B, C, H, W)`` in [0, 1].
        maps: ``(B, h, w)`` saliency on the model view (``Saliency.maps``); larger =
            more important. Ties are broken by pixel order.
        targets: ``(B,)`` classes; default the top-1 class of the unperturbed view.
        steps: number of equal pixel-fraction steps (``steps + 1`` forwards per curve).
        deletion_substrate: ``"blur"`` (deleted pixels take the blurred image's values,
            default: stays closer to natural images than RISE's black) or a grey level.
        insertion_blur_px: σ (px) of the Gaussian blur insertion starts from.
        is_view: ``images`` already are the model view: skip resizing.
    """
    from weakspot.degrade.filters import gaussian_blur2d

    check_images(images)
    net = as_net(model, preprocess)
    views = (images if is_view else net.view(images)).to(net.device)
    b, _, h, w = views.shape
    if maps.shape != (b, h, w):
        raise InvalidParameterError(
            "maps", tuple(maps.shape), f"(B, h, w) = {(b, h, w)}, the model view's size"
        )
    if not isinstance(steps, int) or steps < 1:
        raise InvalidParameterError("steps", steps, "a positive integer")
    logits = net.logits_of_view(views).float()
    t = (
        logits.argmax(1)
        if targets is None
        else torch.as_tensor(targets, device=logits.device).long().reshape(-1)
    )
    order = torch.argsort(maps.reshape(b, -1).to(views.device), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    rank = rank.reshape(b, 1, h, w)
    blurred = gaussian_blur2d(views, insertion_blur_px)
    if deletion_substrate == "blur":
        sub = blurred
    elif isinstance(deletion_substrate, (int, float)) and 0 <= deletion_substrate <= 1:
        sub = torch.full_like(views, float(deletion_substrate))
    else:
        raise InvalidParameterError(
            "deletion_substrate", deletion_substrate, "'blur' or a grey level in [0, 1]"
        )
    fr = np.linspace(0.0, 1.0, steps + 1)
    dele, ins = np.zeros((b, steps + 1)), np.zeros((b, steps + 1))
    for k, f in enumerate(fr):
        top = rank < int(round(f * h * w))  # the most salient fraction f of pixels
        xd = torch.where(top, sub, views)
        xi = torch.where(top, views, blurred)
        probs = torch.softmax(net.logits_of_view(torch.cat([xd, xi])).float(), 1)
        p = probs.gather(1, torch.cat([t, t])[:, None])[:, 0].cpu().numpy()
        dele[:, k], ins[:, k] = p[:b], p[b:]
    return Faithfulness(fr, dele, ins, _auc(dele, fr), _auc(ins, fr))
