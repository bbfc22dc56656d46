"""The machinery of ImageNet-C's glass blur: step codes, the local pixel shuffle, the pipeline.

The reference blurs the image, truncates it to 8 bits, moves pixels in a sequential scan
(each visited pixel takes the value of a random neighbour within ``max_delta_px``), and
blurs again. Here the scan's outcome is resolved exactly for a whole batch by pointer
jumping (:func:`glass_shuffle_map`), and on the CPU the pipeline runs on tiles of a few
images whose buffers stay in the last-level cache.

Step codes. A step ``(dy, dx)`` in ``[-d, d)²`` is stored as one small integer
``(dy + d)·P + (dx + d)`` with ``P`` the power of two ≥ 2d (uint8 up to d = 8), so the
shuffle decodes it with a shift and a mask, and "the step points to a pixel the scan has
already visited" (dy > 0, or dy = 0 and dx > 0) is ``code > d·P + d``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from weakspot.degrade.filters import (
    SHIFT_SUM_MAX_TAPS,
    convolution_matrix1d,
    fast_gaussian_blur2d,
    gaussian_kernel1d,
)
from weakspot.degrade.imagenet_c._common import straight_through
from weakspot.random import GeneratorLike, random_bits

__all__ = [
    "simulate_glass_shuffle",
    "glass_shuffle_map",
    "glass_blur_from_steps",
    "glass_step_codes",
    "glass_blur_codes",
    "glass_shuffle_map_reference",
    "glass_blur_reference",
]

#: CPU tiles of the pipeline hold about this many bytes of image per float buffer (three
#: float and ten int32 buffers of a tile then stay in a 32 MiB last-level cache; measured
#: in benchmarks/corruptions.py, a batch of 32 224² images runs as 8 tiles of 4)
GLASS_TILE_BYTES = 2_500_000


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


def _code_base(d: int) -> int:
    """``P``, the power of two ≥ 2d that a step code's dx field occupies."""
    return 1 << (2 * d - 1).bit_length()


def _code_dtype(d: int) -> torch.dtype:
    return torch.uint8 if (2 * d - 1) * (_code_base(d) + 1) < 256 else torch.int16


def _codes_from_steps(steps: torch.Tensor, d: int) -> torch.Tensor:
    """Step codes ``(B, iterations, H, W)`` from ``(dy, dx)`` steps ``(B, iterations, H, W, 2)``
    or from the dense codes ``(dy + d)·2d + (dx + d)`` (non-negative floats are truncated)."""
    side = 2 * d
    if steps.ndim == 5:
        dy, dx = steps[..., 0].long() + d, steps[..., 1].long() + d
    else:
        dense = steps.long()
        dy, dx = dense // side, dense % side
    return (dy * _code_base(d) + dx).to(_code_dtype(d))


def glass_step_codes(
    shape: tuple[int, ...], d: int, generator: GeneratorLike = None, device=None, stream: str = "glass.steps"
) -> torch.Tensor:
    """Random step codes ``(B, iterations, H, W)``: ``(dy, dx)`` uniform in ``[-d, d)²`` per pixel
    and pass, as the reference draws them (see the module docstring for the encoding).

    Each 31-bit random word (:func:`weakspot.random.random_bits` from ``stream``; the per-image
    keys keep an image's codes independent of the batch) is cut into digits base 2d, most
    significant first. For 2d a power of two the digits are exact bit fields, so the codes
    are exactly uniform. Otherwise the top ``m`` bits of a word (``m`` = 28 for d = 3, so
    that word·2d fits in int32) give ``k`` digits with ``(2d)^k ≤ 2^(m−14)``; each
    ``k``-tuple of digits is hit by ⌊2^m/(2d)^k⌋ or ⌈2^m/(2d)^k⌉ values: a relative bias
    below 2⁻¹⁴.
    """
    b, per_image = shape[0], math.prod(shape[1:])
    side, base = 2 * d, _code_base(d)
    dtype = _code_dtype(d)
    if side == base:  # a power of two: a code is a bit field of 2·log2(2d) bits
        bits = 2 * (side.bit_length() - 1)
        per_word = 31 // bits
        words = random_bits((b, -(-per_image // per_word)), generator, device, stream=stream)
        codes = torch.empty((b, per_word, words.shape[1]), dtype=dtype, device=words.device)
        field = torch.empty_like(words)
        for j in range(per_word):
            torch.bitwise_right_shift(words, 31 - bits * (j + 1), out=field)
            torch.bitwise_and(field, (1 << bits) - 1, out=codes[:, j])
        return codes.view(b, -1)[:, :per_image].view(shape)
    # otherwise digits base 2d from the top ``bits`` of each word, small enough that a word
    # times 2d stays in int32: the base-2d expansion of the fraction word / 2^bits
    bits = 31 - (side - 1).bit_length()
    per_word = int((bits - 14) / math.log2(side))
    words = random_bits((b, -(-2 * per_image // per_word)), generator, device, stream=stream)
    words.bitwise_right_shift_(31 - bits)
    digits = torch.empty((b, per_word, words.shape[1]), dtype=torch.uint8, device=words.device)
    for j in range(per_word):
        torch.bitwise_right_shift(words.mul_(side), bits, out=digits[:, j])
        words.bitwise_and_((1 << bits) - 1)
    digits = digits.view(b, -1)
    codes = torch.empty((b, per_image), dtype=dtype, device=words.device)
    codes.copy_(digits[:, :per_image]).mul_(base).add_(
        digits[:, per_image : 2 * per_image]
    )  # in the codes' dtype
    return codes.view(shape)


class _GlassShuffle:
    """Source index maps of the local pixel shuffle, for batches (tiles) of up to ``tile``
    images ``H×W`` with maximum step ``d``, in int32 buffers allocated once.

    Pixel ``p``, visited in reverse raster order, takes the value of ``q = p + step``; if
    ``q`` was visited earlier in this pass its value is already final, otherwise it is the
    value from the previous pass. So ``final(p) = final(q)`` along "forward" steps and
    ``prev(q)`` at a chain's first backward step: following the forward pointers to their
    end by pointer jumping (⌈log₂ chain⌉ gathers) resolves a whole pass at once.
    """

    def __init__(self, tile: int, h: int, w: int, d: int, device) -> None:
        self.h, self.w, self.d = h, w, d
        self.base = _code_base(d)
        n = tile * h * w
        self.ids = torch.arange(
            n, device=device, dtype=torch.int32
        )  # tile-global flat ids (int32: fast gathers)
        # rounds of pointer jumping after the first two (which skip 4 links): a chain of forward
        # links only moves forward in raster order, so it is shorter than H·W; a fixed count (most
        # rounds run on an empty set) keeps the number of ops independent of the data and batch
        self.rounds = max(0, math.ceil(math.log2(max(h * w, 4) / 4)))
        self.buf = torch.empty((6, n), device=device, dtype=torch.int32)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """Tile-global flat source ids ``(t·H·W,)`` int32 for step codes ``(t, iterations, H, W)``
        (pixels the scan does not visit must hold the zero step, ``d·P + d``). The result is
        one of the instance's buffers: use it before the next call."""
        t, n_iter = codes.shape[:2]
        h, w, d, base = self.h, self.w, self.d, self.base
        m = t * h * w
        ids = self.ids[:m]
        code, step, q, nxt, src, spare = (row[:m] for row in self.buf)
        zero_step = d * base + d
        for it in range(n_iter):
            code.view(t, h, w).copy_(codes[:, it])
            # step = (dy + d)·W + (dx + d) − (d·W + d), decoded with a shift and a mask
            torch.bitwise_right_shift(code, base.bit_length() - 1, out=step).mul_(w)
            step.add_(torch.bitwise_and(code, base - 1, out=q)).sub_(d * w + d)
            torch.add(step, ids, out=q)
            if d == 1:  # no step points forward: every chain ends where it starts
                if it == 0:
                    src, q = q, src
                else:
                    torch.index_select(src, 0, q, out=spare)
                    src, spare = spare, src
                continue
            # forward flag 1/0: (code − (d·P + d + 1)) >> 31 is −1 up to the zero step
            forward = code.sub_(zero_step + 1).bitwise_right_shift_(31).add_(1)
            torch.mul(step, forward, out=nxt).add_(ids)  # forward pointer, or itself at a chain's end
            exit_ = q.mul_(2).add_(forward)  # the step's target and its forward flag in one word
            # pointer jumping: two rounds on every pointer (each then skips four links), then
            # only on the pointers that have not reached their chain's end (about 1%: chains
            # of k forward links are exponentially rare); each round doubles the skip
            torch.index_select(nxt, 0, nxt, out=step)
            end = torch.index_select(step, 0, step, out=src if it == 0 else spare)
            take = torch.index_select(exit_, 0, end, out=nxt)
            first = pending = torch.bitwise_and(take, 1, out=code).nonzero().view(-1)
            for _ in range(self.rounds):
                jumped = end.index_select(0, end.index_select(0, pending))
                end.index_copy_(0, pending, jumped)
                pending = pending[exit_.index_select(0, jumped).bitwise_and_(1).bool()]
            take.index_copy_(0, first, exit_.index_select(0, end.index_select(0, first)))
            take.bitwise_right_shift_(1)  # the chain end's (backward or zero) step, into the previous pass
            if it == 0:
                src, nxt = take, src
            else:
                torch.index_select(src, 0, take, out=spare)
                src, spare = spare, src
        return src


def _with_zero_border_steps(codes: torch.Tensor, d: int) -> torch.Tensor:
    """Write the zero step on the pixels the reference's scan never visits (in place)."""
    h, w = codes.shape[-2:]
    zero_step = d * _code_base(d) + d
    codes[..., : d + 1, :].fill_(zero_step)
    codes[..., h - d + 1 :, :].fill_(zero_step)
    codes[..., :, : d + 1].fill_(zero_step)
    codes[..., :, w - d + 1 :].fill_(zero_step)
    return codes


def glass_shuffle_map(steps: torch.Tensor, max_delta_px: int) -> torch.Tensor:
    """The same source map as :func:`simulate_glass_shuffle`, batched, with no loop over pixels.

    ``steps``: ``(B, iterations, H, W, 2)`` integer ``(dy, dx)`` in ``[-d, d)``, or the same as
    one code ``(dy + d)·2d + (dx + d)`` per pixel, ``(B, iterations, H, W)``. Returns
    ``(B, H·W)`` flat source indices (int64) per image.
    """
    d = int(max_delta_px)
    return glass_shuffle_map_from_codes(_with_zero_border_steps(_codes_from_steps(steps, d), d), d)


def glass_blur_from_steps(
    images: torch.Tensor, steps: torch.Tensor, sigma_px: float, max_delta_px: int
) -> torch.Tensor:
    """Glass blur with given shuffle ``steps``: ``(B, iterations, H, W, 2)`` (dy, dx in ``[-d, d)``)
    or their codes ``(B, iterations, H, W)`` (see :func:`glass_shuffle_map`).

    Gaussian blur → 8-bit truncation (as the reference) → :func:`glass_shuffle_map` gather →
    Gaussian blur. :func:`weakspot.degrade.imagenet_c.blur.glass_blur` draws the steps; this
    entry point lets a caller (or a test) supply them. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    d = int(max_delta_px)
    return glass_blur_codes(images, _codes_from_steps(steps.to(images.device), d), float(sigma_px), d)


def glass_blur_codes(
    images: torch.Tensor, codes: torch.Tensor, sigma: float, d: int, tile_bytes: int | None = None
) -> torch.Tensor:
    """Glass blur from step codes ``(B, iterations, H, W)`` (:func:`glass_step_codes`; the border
    codes are overwritten). On the CPU the batch runs in tiles of about ``tile_bytes`` of image
    (default :data:`GLASS_TILE_BYTES`): the same operations on every pixel, so the bytes do not
    depend on the tiling; elsewhere in one piece. When autograd records, the values are the
    same bytes as without (this kernel's), the gradient that of the differentiable generic
    path (:func:`glass_blur_reference`'s pipeline in the images' dtype)."""
    b, c, h, w = images.shape
    n = h * w
    codes = _with_zero_border_steps(codes, d)
    if images.requires_grad and torch.is_grad_enabled():
        with torch.no_grad():
            value = glass_blur_codes(images.detach(), codes, sigma, d, tile_bytes)
        return straight_through(_glass_blur_generic(images, codes, sigma, d), value)
    radius = _glass_radius(sigma)  # ⌊4σ + 0.5⌋: 9 taps at σ = 1.1, not ⌈4σ⌉'s 11
    # the first blur also scales to 0…255 and the second divides by 255: the 8-bit truncation
    # between them is then a clamp and a floor
    blur_in = _ReplicateBlur(images, sigma, radius, scale=255.0)
    if not blur_in.ok:  # a single tap, tiny images
        return _glass_blur_generic(images, codes, sigma, d)
    blur_out = _ReplicateBlur(images, sigma, radius, scale=1.0 / 255.0)
    if images.device.type == "cpu":
        per_image = c * n * images.element_size()
        tile = max(1, min(b, (GLASS_TILE_BYTES if tile_bytes is None else tile_bytes) // per_image))
    else:
        tile = b
    tile = _max_tile(tile, n)
    shuffle = _GlassShuffle(tile, h, w, d, images.device)
    out = torch.empty_like(images)
    mid, x, moved = torch.empty((3, tile, c, h, w), device=images.device, dtype=images.dtype)
    index = torch.empty((tile, 1, n), device=images.device, dtype=torch.int64)
    base = torch.arange(0, tile * n, n, device=images.device, dtype=torch.int32).view(tile, 1)
    for i in range(0, b, tile):  # tiles of images (cache blocking), each tile fully vectorised
        t = min(tile, b - i)
        blur_in(images[i : i + t], mid[:t], x[:t])
        x[:t].clamp_(0, 255).floor_()
        src = shuffle(codes[i : i + t])
        torch.sub(src.view(t, n), base[:t], out=index[:t, 0])
        torch.gather(x[:t].view(t, c, n), 2, index[:t].expand(t, c, n), out=moved[:t].view(t, c, n))
        blur_out(moved[:t], mid[:t], out[i : i + t]).clamp_(0.0, 1.0)
    return out


def _glass_radius(sigma: float) -> int:
    """The reference's skimage/SciPy kernel radius ``⌊4σ + 0.5⌋`` (9 taps at σ = 1.1)."""
    return max(1, int(4.0 * sigma + 0.5))


def _glass_blur_generic(images: torch.Tensor, codes: torch.Tensor, sigma: float, d: int) -> torch.Tensor:
    """The pipeline with generic, differentiable ops (straight-through 8-bit truncation)."""
    b, c, h, w = images.shape
    n, radius = h * w, _glass_radius(sigma)
    x = fast_gaussian_blur2d(images, sigma, border="replicate", radius=radius)
    x = straight_through(x, torch.floor(x.clamp(0, 1) * 255) / 255)
    src = glass_shuffle_map_from_codes(codes, d)
    x = x.reshape(b, c, n).gather(2, src.unsqueeze(1).expand(b, c, n)).reshape(b, c, h, w)
    return fast_gaussian_blur2d(x, sigma, border="replicate", radius=radius).clamp(0.0, 1.0)


def glass_shuffle_map_reference(codes: torch.Tensor, d: int) -> torch.Tensor:
    """Plain reference of :class:`_GlassShuffle`: ``(B, H·W)`` int64 source indices per image for
    step codes ``(B, iterations, H, W)`` (the border rows/columns the scan skips are set to the
    zero step here). Readable, not fast: full-size pointer jumping until every chain has ended.
    """
    codes = _with_zero_border_steps(codes.clone(), d).long()
    b, n_iter, h, w = codes.shape
    shift = _code_base(d).bit_length() - 1
    pixel = torch.arange(h * w, device=codes.device).expand(b, -1)
    source = pixel.clone()  # the original pixel each pixel's value comes from, after each pass
    for it in range(n_iter):
        code = codes[:, it].reshape(b, -1)
        dy, dx = (code >> shift) - d, (code & (_code_base(d) - 1)) - d
        target = pixel + dy * w + dx  # the pixel each visited pixel copies
        # the scan runs backwards in raster order: a target after the pixel was visited
        # earlier in this pass and already holds its final value
        forward = (dy > 0) | ((dy == 0) & (dx > 0))
        chain_next = torch.where(forward, target, pixel)  # a chain ends on a pixel that is not forward
        while True:  # pointer jumping: chain_next[p] becomes the end of p's chain
            jumped = chain_next.gather(1, chain_next)
            if torch.equal(jumped, chain_next):
                break
            chain_next = jumped
        # the chain's end copied its target's value from the previous pass
        source = source.gather(1, target.gather(1, chain_next))
    return source


def glass_blur_reference(images: torch.Tensor, codes: torch.Tensor, sigma: float, d: int) -> torch.Tensor:
    """Plain float64 reference of :func:`glass_blur_codes`: Gaussian blur (replicate border,
    radius ``⌊4σ + 0.5⌋``) → 8-bit truncation ``⌊255·clamp(x)⌋`` → the local shuffle
    (:func:`glass_shuffle_map_reference`) → Gaussian blur → clamp. Not differentiable."""
    b, c, h, w = images.shape
    radius = _glass_radius(sigma)
    blurred = fast_gaussian_blur2d(images.detach().double(), sigma, border="replicate", radius=radius)
    levels = torch.floor(blurred.clamp(0, 1) * 255)  # the reference's uint8 image
    source = glass_shuffle_map_reference(codes, d)
    moved = levels.reshape(b, c, h * w).gather(2, source.unsqueeze(1).expand(b, c, h * w)).reshape(b, c, h, w)
    out = fast_gaussian_blur2d(moved / 255, sigma, border="replicate", radius=radius).clamp(0.0, 1.0)
    return out.to(images.dtype)


def glass_shuffle_map_from_codes(codes: torch.Tensor, d: int) -> torch.Tensor:
    """:func:`glass_shuffle_map` on step codes ``(B, iterations, H, W)`` whose unvisited border
    already holds the zero step: ``(B, H·W)`` int64 per-image indices."""
    b, _, h, w = codes.shape
    tile = _max_tile(b, h * w)
    shuffle = _GlassShuffle(tile, h, w, d, codes.device)
    base = torch.arange(0, tile * h * w, h * w, device=codes.device, dtype=torch.int64).view(tile, 1)
    out = torch.empty((b, h * w), device=codes.device, dtype=torch.int64)
    for i in range(0, b, tile):
        t = min(tile, b - i)
        torch.sub(shuffle(codes[i : i + t]).view(t, h * w), base[:t], out=out[i : i + t])
    return out


def _max_tile(b: int, n: int) -> int:
    """Images per shuffle tile: tile-global ids and twice them fit in int32."""
    if n >= 1 << 29:
        raise ValueError(f"glass blur: an image of {n} pixels is too large (at most 2^29)")
    return min(b, (1 << 29) // n)


class _ReplicateBlur:
    """:func:`fast_gaussian_blur2d` (``border="replicate"``) times ``scale``, into buffers the
    caller supplies (the same sums up to float rounding). Up to
    :data:`~weakspot.degrade.filters.SHIFT_SUM_MAX_TAPS` taps as shifted multiply-adds on the
    overlapping part, with no padded copy: the taps that fall off the image all read the edge
    row/column, so each edge band gets their summed weight in one broadcast multiply-add.
    Longer kernels as band-matrix products. ``ok`` is False (use the generic function) for a
    single tap, a kernel as wide as the image and when autograd records."""

    def __init__(self, like: torch.Tensor, sigma: float, radius: int, scale: float = 1.0) -> None:
        self.ok = False
        if sigma <= 0 or (like.requires_grad and torch.is_grad_enabled()):
            return
        k = gaussian_kernel1d(sigma, radius, like.device, torch.float64)
        if k.numel() == 1 or radius >= min(like.shape[-2:]):
            return
        self.gemm = None
        if k.numel() > SHIFT_SUM_MAX_TAPS:  # fast_separable_filter2d's band-matrix products
            h, w = like.shape[-2:]
            self.gemm = tuple(
                m.to(like.dtype)
                for m in (
                    convolution_matrix1d(k * scale, w, "replicate").T,
                    convolution_matrix1d(k, h, "replicate"),
                )
            )
        self.ok, self.r = True, radius
        self.taps = [[float(t) * scale for t in k], [float(t) for t in k]]  # rows (scaled), columns
        # weight of the taps beyond the edge, for the r pixels next to it (nearest first)
        r = radius
        self.edge = [
            [
                torch.tensor([sum(taps[: r - j]) for j in range(r)], dtype=like.dtype, device=like.device),
                torch.tensor(
                    [sum(taps[r + 1 + j :]) for j in range(r)][::-1], dtype=like.dtype, device=like.device
                ),
            ]
            for taps in self.taps
        ]
        self.edge[1] = [e.view(r, 1) for e in self.edge[1]]  # the column pass runs along dim -2

    def _taps(self, src: torch.Tensor, dst: torch.Tensor, dim: int, axis: int) -> None:
        n, r = src.shape[dim], self.r
        taps = self.taps[axis]
        torch.mul(src, taps[r], out=dst)
        for i, tap in enumerate(taps):
            s = i - r
            if s:  # dst[lo:hi] reads src[lo+s:hi+s]
                lo, hi = max(0, -s), min(n, n - s)
                dst.narrow(dim, lo, hi - lo).add_(src.narrow(dim, lo + s, hi - lo), alpha=tap)
        left, right = self.edge[axis]
        dst.narrow(dim, 0, r).addcmul_(src.narrow(dim, 0, 1), left)
        dst.narrow(dim, n - r, r).addcmul_(src.narrow(dim, n - 1, 1), right)

    def __call__(self, x: torch.Tensor, mid: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` along rows into ``mid``, then along columns into ``out`` (``out`` may be ``x``)."""
        if self.gemm is not None:
            torch.matmul(x, self.gemm[0], out=mid)
            return torch.matmul(self.gemm[1], mid, out=out)
        self._taps(x, mid, -1, 0)
        self._taps(mid, out, -2, 1)
        return out
