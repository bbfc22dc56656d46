"""ImageNet-C blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Kernel sizes are in pixels of the input grid, exactly as the reference (tuned for 224²);
they are not rescaled for other sizes (pass explicit parameters to do so).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from weakspot.degrade.filters import (
    SHIFT_SUM_MAX_TAPS,
    convolution_matrix1d,
    fast_gaussian_blur2d,
    fft_filter2d,
    gaussian_kernel1d,
    separable_filter2d,
)
from weakspot.degrade.imagenet_c._common import (
    clipped_zoom,
    motion_blur_images,
    per_image_uniform,
    straight_through,
)
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, rand, random_bits

__all__ = [
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "disk_kernel",
    "simulate_glass_shuffle",
    "glass_shuffle_map",
    "glass_blur_from_steps",
    "zoom_blur_resampled",
    "zoom_stack_matrix",
]

_FAMILY = "imagenet_c"


def _gaussian_taps(ksize: int, sigma: float) -> torch.Tensor:
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def disk_kernel(radius_px: int, alias_blur_px: float) -> torch.Tensor:
    """The reference's anti-aliased pillbox ``(K, K)`` float64, summing to 1.

    A binary disk ``x² + y² ≤ r²`` on a grid of half-width ``max(8, r)``, normalised, then
    smoothed by a Gaussian of σ = ``alias_blur_px`` (3×3 taps for r ≤ 8, else 5×5; mirrored
    borders, as OpenCV's ``GaussianBlur``).
    """
    half = 8 if radius_px <= 8 else int(radius_px)
    ks = 3 if radius_px <= 8 else 5
    ax = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((ax[:, None] ** 2 + ax[None, :] ** 2) <= radius_px**2).to(torch.float64)
    disk = disk / disk.sum()
    g = _gaussian_taps(ks, float(alias_blur_px))
    d = disk[None, None]

    return separable_filter2d(d, g, border="reflect")[0, 0]


@register(
    "imagenet_c/defocus_blur",
    params=[
        Param("radius_px", 6, "px", 1, 100, "radius of the pillbox (blur circle) in pixels", type=int),
        Param("alias_blur_px", 0.5, "px", 0.0, 10.0, "σ of the Gaussian that anti-aliases the disk", low_open=True),
    ],
    severities={1: {"radius_px": 3, "alias_blur_px": 0.1}, 2: {"radius_px": 4, "alias_blur_px": 0.5},
                3: {"radius_px": 6, "alias_blur_px": 0.5}, 4: {"radius_px": 8, "alias_blur_px": 0.5},
                5: {"radius_px": 10, "alias_blur_px": 0.5}},
    family=_FAMILY,
    axis="radius_px",
    random=False,
    differentiable=True,
)
def defocus_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, radius_px: int = 6, alias_blur_px: float = 0.5
) -> torch.Tensor:
    """Defocus: convolution with an anti-aliased pillbox of radius ``radius_px`` (mirrored borders).

    A thin lens maps a defocus of ΔD diopters to a blur-circle diameter ``f·ΔD·f/N``
    (see ``docs/imagenet_c.md`` for the diopter equivalents). ``(B, C, H, W) -> (B, C, H, W)``.
    """
    k = disk_kernel(int(radius_px), float(alias_blur_px)).to(images.dtype)
    return fft_filter2d(images, k, border="reflect").clamp(0.0, 1.0)


def simulate_glass_shuffle(steps: np.ndarray, max_delta_px: int) -> np.ndarray:
    """ImageNet-C's sequential local pixel "swap", run literally (slow; for tests only).

    ``steps``: ``(iterations, H, W, 2)`` integer ``(dy, dx)`` in ``[-d, d)``, the step drawn for
    each visited pixel. Returns the source index map ``(H, W)`` (flat ``y·W + x``): the
    final image is ``x.flat[map]``. The reference writes ``x[h, w], x[h', w'] = x[h', w'],
    x[h, w]`` on NumPy row views, which copies ``x[h', w']`` into ``x[h, w]`` and leaves
    ``x[h', w']`` unchanged, so values are duplicated along chains, not permuted.
    """
    d = int(max_delta_px)
    n_iter, h, w = steps.shape[:3]
    src = np.arange(h * w).reshape(h, w)
    for it in range(n_iter):
        for y in range(h - d, d, -1):
            for x in range(w - d, d, -1):
                dy, dx = steps[it, y, x]
                src[y, x] = src[y + dy, x + dx]
    return src


def glass_shuffle_map(steps: torch.Tensor, max_delta_px: int) -> torch.Tensor:
    """The same source map as :func:`simulate_glass_shuffle`, batched, with no loop over pixels.

    ``steps``: ``(B, iterations, H, W, 2)`` integer ``(dy, dx)`` in ``[-d, d)``, or the same as
    one code ``(dy + d)·2d + (dx + d)`` per pixel, ``(B, iterations, H, W)``. Pixel ``p``,
    visited in reverse raster order, takes the value of ``q = p + step``; if ``q`` was
    visited earlier in this pass its value is already final, otherwise it is the value from
    the previous pass. So ``final(p) = final(q)`` along "forward" steps and ``prev(q)`` at a
    chain's first backward step: following the forward pointers to their end by pointer
    jumping (⌈log₂ chain⌉ gathers) resolves a whole pass at once. Returns ``(B, H·W)`` flat
    source indices (int64).
    """
    d = int(max_delta_px)
    side = 2 * d
    if steps.ndim == 5:
        steps = (steps[..., 0] + d) * side + (steps[..., 1] + d)
    b, n_iter, h, w = steps.shape
    src = _shuffle_map_from_codes(_owned_codes(steps), d)[0]
    return src.view(b, h * w).sub_(_batch_base(b, h * w, src.device)).long()


def _owned_codes(steps: torch.Tensor) -> torch.Tensor:
    """A fresh int32 copy ``(B, iterations, H, W)`` of step codes (floats are truncated, as ``.int()``)."""
    return torch.empty(steps.shape, dtype=torch.int32, device=steps.device).copy_(steps)


def _batch_base(b: int, n: int, device) -> torch.Tensor:
    return torch.arange(0, b * n, n, device=device, dtype=torch.int32).view(b, 1)


def _shuffle_map_from_codes(
    codes: torch.Tensor, d: int, work: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`glass_shuffle_map` on int32 codes ``(B, iterations, H, W)``, which it overwrites:
    batch-global int32 flat source ids ``(B·H·W,)`` (in ``work``, a free int32 buffer of at
    least ``3·B·H·W`` if given) and a free int32 buffer of ``2·B·H·W``."""
    b, n_iter, h, w = codes.shape
    dev = codes.device
    side = 2 * d
    n = h * w
    # unvisited pixels keep their value: give them the zero step (code d·2d + d)
    first_forward = d * side + d
    codes[:, :, : d + 1].fill_(first_forward)
    codes[:, :, h - d + 1 :].fill_(first_forward)
    codes[:, :, :, : d + 1].fill_(first_forward)
    codes[:, :, :, w - d + 1 :].fill_(first_forward)
    # codes run over (dy, dx) in raster order, so "points to a pixel visited earlier in the
    # pass" (dy > 0, or dy == 0 and dx > 0) is simply code > d·2d + d. A forward step into the
    # unvisited border needs no special case: that pixel points to itself and keeps its value.
    code_ids = torch.arange(side * side, device=dev)
    lut_step = ((code_ids // side - d) * w + (code_ids % side - d)).int()
    lut_forward = torch.where(code_ids > first_forward, lut_step, 0).int()
    ids = torch.arange(b * n, device=dev, dtype=torch.int32)  # batch-global flat ids (int32: fast gathers)
    # working buffers, allocated once (fresh large allocations cost page faults on the CPU)
    if work is None or work.numel() < 3 * b * n:
        work = torch.empty(3 * b * n, device=dev, dtype=torch.int32)
    code, src, spare = work[: b * n], work[b * n : 2 * b * n], work[2 * b * n : 3 * b * n]
    pair = torch.empty(2 * b * n, device=dev, dtype=torch.int32)  # (the caller's int64 index afterwards)
    nxt, q = pair[: b * n], pair[b * n :]
    forward = torch.empty(b * n, device=dev, dtype=torch.bool)
    for it in range(n_iter):
        code.view(b, n).copy_(codes[:, it].reshape(b, n))  # this pass's plane, contiguous
        torch.index_select(lut_forward, 0, code, out=nxt).add_(ids)  # forward pointer, or itself at a chain's end
        torch.gt(code, first_forward, out=forward)
        torch.index_select(lut_step, 0, code, out=q).add_(ids)
        if side == 2:  # d = 1: no step points forward, every chain ends where it starts
            if it == 0:
                src.copy_(q)
            else:
                torch.index_select(src, 0, q, out=spare)
                src, spare = spare, src
            continue
        # pointer jumping: one round on every pointer (each skips two links), then only on the
        # pointers that have not reached their chain's end (few: chains of k forward links are
        # exponentially rare); each round doubles the skip
        end = torch.index_select(nxt, 0, nxt, out=code)  # this pass's codes are no longer needed
        pending = forward.index_select(0, end).nonzero().view(-1)
        while pending.numel():
            jumped = end.index_select(0, end.index_select(0, pending))
            end.index_copy_(0, pending, jumped)
            pending = pending[forward.index_select(0, jumped)]
        # the chain end's (backward or zero) step, into the previous pass
        if it == 0:
            torch.index_select(q, 0, end, out=src)
        else:
            take = torch.index_select(q, 0, end, out=nxt)
            torch.index_select(src, 0, take, out=spare)
            src, spare = spare, src
    return src, pair


def glass_blur_from_steps(images: torch.Tensor, steps: torch.Tensor, sigma_px: float, max_delta_px: int) -> torch.Tensor:
    """Glass blur with given shuffle ``steps``: ``(B, iterations, H, W, 2)`` (dy, dx in ``[-d, d)``)
    or their codes ``(B, iterations, H, W)`` (see :func:`glass_shuffle_map`; non-negative float
    codes are truncated to integers, as ``.int()``).

    Gaussian blur → 8-bit truncation (as the reference) → :func:`glass_shuffle_map` gather →
    Gaussian blur. :func:`glass_blur` draws the steps; this entry point lets a caller (or a
    test) supply them. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    d = int(max_delta_px)
    steps = steps.to(images.device)
    if steps.ndim == 5:
        steps = (steps[..., 0] + d) * (2 * d) + (steps[..., 1] + d)
    return _glass_blur(images, _owned_codes(steps), float(sigma_px), d)


def _glass_blur(images: torch.Tensor, codes: torch.Tensor, sigma: float, d: int) -> torch.Tensor:
    """:func:`glass_blur_from_steps` on int32 codes ``(B, iterations, H, W)``, which it overwrites."""
    b, c, h, w = images.shape
    n = h * w
    # the reference's skimage/SciPy kernel radius ⌊4σ + 0.5⌋ (9 taps at σ = 1.1, not ⌈4σ⌉'s 11)
    radius = max(1, int(4.0 * sigma + 0.5))
    blur = _ReplicateBlur(images, sigma, radius)
    if not blur.ok:  # generic path (autograd, long kernels)
        x = fast_gaussian_blur2d(images, sigma, border="replicate", radius=radius)
        if x.requires_grad and torch.is_grad_enabled():
            x = straight_through(x, torch.floor(x.clamp(0, 1) * 255) / 255)
        else:  # the same, in place (no fresh buffers)
            x = x.clamp_(0, 1).mul_(255).floor_().div_(255)
        src = _shuffle_map_from_codes(codes, d)[0].view(b, n).sub_(_batch_base(b, n, images.device))
        x = x.reshape(b, c, n).gather(2, src.long().unsqueeze(1).expand(b, c, n)).reshape(b, c, h, w)
        return fast_gaussian_blur2d(x, sigma, border="replicate", radius=radius).clamp_(0.0, 1.0)
    # the same operations, on two buffers: blur (images -> tmp -> x) -> 8-bit truncation ->
    # gather (x -> tmp) -> blur (tmp -> x -> tmp, returned)
    tmp, x = (torch.empty(images.shape, device=images.device, dtype=images.dtype) for _ in range(2))
    blur(images, tmp, x)
    x.clamp_(0, 1).mul_(255).floor_().div_(255)
    src, scratch = _shuffle_map_from_codes(codes, d, tmp.view(-1).view(torch.int32))  # tmp is free meanwhile
    src = src.view(b, n).sub_(_batch_base(b, n, images.device))
    index = scratch.view(torch.int64).view(b, n).copy_(src)  # int64 for gather, in freed buffers
    torch.gather(x.view(b, c, n), 2, index.unsqueeze(1).expand(b, c, n), out=tmp.view(b, c, n))
    blur(tmp, x, tmp)
    return tmp.clamp_(0.0, 1.0)


class _ReplicateBlur:
    """:func:`fast_gaussian_blur2d` (``border="replicate"``) with the same operations per pixel
    in the same order, so bit-identical, into buffers the caller supplies: up to
    :data:`~weakspot.degrade.filters.SHIFT_SUM_MAX_TAPS` taps with no
    padded copies (each shifted tap is one multiply-add on the overlapping part plus the edge
    rows/columns from a broadcast edge), longer kernels as the same band-matrix products.
    ``ok`` is False (use the generic function) for a single tap and when autograd records."""

    def __init__(self, like: torch.Tensor, sigma: float, radius: int) -> None:
        self.ok = False
        if sigma <= 0 or (like.requires_grad and torch.is_grad_enabled()):
            return
        k = gaussian_kernel1d(sigma, radius, like.device, like.dtype)
        self.gemm = None
        if k.numel() > SHIFT_SUM_MAX_TAPS:  # fast_separable_filter2d's band-matrix products, into given buffers
            h, w = like.shape[-2:]
            self.gemm = (convolution_matrix1d(k, w, "replicate").T, convolution_matrix1d(k, h, "replicate"))
        elif k.numel() == 1 or radius >= min(like.shape[-2:]):
            return
        self.ok, self.k, self.r = True, k, radius
        self.alphas = [float(t) for t in k[1:]]

    def _taps(self, src: torch.Tensor, dst: torch.Tensor, dim: int) -> None:
        n, r = src.shape[dim], self.r
        first, last = src.narrow(dim, 0, 1), src.narrow(dim, n - 1, 1)
        for i in range(2 * r + 1):
            s = i - r
            lo, hi = max(0, -s), min(n, n - s)  # dst[lo:hi] reads src[lo+s:hi+s]; the rest, an edge
            parts = [(dst.narrow(dim, lo, hi - lo), src.narrow(dim, lo + s, hi - lo))]
            if lo > 0:
                edge = dst.narrow(dim, 0, lo)
                parts.append((edge, first.expand_as(edge)))
            if hi < n:
                edge = dst.narrow(dim, hi, n - hi)
                parts.append((edge, last.expand_as(edge)))
            for out, tap in parts:
                if i == 0:
                    torch.mul(tap, self.k[0], out=out)
                else:
                    out.add_(tap, alpha=self.alphas[i - 1])

    def __call__(self, x: torch.Tensor, mid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` along rows into ``mid``, then along columns into ``out`` (``out`` may be ``x``)."""
        if self.gemm is not None:
            torch.matmul(x, self.gemm[0], out=mid)
            return torch.matmul(self.gemm[1], mid, out=out)
        self._taps(x, mid, -1)
        self._taps(mid, out, -2)
        return out


@register(
    "imagenet_c/glass_blur",
    params=[
        Param("sigma_px", 1.0, "px", 0.0, 20.0, "σ of the Gaussian blur before and after the shuffle", low_open=True),
        Param("max_delta_px", 2, "px", 1, 10, "maximum step of one local pixel swap", type=int),
        Param("iterations", 3, "", 1, 10, "passes of the local pixel shuffle", type=int),
    ],
    severities={1: {"sigma_px": 0.7, "max_delta_px": 1, "iterations": 2},
                2: {"sigma_px": 0.9, "max_delta_px": 2, "iterations": 1},
                3: {"sigma_px": 1.0, "max_delta_px": 2, "iterations": 3},
                4: {"sigma_px": 1.1, "max_delta_px": 3, "iterations": 2},
                5: {"sigma_px": 1.5, "max_delta_px": 4, "iterations": 2}},
    family=_FAMILY,
    axis="max_delta_px",
)
def glass_blur(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    sigma_px: float = 1.0,
    max_delta_px: int = 2,
    iterations: int = 3,
) -> torch.Tensor:
    """Frosted glass: Gaussian blur, local pixel shuffle, Gaussian blur again.

    The reference moves pixels one by one in a sequential scan (1.4 s per 224² image). The
    same random steps are drawn here and the scan's outcome is resolved exactly, for the
    whole batch at once, by pointer jumping (:func:`glass_shuffle_map`); the result is the
    reference's process, not an approximation of it. Differentiable in the image.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    d = int(max_delta_px)
    shape = (images.shape[0], int(iterations), *images.shape[-2:])
    return _glass_blur(images, _glass_step_codes(shape, d, generator, images.device), float(sigma_px), d)


def _glass_step_codes(shape: tuple[int, ...], d: int, generator: GeneratorLike, device) -> torch.Tensor:
    """A uniform step code in ``[0, 4d²)`` per pixel and pass, int32 ``(B, iterations, H, W)``:
    ``(dy, dx)`` uniform in ``[-d, d)²``, as the reference draws them."""
    levels = 4 * d * d
    b, per_image = shape[0], math.prod(shape[1:])
    if levels & (levels - 1) == 0 and levels <= 128:
        # a power of two of at most 7 bits (d = 1, 2, 4): the low bits of each byte of a
        # 31-bit random word are uniform, so one draw gives four codes
        words = random_bits((b, -(-per_image // 4)), generator, device)
        codes = torch.empty(shape, dtype=torch.int32, device=words.device)
        torch.bitwise_and(words.view(torch.uint8)[:, :per_image], levels - 1, out=codes.view(b, per_image))
        return codes
    # otherwise float32 uniforms scaled to the levels (24-bit: bias below 1e-5 for these few levels)
    u = rand(shape, generator, device, torch.float32).mul_(levels)
    return u.view(torch.int32).copy_(u)  # truncated to int32 in place (as .int(), no second buffer)


@register(
    "imagenet_c/motion_blur",
    params=[
        Param("radius_px", 15, "px", 1, 100, "the blur trail has 2·radius+1 taps, one pixel apart", type=int),
        Param("sigma_px", 5.0, "px", 0.0, 100.0, "σ of the half-Gaussian tap weights along the trail", low_open=True),
        Param("angle_min_deg", -45.0, "deg", -360.0, 360.0, "lower end of the uniform random direction"),
        Param("angle_max_deg", 45.0, "deg", -360.0, 360.0, "upper end of the uniform random direction"),
    ],
    severities={1: {"radius_px": 10, "sigma_px": 3.0}, 2: {"radius_px": 15, "sigma_px": 5.0},
                3: {"radius_px": 15, "sigma_px": 8.0}, 4: {"radius_px": 15, "sigma_px": 12.0},
                5: {"radius_px": 20, "sigma_px": 15.0}},
    family=_FAMILY,
    axis="sigma_px",
    differentiable=True,
)
def motion_blur(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    radius_px: int = 15,
    sigma_px: float = 5.0,
    angle_min_deg: float = -45.0,
    angle_max_deg: float = 45.0,
) -> torch.Tensor:
    """Linear camera motion: a one-sided trail of ``2·radius_px+1`` taps with half-Gaussian
    weights, in a direction drawn uniformly per image (set both angle bounds equal for a fixed
    kernel). Edge-replicated borders; one FFT convolution for the batch.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    angle = per_image_uniform(float(angle_min_deg), float(angle_max_deg), images.shape[0], generator, "cpu")
    return motion_blur_images(images, int(radius_px), float(sigma_px), angle).clamp(0.0, 1.0)


def zoom_factors(zoom_stop: float, zoom_step: float) -> np.ndarray:
    """The reference's zoom factors ``np.arange(1, zoom_stop, zoom_step)``."""
    return np.arange(1, zoom_stop, zoom_step)


@register(
    "imagenet_c/zoom_blur",
    params=[
        Param("zoom_stop", 1.21, "", 1.0, 4.0, "zoom factors run from 1 up to (excluding) this", low_open=True),
        Param("zoom_step", 0.02, "", 0.0, 1.0, "spacing of the zoom factors", low_open=True),
    ],
    severities={1: {"zoom_stop": 1.11, "zoom_step": 0.01}, 2: {"zoom_stop": 1.16, "zoom_step": 0.01},
                3: {"zoom_stop": 1.21, "zoom_step": 0.02}, 4: {"zoom_stop": 1.26, "zoom_step": 0.02},
                5: {"zoom_stop": 1.31, "zoom_step": 0.03}},
    family=_FAMILY,
    axis="zoom_stop",
    random=False,
    differentiable=True,
)
def zoom_blur(
    images: torch.Tensor, *, generator: GeneratorLike = None, zoom_stop: float = 1.21, zoom_step: float = 0.02
) -> torch.Tensor:
    """Zoom (radial) blur: the mean of the image and its centre zooms by every factor in
    ``arange(1, zoom_stop, zoom_step)`` (bilinear). ``(B, C, H, W) -> (B, C, H, W)``.

    The whole zoom stack is one linear map of each plane, which depends only on ``H×W`` and
    the factors. On the CPU (no autograd, up to ~500² px) it is built once as a sparse
    matrix (:func:`zoom_stack_matrix`, cached) and applied to all planes in one sparse × dense
    product, 5–10× faster than one bilinear resampling per factor; elsewhere the resamplings
    are summed (:func:`zoom_blur_resampled`). Both give the same values up to float rounding.
    """
    factors = tuple(float(z) for z in zoom_factors(float(zoom_stop), float(zoom_step)))
    b, c, h, w = images.shape
    use_matrix = (
        images.device.type == "cpu"
        and not (images.requires_grad and torch.is_grad_enabled())
        and images.dtype in (torch.float32, torch.float64)
        and h * w * 4 * (len(factors) + 1) <= _ZOOM_MATRIX_MAX_NNZ
    )
    if not use_matrix:
        return zoom_blur_resampled(images, factors)
    m = zoom_stack_matrix(h, w, factors, images.dtype)
    planes = images.reshape(b * c, h * w).t().contiguous()  # (H·W, B·C): each row one pixel of every plane
    out = torch.mm(m, planes)
    return out.clamp_(0.0, 1.0).t().reshape(b, c, h, w).contiguous()


#: above this many non-zeros (4 per pixel and factor, 8 bytes each) the zoom matrix is not built
_ZOOM_MATRIX_MAX_NNZ = 16_000_000


def zoom_blur_resampled(images: torch.Tensor, factors) -> torch.Tensor:
    """:func:`zoom_blur` as the mean of the image and one :func:`clipped_zoom` per factor in
    ``factors`` (a factor of 1 is the image itself). Differentiable, any device."""
    acc = images
    for z in factors:
        acc = acc + (images if z == 1.0 else clipped_zoom(images, float(z)))
    return (acc / (len(factors) + 1)).clamp(0.0, 1.0)


def _zoom_axis_taps(n: int, zoom: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one axis of length ``n``, :func:`clipped_zoom`'s two source indices per output
    position and the weight of the second, ``(n,)`` each: the central ``ceil(n/zoom)`` samples
    resized to ``round(·×zoom)`` with corner-aligned linear interpolation (coordinates in
    ``dtype``, as ``F.interpolate`` computes them), the first ``n`` kept, a short output
    edge-replicated."""
    crop = int(math.ceil(n / zoom))
    start = (n - crop) // 2
    size = int(round(crop * zoom))
    dst = torch.arange(n).clamp(max=size - 1).to(dtype)  # past the end: the edge (replicated)
    scale = (crop - 1) / (size - 1) if size > 1 else 0.0
    src = dst * torch.tensor(scale, dtype=dtype)
    i0 = src.floor().long().clamp(max=crop - 1)
    i1 = (i0 + 1).clamp(max=crop - 1)
    return i0 + start, i1 + start, (src - i0).double()


@functools.lru_cache(maxsize=6)
def zoom_stack_matrix(h: int, w: int, factors: tuple[float, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The zoom stack of :func:`zoom_blur` as a sparse CSR matrix ``(H·W, H·W)`` on the CPU:
    row ``p`` holds the bilinear weights, over the source pixels, of output pixel ``p``
    averaged over the identity and each factor (duplicates summed; ≤ 4 per factor)."""
    pix = torch.arange(h * w)
    yy, xx = pix // w, pix % w
    rows, cols, vals = [pix], [pix], [torch.ones(h * w, dtype=torch.float64)]
    for z in factors:
        if z == 1.0:
            rows.append(pix), cols.append(pix), vals.append(torch.ones(h * w, dtype=torch.float64))
            continue
        r0, r1, a = _zoom_axis_taps(h, z, dtype)
        c0, c1, bw = _zoom_axis_taps(w, z, dtype)
        for ri, wr in ((r0, 1 - a), (r1, a)):
            for ci, wc in ((c0, 1 - bw), (c1, bw)):
                rows.append(pix), cols.append(ri[yy] * w + ci[xx]), vals.append(wr[yy] * wc[xx])
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore")
        coo = torch.sparse_coo_tensor(
            torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals) / (len(factors) + 1), (h * w, h * w)
        ).coalesce()
        return coo.to_sparse_csr().to(dtype)


@register(
    "imagenet_c/gaussian_blur",
    params=[Param("sigma_px", 3.0, "px", 0.0, 50.0, "σ of the Gaussian kernel in pixels", low_open=True)],
    severities={1: {"sigma_px": 1.0}, 2: {"sigma_px": 2.0}, 3: {"sigma_px": 3.0}, 4: {"sigma_px": 4.0},
                5: {"sigma_px": 6.0}},
    family=_FAMILY,
    axis="sigma_px",
    random=False,
    differentiable=True,
)
def gaussian_blur(images: torch.Tensor, *, generator: GeneratorLike = None, sigma_px: float = 3.0) -> torch.Tensor:
    """Isotropic Gaussian blur (radius ⌈4σ⌉, edge-replicated borders as skimage's default).

    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    return fast_gaussian_blur2d(images, float(sigma_px), border="replicate").clamp(0.0, 1.0)
