"""ImageNet-C digital corruptions: brightness, contrast, saturate, pixelate, JPEG, elastic.

Brightness and saturate are closed forms of the reference's HSV round trip (exact and
differentiable); pixelate reproduces Pillow's BOX-down / NEAREST-up resampling as two
small matrices; JPEG uses libjpeg through torchvision (byte-identical to Pillow's) or, with
``differentiable=True``, a DCT-domain simulation with soft rounding that gradients can
pass through.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from weakspot.degrade.filters import fast_separable_filter2d
from weakspot.degrade.imagenet_c import _cpu
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, rand

__all__ = [
    "brightness",
    "contrast",
    "saturate",
    "pixelate",
    "jpeg_compression",
    "jpeg_differentiable",
    "jpeg_exact",
    "elastic_transform",
]

_FAMILY = "imagenet_c"
_EPS = 1e-8


@register(
    "imagenet_c/brightness",
    params=[Param("delta_v", 0.3, "", -1.0, 1.0, "added to the HSV value channel (max of R, G, B)")],
    severities={
        1: {"delta_v": 0.1},
        2: {"delta_v": 0.2},
        3: {"delta_v": 0.3},
        4: {"delta_v": 0.4},
        5: {"delta_v": 0.5},
    },
    family=_FAMILY,
    axis="delta_v",
    random=False,
    differentiable=True,
)
def brightness(
    images: torch.Tensor, *, generator: GeneratorLike = None, delta_v: float = 0.3
) -> torch.Tensor:
    """Raise the HSV value ``V = max(R, G, B)`` by ``delta_v`` (clipped), keeping hue and saturation.

    With hue and saturation fixed every channel is proportional to V, so the HSV round trip
    is ``x · clip(V + δ) / V`` (black becomes grey δ). 1-channel images: ``clip(x + δ)``.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    d = float(delta_v)
    if images.shape[1] == 1:
        return (images + d).clamp(0.0, 1.0)
    v = images.amax(1, keepdim=True)
    v_new = (v + d).clamp(0.0, 1.0)
    lit = v > _EPS
    gain = torch.where(lit, v_new / v.clamp_min(_EPS), 0.0)  # (B, 1, H, W): per-pixel work on one plane
    black = torch.where(lit, 0.0, v_new)  # black pixels (no hue) become grey v_new
    return torch.addcmul(black, images, gain).clamp(0.0, 1.0)  # black + x·gain: one pass over the channels


@register(
    "imagenet_c/contrast",
    params=[
        Param("factor", 0.2, "", 0.0, 10.0, "deviations from each channel's mean are multiplied by this")
    ],
    severities={
        1: {"factor": 0.4},
        2: {"factor": 0.3},
        3: {"factor": 0.2},
        4: {"factor": 0.1},
        5: {"factor": 0.05},
    },
    family=_FAMILY,
    axis="factor",
    random=False,
    differentiable=True,
)
def contrast(images: torch.Tensor, *, generator: GeneratorLike = None, factor: float = 0.2) -> torch.Tensor:
    """``(x − μ_c)·factor + μ_c`` with ``μ_c`` each image's per-channel mean, clipped.

    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    mean = images.mean((2, 3), keepdim=True)
    return ((images - mean) * float(factor) + mean).clamp(0.0, 1.0)


@register(
    "imagenet_c/saturate",
    params=[
        Param("saturation_scale", 2.0, "", 0.0, 100.0, "HSV saturation is multiplied by this"),
        Param("saturation_shift", 0.0, "", -1.0, 1.0, "then this is added (and S clipped to [0, 1])"),
    ],
    severities={
        1: {"saturation_scale": 0.3, "saturation_shift": 0.0},
        2: {"saturation_scale": 0.1, "saturation_shift": 0.0},
        3: {"saturation_scale": 2.0, "saturation_shift": 0.0},
        4: {"saturation_scale": 5.0, "saturation_shift": 0.1},
        5: {"saturation_scale": 20.0, "saturation_shift": 0.2},
    },
    family=_FAMILY,
    axis="saturation_scale",
    random=False,
    differentiable=True,
)
def saturate(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    saturation_scale: float = 2.0,
    saturation_shift: float = 0.0,
) -> torch.Tensor:
    """Set HSV saturation to ``clip(S·scale + shift)`` keeping hue and value.

    For fixed H and V each channel is ``V − S·V·g(H)``, so the round trip is
    ``V − (S'/S)(V − x)``; grey pixels (S = 0, hue 0 = red by convention, as skimage)
    become ``(V, V(1−S'), V(1−S'))``. 1-channel images are returned unchanged (the
    reference's grey path keeps the red channel, which is V). On the CPU without autograd
    (float32 RGB) OpenCV's HSV round trip runs instead (same values up to float rounding).
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    a, b = float(saturation_scale), float(saturation_shift)
    if images.shape[1] == 3 and images.dtype == torch.float32 and _cpu.fast_path_ok(images, needs_cv2=True):
        return _cpu.hsv_saturate_images(images, a, b).clamp_(0.0, 1.0)
    x = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)
    v = x.amax(1, keepdim=True)
    mn = x.amin(1, keepdim=True)
    s = torch.where(v > _EPS, (v - mn) / v.clamp_min(_EPS), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0.0, 1.0)
    ratio = s_new / s.clamp_min(_EPS)
    colored = v - ratio * (v - x)
    red_first = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
    out = torch.where(s > _EPS, colored, red_first).clamp(0.0, 1.0)
    return out if images.shape[1] == 3 else out[:, :1]


@functools.lru_cache(maxsize=64)
def _pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling ``n_in -> n_out`` as an ``(n_out, n_in)`` float64 matrix."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):  # a few hundred rows, built once per size and cached
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - center + 0.5) / fscale
            if -0.5 < t <= 0.5:
                m[i, j] = 1.0
        m[i] /= m[i].sum()
    return m


@functools.lru_cache(maxsize=64)
def _pil_nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's NEAREST source index of each of ``n_out`` outputs: its affine transform adds the
    scale ``n_in / n_out`` (a double) to ``scale / 2`` one output at a time and truncates. The
    running sum, not ``(i + 0.5)·scale``, decides the ties (e.g. 4 -> 7: output 3 reads input 1)."""
    scale = n_in / n_out
    xs = itertools.accumulate([scale] * (n_out - 1), initial=0.5 * scale)
    return torch.tensor([min(int(v), n_in - 1) for v in xs], dtype=torch.long)


@register(
    "imagenet_c/pixelate",
    params=[
        Param(
            "scale",
            0.4,
            "",
            0.0,
            1.0,
            "the image is box-averaged to this fraction of its size, then enlarged back by pixel repetition",
            low_open=True,
        )
    ],
    severities={
        1: {"scale": 0.6},
        2: {"scale": 0.5},
        3: {"scale": 0.4},
        4: {"scale": 0.3},
        5: {"scale": 0.25},
    },
    family=_FAMILY,
    axis="scale",
    random=False,
    differentiable=True,
)
def pixelate(images: torch.Tensor, *, generator: GeneratorLike = None, scale: float = 0.4) -> torch.Tensor:
    """Pixelation: box-average down to ``int(side·scale)`` then nearest-neighbour back up.

    Uses Pillow's exact BOX and NEAREST sampling grids (as the reference), as two small
    linear maps per axis. On the CPU without autograd (float32) Pillow's own BOX and NEAREST
    resizes run per plane in its float mode (same values up to float rounding).
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    _, _, h, w = images.shape
    sh, sw = max(1, int(h * float(scale))), max(1, int(w * float(scale)))
    if images.dtype == torch.float32 and _cpu.fast_path_ok(images):
        return _cpu.pil_pixelate_planes(images, sh, sw)
    ay = _pil_box_matrix(h, sh).to(images.device, images.dtype)
    ax = _pil_box_matrix(w, sw).to(images.device, images.dtype)
    small = torch.matmul(ay, torch.matmul(images, ax.T))  # (B, C, sh, sw)
    iy = _pil_nearest_index(sh, h).to(images.device)
    ix = _pil_nearest_index(sw, w).to(images.device)
    # columns first, while there are few rows (a per-element gather), then whole rows (copies)
    return small.index_select(-1, ix).index_select(-2, iy)


# ---------------------------------------------------------------- JPEG

#: ITU T.81 Annex K quantisation tables (luminance, chrominance), quality 50.
_Q_LUMA = (
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
)
_Q_CHROMA = (
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
    *([99] * 32),
)


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """libjpeg's quality-scaled quantisation table ``(8, 8)`` (baseline: entries in [1, 255])."""
    q = int(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = torch.tensor(_Q_CHROMA if chroma else _Q_LUMA, dtype=torch.float64).view(8, 8)
    return torch.clamp(torch.div(base * scale + 50, 100, rounding_mode="floor"), 1, 255)


@functools.lru_cache(maxsize=4)
def _dct_matrix() -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    d[0] = math.sqrt(1 / 8)
    return d


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x) + (x − round(x))³``: close to rounding, with a non-zero gradient (Shin & Song 2017)."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _blockwise(plane: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Quantise a ``(B, h, w)`` plane (sides multiples of 8) in the 8×8 DCT domain."""
    b, h, w = plane.shape
    d = _dct_matrix().to(plane.device, plane.dtype)
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # (B, h/8, w/8, 8, 8)
    coef = d @ blocks @ d.T
    qt = q.to(plane.device, plane.dtype)
    coef = _soft_round(coef / qt) * qt
    out = d.T @ coef @ d
    return out.transpose(2, 3).reshape(b, h, w)


def jpeg_differentiable(images: torch.Tensor, quality: int) -> torch.Tensor:
    """A differentiable JPEG simulation: JFIF YCbCr, 4:2:0 chroma, 8×8 DCT quantisation with
    libjpeg's tables, soft rounding, fancy (bilinear) chroma upsampling.

    Within about 1/255 mean absolute error of libjpeg at the ImageNet-C qualities.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, c, h, w = images.shape
    x = images * 255
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    if c == 1:
        y = _blockwise(x[:, 0] - 128, quant_table(quality)) + 128
        return (y[:, None, :h, :w] / 255).clamp(0.0, 1.0)
    r, g, bl = x[:, 0], x[:, 1], x[:, 2]
    yy = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)  # (B, 2, H/2, W/2)
    yy = _blockwise(yy - 128, quant_table(quality)) + 128
    qc = quant_table(quality, chroma=True)
    hc, wc = chroma.shape[-2:]
    chroma = _blockwise(chroma.reshape(b * 2, hc, wc) - 128, qc).reshape(b, 2, hc, wc) + 128
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
    rgb = torch.stack([yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], 1)
    return (rgb[..., :h, :w] / 255).clamp(0.0, 1.0)


def jpeg_exact(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode with libjpeg (torchvision; the same bytes as Pillow at this quality).

    Batched C++ codec calls (nvJPEG on CUDA); not differentiable. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import decode_jpeg, encode_jpeg

        u8 = images.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8)  # new buffers: in place is safe
        data = encode_jpeg(list(u8.unbind(0)), quality=int(quality))
        dec = decode_jpeg(data, device=images.device)
    return torch.stack(dec).to(images.dtype).div_(255)


@register(
    "imagenet_c/jpeg_compression",
    params=[
        Param("quality", 15, "", 1, 100, "libjpeg quality factor (lower: coarser quantisation)", type=int),
        Param(
            "differentiable",
            False,
            "",
            doc="use the differentiable DCT simulation instead of libjpeg",
            type=bool,
        ),
    ],
    severities={
        1: {"quality": 25},
        2: {"quality": 18},
        3: {"quality": 15},
        4: {"quality": 10},
        5: {"quality": 7},
    },
    family=_FAMILY,
    axis="quality",
    random=False,
    differentiable=True,
)
def jpeg_compression(
    images: torch.Tensor, *, generator: GeneratorLike = None, quality: int = 15, differentiable: bool = False
) -> torch.Tensor:
    """JPEG compression at libjpeg ``quality`` (4:2:0 chroma subsampling, standard tables).

    ``differentiable=False`` (default): the real codec, exact. ``True``: a differentiable
    simulation (:func:`jpeg_differentiable`) for training through the corruption.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    if differentiable:
        return jpeg_differentiable(images, int(quality))
    return jpeg_exact(images, int(quality))


# ---------------------------------------------------------------- elastic


def _gauss_taps(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    r = int(truncate * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@register(
    "imagenet_c/elastic_transform",
    params=[
        Param("alpha", 21.25, "", 0.0, 1000.0, "gain of the smoothed random displacement field"),
        Param(
            "sigma_frac",
            0.01,
            "",
            0.0,
            1.0,
            "smoothing σ of the field as a fraction of the side",
            low_open=True,
        ),
        Param("max_shift_frac", 0.005, "", 0.0, 1.0, "raw displacements are uniform in ±this × height"),
    ],
    severities={
        1: {"alpha": 12.5},
        2: {"alpha": 16.25},
        3: {"alpha": 21.25},
        4: {"alpha": 25.0},
        5: {"alpha": 30.0},
    },
    family=_FAMILY,
    axis="alpha",
    differentiable=True,
)
def elastic_transform(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    alpha: float = 21.25,
    sigma_frac: float = 0.01,
    max_shift_frac: float = 0.005,
) -> torch.Tensor:
    """Elastic warp (``imagecorruptions`` 1.1.2 variant): uniform noise of ±``max_shift_frac·H``
    pixels, Gaussian-smoothed with σ = ``sigma_frac``·side (truncated at 3σ), times ``alpha``,
    is the per-pixel displacement; bilinear resampling with mirrored borders. Size-relative,
    so it scales with the image. Differentiable in the image. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, _c, h, w = images.shape
    m = float(max_shift_frac) * h
    u = rand(
        (b, 2, h, w), generator, images.device, images.dtype, stream="imagenet_c.elastic_transform.field"
    )
    field = (u * 2 - 1) * m
    kx, ky = _gauss_taps(float(sigma_frac) * w), _gauss_taps(float(sigma_frac) * h)
    if _cpu.fast_path_ok(images, needs_cv2=True, min_side=max(kx.numel(), ky.numel()) // 2 + 1):
        field = _cpu.sep_filter_planes(field, kx, ky, border="reflect")  # cv2.sepFilter2D, same taps
    else:
        field = fast_separable_filter2d(field, kx, ky)
    field = field * float(alpha)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=images.dtype),
        torch.arange(w, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    gx = (xx + field[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (yy + field[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return out.clamp(0.0, 1.0)
