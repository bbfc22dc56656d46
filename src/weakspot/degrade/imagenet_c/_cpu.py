"""CPU fast paths for a few ImageNet-C corruptions: OpenCV filters and Pillow resampling.

Each public corruption keeps one readable torch implementation (any device, differentiable)
and, when :func:`fast_path_ok` says so — a CPU tensor that needs no gradient, float32 or
float64, large enough for the filter — calls one of these helpers instead (kornia style: the
choice is made inside the one public function). The helpers compute the same values up to
float rounding (``tests/test_fast_paths.py`` ties every pair on the same batch).

They work plane by plane on the contiguous ``(B·C, H, W)`` view: OpenCV and Pillow take one
2-D image per call, and a plane's result depends only on that plane, so an image gives the
same bytes in any batch; the number of torch ops per call does not depend on the batch.
OpenCV is optional (not a core dependency): without ``cv2`` the filters take the torch path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = [
    "fast_path_ok",
    "have_cv2",
    "sep_filter_planes",
    "pil_pixelate_planes",
    "hsv_saturate_images",
]

#: OpenCV border flags for the torch path's border names (torch ``reflect`` mirrors about the
#: edge pixel without repeating it, OpenCV's ``BORDER_REFLECT_101``)
_CV2_BORDER = {"replicate": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT_101"}


@functools.lru_cache(maxsize=1)
def _cv2():
    try:
        import cv2
    except ImportError:  # optional: the torch path is used
        return None
    return cv2


def have_cv2() -> bool:
    """Whether OpenCV can be imported (the filter fast paths need it)."""
    return _cv2() is not None


def fast_path_ok(images: torch.Tensor, *, needs_cv2: bool = False, min_side: int = 1) -> bool:
    """True when ``images`` may take a CPU fast path: on the CPU, no gradient wanted
    (``requires_grad`` off or grad mode off), float32/float64, both sides ≥ ``min_side``,
    and OpenCV importable if ``needs_cv2``."""
    return (
        images.device.type == "cpu"
        and not (images.requires_grad and torch.is_grad_enabled())
        and images.dtype in (torch.float32, torch.float64)
        and images.ndim == 4
        and min(images.shape[-2:]) >= min_side
        and images.numel() > 0
        and (not needs_cv2 or have_cv2())
    )


def _planes(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The input's ``(B·C, H, W)`` planes as NumPy (a view when contiguous) and an output buffer."""
    src = images.detach().contiguous().reshape(-1, *images.shape[-2:]).numpy()
    return src, np.empty_like(src)


def sep_filter_planes(images: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, border: str) -> torch.Tensor:
    """Correlate every plane with the separable kernel ``ky ⊗ kx`` (1-D, odd lengths) using
    ``cv2.sepFilter2D``; ``border`` is ``replicate`` or ``reflect`` (mirror, edge not repeated).
    Same values as :func:`weakspot.degrade.filters.fast_separable_filter2d` up to float rounding."""
    cv2 = _cv2()
    src, out = _planes(images)
    dt = src.dtype
    kxn = kx.detach().reshape(-1).to("cpu", torch.float64).numpy().astype(dt)
    kyn = ky.detach().reshape(-1).to("cpu", torch.float64).numpy().astype(dt)
    flag = getattr(cv2, _CV2_BORDER[border])
    for i in range(src.shape[0]):  # one OpenCV call per plane (numpy only: no torch ops per image)
        cv2.sepFilter2D(src[i], -1, kxn, kyn, dst=out[i], borderType=flag)
    return torch.from_numpy(out).view(images.shape)


def pil_pixelate_planes(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's BOX resize of every plane to ``height × width`` and NEAREST back to its size, in
    Pillow's 32-bit float mode (``"F"``, what ``fromarray`` makes of a float32 plane): the
    reference's resampling grids without its 8-bit rounding. Same values as the torch path's box
    matrices and nearest indices up to float rounding. Float32 in and out."""
    from PIL import Image

    src, out = _planes(images)
    h, w = images.shape[-2:]
    box, nearest = Image.Resampling.BOX, Image.Resampling.NEAREST
    for i in range(src.shape[0]):
        out[i] = np.asarray(Image.fromarray(src[i]).resize((width, height), box).resize((w, h), nearest))
    return torch.from_numpy(out).view(images.shape)


def hsv_saturate_images(images: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """The reference's saturate literally: RGB → HSV (``cv2.cvtColor``, float32), ``S ← clip(S·scale
    + shift)``, HSV → RGB, per image of a float32 RGB batch. OpenCV gives grey pixels hue 0 (red),
    as skimage does. Same values as the closed form in
    :func:`weakspot.degrade.imagenet_c.digital.saturate` up to float rounding (≤ 10⁻⁴), except
    near-grey pixels off the 8-bit grid (V − min < 10⁻³), whose hue OpenCV computes in float32
    from nearly equal values (≤ 1/255 there; the closed form needs no hue)."""
    cv2 = _cv2()
    hwc = images.detach().permute(0, 2, 3, 1).contiguous().numpy()  # OpenCV wants interleaved RGB
    out = np.empty_like(hwc)
    for i in range(hwc.shape[0]):
        hsv = cv2.cvtColor(hwc[i], cv2.COLOR_RGB2HSV)
        sat = hsv[..., 1]
        sat *= scale
        sat += shift
        np.clip(sat, 0.0, 1.0, out=sat)
        cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=out[i])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
