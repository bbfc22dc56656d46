"""Saliency maps that keep their raw strength: Grad-CAM and occlusion.

Both return a :class:`Saliency` whose ``maps`` are **not** normalised per image:
Grad-CAM's map is ``ReLU(Σ_k w_k A_k)`` in logit units, occlusion's is the drop in
the target class probability. A clean image and its degraded copy explained for
the same class can therefore be compared directly (weaker evidence shows up as a
weaker map; per-image min–max scaling would hide exactly that). Use
:func:`normalize_maps` only for display.

Grad-CAM (Selvaraju et al. 2017): ``w_k`` is the spatial mean of ∂y_c/∂A_k over the
target layer's activations ``A``; the map is upsampled bilinearly (half-pixel
centres) to the model view. Occlusion (Zeiler & Fergus 2014) is gradient-free:
each window of the view is replaced by ``baseline`` and the per-pixel map is the
mean probability drop over the windows that cover the pixel (Captum's definition,
including its last window per side, clipped at the border when the stride does not
tile the view, so every pixel is covered).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from weakspot._checks import check_images, check_range
from weakspot.errors import InvalidParameterError
from weakspot.explain._net import as_net, find_target_layer

__all__ = ["Saliency", "grad_cam", "occlusion", "normalize_maps"]


@dataclass
class Saliency:
    """Saliency of a batch.

    Attributes:
        maps: ``(B, h, w)`` raw map at the model-view resolution (float32, CPU).
        layer_maps: ``(B, h', w')`` at the target layer's resolution (Grad-CAM) or the
            window grid (occlusion).
        targets: ``(B,)`` explained class indices.
        probs: ``(B,)`` softmax probability of the target class on the unperturbed view.
        views: ``(B, C, h, w)`` the model view the maps belong to (for overlays).
        method: ``"grad_cam"`` or ``"occlusion"``.
        predicted: ``(B,)`` the model's top-1 class on the view.
    """

    maps: torch.Tensor
    layer_maps: torch.Tensor
    targets: torch.Tensor
    probs: torch.Tensor
    views: torch.Tensor
    method: str
    predicted: torch.Tensor | None = None

    @property
    def strength(self) -> torch.Tensor:
        """``(B,)`` total raw evidence: the map's mean over pixels."""
        return self.maps.mean(dim=(-2, -1))


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min–max scaling of ``(B, h, w)`` to [0, 1] (for display only)."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def _targets(targets, logits: torch.Tensor) -> torch.Tensor:
    if targets is None:
        return logits.argmax(1)
    t = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(logits.shape[0])
    if t.numel() != logits.shape[0]:
        raise InvalidParameterError(
            "targets", f"{t.numel()} values", f"one class per image ({logits.shape[0]})"
        )
    if (t < 0).any() or (t >= logits.shape[1]).any():
        raise InvalidParameterError("targets", t.tolist(), f"class indices in [0, {logits.shape[1] - 1}]")
    return t


def grad_cam(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    target_layer: nn.Module | None = None,
    preprocess=None,
    batch_size: int = 32,
    is_view: bool = False,
) -> Saliency:
    """Grad-CAM maps with raw strength.

    Args:
        model: a :class:`~weakspot.models.LoadedModel` (its ``target_layer`` is used) or
            an ``nn.Module`` (then ``preprocess`` maps [0, 1] images to its input).
        images: ``(B, C, H, W)`` float in [0, 1].
        targets: ``(B,)`` class indices (or one int); ``None`` explains the top-1 class.
            Explain a degraded image for the clean image's class to compare the two.
        target_layer: overrides the model's; default: the last spatial module.
        batch_size: images per forward/backward pass.
        is_view: ``images`` already are the model view (:func:`model_view`): skip resizing.

    Returns:
        :class:`Saliency` with ``maps (B, h, w)`` ≥ 0 in logit units.
    """
    check_images(images)
    net = as_net(model, preprocess, target_layer)
    views = images if is_view else net.view(images)
    layer = net.target_layer or find_target_layer(net, views)
    maps, lmaps, tg, pr, top = [], [], [], [], []
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        for s in range(0, views.shape[0], batch_size):
            # the view requires grad so the graph exists even for frozen weights
            v = views[s : s + batch_size].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = net.logits_of_view(v)
                act = store.pop("a")
                t = _targets(
                    None if targets is None else _slice(targets, s, batch_size, views.shape[0]), logits
                )
                score = logits.gather(1, t[:, None]).sum()
                (grad,) = torch.autograd.grad(score, act)
            w = grad.mean(dim=(-2, -1), keepdim=True)
            cam = F.relu((w * act).sum(1)).detach()
            lmaps.append(cam.float().cpu())
            up = F.interpolate(cam[:, None].float(), size=v.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(up[:, 0].cpu())
            tg.append(t.cpu())
            top.append(logits.detach().argmax(1).cpu())
            pr.append(torch.softmax(logits.detach().float(), 1).gather(1, t[:, None])[:, 0].cpu())
    finally:
        handle.remove()
    return Saliency(
        torch.cat(maps),
        torch.cat(lmaps),
        torch.cat(tg),
        torch.cat(pr),
        views.detach().cpu(),
        "grad_cam",
        torch.cat(top),
    )


def _slice(targets, s: int, n: int, total: int):
    t = torch.as_tensor(targets).reshape(-1)
    if t.numel() == 1:
        return t
    if t.numel() != total:
        raise InvalidParameterError("targets", f"{t.numel()} values", f"one class per image ({total})")
    return t[s : s + n]


@torch.no_grad()
def occlusion(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    window_px: int = 32,
    stride_px: int | None = None,
    baseline: float = 0.5,
    preprocess=None,
    batch_size: int = 64,
    is_view: bool = False,
) -> Saliency:
    """Occlusion sensitivity: the drop in target probability when a window is hidden.

    Args:
        model, images, targets, preprocess: as :func:`grad_cam`.
        window_px: side of the square occluding window on the model view (px).
        stride_px: step between windows (px); default ``window_px`` (no overlap).
        baseline: grey level in [0, 1] that replaces the window.
        batch_size: occluded images per forward pass.

    Returns:
        :class:`Saliency`; ``maps`` in probability units (negative where hiding a
        region *raises* the probability), ``layer_maps`` on the window grid.
        Costs ``B × n_windows`` forward passes.
    """
    check_images(images)
    check_range("baseline", baseline, 0, 1)
    net = as_net(model, preprocess)
    views = (images if is_view else net.view(images)).to(net.device)
    b, c, h, w = views.shape
    stride_px = stride_px or window_px
    if not (1 <= window_px <= min(h, w)) or not (1 <= stride_px <= window_px):
        raise InvalidParameterError(
            "window_px/stride_px",
            (window_px, stride_px),
            f"1 ≤ stride ≤ window ≤ {min(h, w)} px (the model view)",
        )
    logits = net.logits_of_view(views)
    t = _targets(targets, logits)
    p0 = torch.softmax(logits.float(), 1).gather(1, t[:, None])[:, 0]
    # Captum's windows: ceil((side - window) / stride) + 1 per side, the last one clipped at
    # the border, so every pixel is covered even when the stride does not tile the view
    tops = [i * stride_px for i in range(-(-(h - window_px) // stride_px) + 1)]
    lefts = [i * stride_px for i in range(-(-(w - window_px) // stride_px) + 1)]
    boxes = [(y, x) for y in tops for x in lefts]
    drops = torch.empty(b, len(boxes), device=views.device)
    per_pass = max(1, batch_size // b)
    for s in range(0, len(boxes), per_pass):
        chunk = boxes[s : s + per_pass]
        xs = views.unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)
        for k, (y, x) in enumerate(chunk):
            xs[k, :, :, y : y + window_px, x : x + window_px] = baseline
        lg = net.logits_of_view(xs.reshape(-1, c, h, w)).float()
        p = (
            torch.softmax(lg, 1)
            .reshape(len(chunk), b, -1)
            .gather(2, t.view(1, b, 1).expand(len(chunk), b, 1))
        )
        drops[:, s : s + len(chunk)] = (p0.view(1, b) - p[..., 0]).T
    acc = torch.zeros(b, h, w, device=views.device)
    cnt = torch.zeros(h, w, device=views.device)
    for k, (y, x) in enumerate(boxes):
        acc[:, y : y + window_px, x : x + window_px] += drops[:, k, None, None]
        cnt[y : y + window_px, x : x + window_px] += 1
    maps = acc / cnt.clamp_min(1)
    grid = drops.reshape(b, len(tops), len(lefts))
    return Saliency(
        maps.cpu(), grid.cpu(), t.cpu(), p0.cpu(), views.cpu(), "occlusion", logits.argmax(1).cpu()
    )
