"""ImageNet-C weather corruptions: snow, frost, fog and spatter (water / mud).

Every random layer (snow flakes, frost texture, plasma fog, liquid blobs) is generated per
image from the caller's generator, batched; no texture files are read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weakspot.degrade.filters import fast_gaussian_blur2d, fast_separable_filter2d, shift_filter2d
from weakspot.degrade.imagenet_c._common import clipped_zoom, gray, motion_blur_images, per_image_uniform
from weakspot.degrade.imagenet_c.textures import frost_texture, next_power_of_2, plasma_fractal
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, randn

__all__ = ["snow", "frost", "fog", "spatter"]

_FAMILY = "imagenet_c"


@register(
    "imagenet_c/snow",
    params=[
        Param("flake_mean", 0.55, "", -5.0, 5.0, "mean of the Gaussian field the flakes are cut from"),
        Param("flake_std", 0.3, "", 0.0, 5.0, "standard deviation of that field", low_open=True),
        Param("flake_zoom", 4.0, "", 1.0, 20.0, "zoom of the field (flake size, in pixels per sample)"),
        Param("flake_threshold", 0.9, "", 0.0, 1.0, "field values below this are no snow"),
        Param("streak_radius_px", 12, "px", 1, 100, "falling-streak length: 2·radius+1 taps", type=int),
        Param(
            "streak_sigma_px", 8.0, "px", 0.0, 100.0, "σ of the half-Gaussian streak weights", low_open=True
        ),
        Param(
            "scene_weight", 0.7, "", 0.0, 1.0, "weight of the original scene vs its whitened (snow-lit) copy"
        ),
    ],
    severities={
        1: dict(
            flake_mean=0.1,
            flake_std=0.3,
            flake_zoom=3.0,
            flake_threshold=0.5,
            streak_radius_px=10,
            streak_sigma_px=4.0,
            scene_weight=0.8,
        ),
        2: dict(
            flake_mean=0.2,
            flake_std=0.3,
            flake_zoom=2.0,
            flake_threshold=0.5,
            streak_radius_px=12,
            streak_sigma_px=4.0,
            scene_weight=0.7,
        ),
        3: dict(
            flake_mean=0.55,
            flake_std=0.3,
            flake_zoom=4.0,
            flake_threshold=0.9,
            streak_radius_px=12,
            streak_sigma_px=8.0,
            scene_weight=0.7,
        ),
        4: dict(
            flake_mean=0.55,
            flake_std=0.3,
            flake_zoom=4.5,
            flake_threshold=0.85,
            streak_radius_px=12,
            streak_sigma_px=8.0,
            scene_weight=0.65,
        ),
        5: dict(
            flake_mean=0.55,
            flake_std=0.3,
            flake_zoom=2.5,
            flake_threshold=0.85,
            streak_radius_px=12,
            streak_sigma_px=12.0,
            scene_weight=0.55,
        ),
    },
    family=_FAMILY,
    axis="flake_threshold",
    differentiable=True,
)
def snow(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    flake_mean: float = 0.55,
    flake_std: float = 0.3,
    flake_zoom: float = 4.0,
    flake_threshold: float = 0.9,
    streak_radius_px: int = 12,
    streak_sigma_px: float = 8.0,
    scene_weight: float = 0.7,
) -> torch.Tensor:
    """Falling snow: a thresholded, zoomed Gaussian field motion-blurred along a random
    downward direction (−135°…−45°), added twice (the layer and its 180° rotation) to a
    snow-lit scene ``w·x + (1−w)·max(x, 1.5·luma + 0.5)``. Differentiable in the image.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, _, h, w = images.shape
    layer = randn((b, 1, h, w), generator, stream="imagenet_c.snow.flakes") * float(flake_std) + float(
        flake_mean
    )
    layer = clipped_zoom(layer, float(flake_zoom))
    layer = torch.where(layer < float(flake_threshold), torch.zeros_like(layer), layer).clamp(0, 1)
    angle = per_image_uniform(-135.0, -45.0, b, generator, "cpu", stream="imagenet_c.snow.angle")
    layer = motion_blur_images(layer, int(streak_radius_px), float(streak_sigma_px), angle, (-135.0, -45.0))
    layer = (torch.round(layer * 255) / 255).to(device=images.device, dtype=images.dtype)
    lit = torch.maximum(images, gray(images) * 1.5 + 0.5)
    x = float(scene_weight) * images + (1 - float(scene_weight)) * lit
    return (x + layer + torch.flip(layer, (-2, -1))).clamp(0.0, 1.0)


@register(
    "imagenet_c/frost",
    params=[
        Param("scene_weight", 0.7, "", 0.0, 2.0, "multiplier of the scene"),
        Param("frost_weight", 0.7, "", 0.0, 2.0, "multiplier of the frost texture"),
        Param(
            "texture_index",
            -1,
            "",
            -1,
            4,
            "tint of the texture (one per reference photo); -1: random per image",
            type=int,
        ),
    ],
    severities={
        1: {"scene_weight": 1.0, "frost_weight": 0.4},
        2: {"scene_weight": 0.8, "frost_weight": 0.6},
        3: {"scene_weight": 0.7, "frost_weight": 0.7},
        4: {"scene_weight": 0.65, "frost_weight": 0.7},
        5: {"scene_weight": 0.6, "frost_weight": 0.75},
    },
    family=_FAMILY,
    axis="frost_weight",
    differentiable=True,
)
def frost(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    scene_weight: float = 0.7,
    frost_weight: float = 0.7,
    texture_index: int = -1,
) -> torch.Tensor:
    """Frost on the lens: ``scene_weight·x + frost_weight·T``, clipped, with ``T`` a procedural
    frost texture (:func:`~weakspot.degrade.imagenet_c.textures.frost_texture`, no image files).
    ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, c, h, w = images.shape
    tex = frost_texture(b, h, w, generator, images.device, images.dtype, palette=int(texture_index))
    if c == 1:
        tex = gray(tex)
    return (float(scene_weight) * images + float(frost_weight) * tex).clamp(0.0, 1.0)


@register(
    "imagenet_c/fog",
    params=[
        Param(
            "fog_strength", 2.5, "", 0.0, 20.0, "amplitude of the added plasma-fractal haze", low_open=True
        ),
        Param(
            "wibble_decay",
            1.7,
            "",
            1.0,
            10.0,
            "roughness decay per octave (smaller: patchier fog)",
            low_open=True,
        ),
    ],
    severities={
        1: {"fog_strength": 1.5, "wibble_decay": 2.0},
        2: {"fog_strength": 2.0, "wibble_decay": 2.0},
        3: {"fog_strength": 2.5, "wibble_decay": 1.7},
        4: {"fog_strength": 2.5, "wibble_decay": 1.5},
        5: {"fog_strength": 3.0, "wibble_decay": 1.4},
    },
    family=_FAMILY,
    axis="fog_strength",
    differentiable=True,
)
def fog(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    fog_strength: float = 2.5,
    wibble_decay: float = 1.7,
) -> torch.Tensor:
    """Fog: add ``fog_strength ×`` a diamond-square plasma fractal (one per image, shared by the
    channels), then rescale by ``max(x) / (max(x) + fog_strength)``. Differentiable in the
    image. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, _, h, w = images.shape
    size = next_power_of_2(max(h, w))
    haze = plasma_fractal(b, size, float(wibble_decay), generator, images.device, "imagenet_c.fog.plasma")[
        :, :h, :w
    ]
    haze = haze.to(device=images.device, dtype=images.dtype).unsqueeze(1)
    peak = images.amax((1, 2, 3), keepdim=True)
    s = float(fog_strength)
    return ((images + s * haze) * peak / (peak + s)).clamp(0.0, 1.0)


def _edt_truncated(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance to the nearest ``True`` of ``edges`` ``(B, 1, H, W)``, capped at ``cap``.

    Exact separable transform on int16. The column pass (distance to the nearest edge row,
    ``|dy|``) is a min-plus doubling: after steps of 1, 2, 4, … px every offset up to
    ``2·step − 1`` is reached at its cost ``|dy|`` (⌈log₂ cap⌉ rounds, not ``cap``); the row pass
    takes ``min over |dx| ≤ cap of dx² + g(x + dx)`` (a loop over the ``2·cap`` offsets).
    """
    h, w = edges.shape[-2:]
    far = cap + 1
    dv = torch.full(edges.shape, far, dtype=torch.int16, device=edges.device).masked_fill_(edges, 0)
    step = 1
    while step <= cap:
        padded = F.pad(dv, (0, 0, step, step), value=far)
        dv = torch.minimum(
            dv, torch.minimum(padded[..., :h, :], padded[..., 2 * step : 2 * step + h, :]).add_(step)
        )
        step *= 2
    dv = dv.clamp_(max=far)
    g = dv * dv
    big = 2 * far**2
    padded = F.pad(g, (cap, cap), value=big)
    best, nearer = g.clone(), torch.empty_like(g)
    for off in range(1, cap + 1):  # the nearer of the two columns at ±off, plus off²
        torch.minimum(
            padded[..., cap + off : cap + off + w], padded[..., cap - off : cap - off + w], out=nearer
        )
        torch.minimum(best, nearer.add_(off * off), out=best)
    return best.float().sqrt_().clamp_(max=float(cap))


def _equalize_hist_u8(img: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``equalizeHist`` per image on integer-valued ``(B, 1, H, W)`` in [0, 255]."""
    b = img.shape[0]
    v = img.reshape(b, -1).long()
    hist = torch.zeros(b, 256, dtype=torch.float64, device=img.device)
    hist.scatter_add_(1, v, torch.ones_like(v, dtype=torch.float64))
    total = float(v.shape[1])
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)
    cum = hist.cumsum(1)
    cum_first = cum.gather(1, first)
    scale = 255.0 / (total - hist.gather(1, first)).clamp_min(1.0)
    lut = torch.round((cum - cum_first) * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=img.device) <= first, 0.0, lut)
    flat_img = hist.gather(1, first) == total  # one grey level only: OpenCV keeps it
    lut = torch.where(flat_img, torch.arange(256, device=img.device, dtype=torch.float64).expand(b, -1), lut)
    return lut.gather(1, v).reshape(img.shape).to(img.dtype)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean with mirrored borders (OpenCV's ``blur``): the sum of the nine values (exact for
    integer values), times 1/9."""
    ones = torch.ones(3, dtype=x.dtype)
    return fast_separable_filter2d(x, ones, ones, border="reflect").mul_(1 / 9)


def _box3_u8(x: torch.Tensor) -> torch.Tensor:
    return _box3(x).round_()


def _dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """Binary 3×3 dilation of a bool ``(B, 1, H, W)`` mask (two separable passes of ORs)."""
    p = F.pad(mask, (1, 1, 0, 0))
    rows = p[..., :-2] | p[..., 1:-1] | p[..., 2:]
    p = F.pad(rows, (0, 0, 1, 1))
    return p[..., :-2, :] | p[..., 1:-1, :] | p[..., 2:, :]


def canny(img: torch.Tensor, low: float, high: float, max_rounds: int = 64) -> torch.Tensor:
    """OpenCV's ``Canny(img, low, high)`` (3×3 Sobel, L1 magnitude) on ``(B, 1, H, W)`` 8-bit values.

    Sobel with replicated borders, non-maximum suppression in four directions with OpenCV's
    fixed-point tan(22.5°) test and tie rules, then hysteresis by repeated 3×3 dilation of the
    strong edges into weak ones (up to ``max_rounds``, a loop over rounds, not pixels).
    Returns a bool edge map.

    Gradients and magnitudes are int16 (|g| ≤ 4·255) and every test is an integer sign mask
    (``(b − a) >> 15`` is −1 where ``a > b``) combined with bitwise ands and ors: on the CPU
    such arithmetic runs several times faster than comparisons that write bool tensors.
    """
    p = F.pad(img, (1, 1, 1, 1), mode="replicate").round().to(torch.int16)
    # Sobel = (1, 2, 1) ⊗ (−1, 0, 1), from horizontal differences and smoothings of the padded rows
    dh = p[..., 2:] - p[..., :-2]
    sh = torch.add(p[..., 2:], p[..., :-2]).add_(p[..., 1:-1], alpha=2)
    gx = torch.add(dh[..., 2:, :], dh[..., :-2, :]).add_(dh[..., 1:-1, :], alpha=2)
    gy = sh[..., 2:, :] - sh[..., :-2, :]
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    mp = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside, as OpenCV's buffer
    h, w = mag.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return mp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    def greater(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:  # −1 where a > b, else 0
        return torch.sub(b, a).bitwise_right_shift_(15) if isinstance(b, torch.Tensor) else (b - a) >> 15

    def level(t: float) -> int:  # m > t ⇔ m > ⌊t⌋ for integer m, kept inside int16
        return min(max(math.floor(t), -1), 4 * 255 * 2)

    # OpenCV's direction tests on y = |gy|·2^15 (int32): horizontal if y < 13573·|gx|
    # (13573 = tan(22.5°)·2^15), vertical if y > (13573 + 2^16)·|gx| (tan 67.5° = tan 22.5° + 2)
    ax32, ay32 = ax.int(), ay.int()
    tg22 = ax32 * 13573
    horiz = ay32.mul(32768).sub_(tg22).bitwise_right_shift_(31).to(torch.int16)
    vert = tg22.sub_(ay32.sub_(ax32, alpha=2).mul_(32768)).bitwise_right_shift_(31).to(torch.int16)
    diag = ~(horiz | vert)
    opposite = (gx ^ gy) >> 15  # −1 where the gradient components differ in sign
    nms_h = greater(mag, at(0, -1)) & ~greater(at(0, 1), mag)
    nms_v = greater(mag, at(-1, 0)) & ~greater(at(1, 0), mag)
    nms_same = greater(mag, at(-1, -1)) & greater(mag, at(1, 1))
    nms_opposite = greater(mag, at(-1, 1)) & greater(mag, at(1, -1))
    nms_d = (nms_same & ~opposite) | (nms_opposite & opposite)
    cand = ((horiz & nms_h) | (vert & nms_v) | (diag & nms_d)) & greater(mag, level(low))
    strong_mask = cand & greater(mag, level(high))
    strong = strong_mask.bool()
    weak = (cand & ~strong_mask).bool()
    count = torch.count_nonzero(strong)
    for _ in range(max_rounds):
        grown = strong | (weak & _dilate3x3(strong))
        grown_count = torch.count_nonzero(grown)  # grown ⊇ strong: equal counts, equal maps
        if grown_count == count:
            break
        strong, count = grown, grown_count
    return strong


def _water_shade(field: torch.Tensor) -> torch.Tensor:
    """Water-drop strength ``(B, 1, H, W)`` in [0, 1] from the thresholded liquid field.

    The reference's OpenCV chain, batched: Canny edges of the 8-bit field (the drop
    boundaries) → Euclidean distance to them, capped at 20 px → 3×3 box → histogram
    equalisation → emboss → 3×3 box, times the field, normalised by its maximum.
    """
    b = field.shape[0]
    u8 = field.mul(255).floor_().clamp_(0, 255)
    edges = canny(u8, 50, 150)
    dist = _edt_truncated(edges, 20)
    dist = _box3(dist).add_(1e-4).floor_().clamp_(0, 255)
    dist = _equalize_hist_u8(dist)
    emboss = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    dist = shift_filter2d(dist, emboss, border="reflect").round_().clamp_(0, 255)
    m = _box3_u8(dist).mul_(u8)
    return m.div_(m.flatten(1).amax(1).view(b, 1, 1, 1).clamp_min(1e-12))


@register(
    "imagenet_c/spatter",
    params=[
        Param("liquid_mean", 0.65, "", -5.0, 5.0, "mean of the Gaussian field the drops are cut from"),
        Param("liquid_std", 0.3, "", 0.0, 5.0, "standard deviation of that field", low_open=True),
        Param("liquid_sigma_px", 3.0, "px", 0.0, 50.0, "smoothing of the field (drop size)", low_open=True),
        Param("liquid_threshold", 0.68, "", 0.0, 5.0, "field values below this are dry"),
        Param("intensity", 0.6, "", 0.0, 10.0, "water: tint strength; mud: σ (px) of the mud-mask blur"),
        Param("mud", False, "", doc="false: pale-turquoise water drops; true: opaque brown mud", type=bool),
    ],
    severities={
        1: dict(
            liquid_mean=0.65,
            liquid_std=0.3,
            liquid_sigma_px=4.0,
            liquid_threshold=0.69,
            intensity=0.6,
            mud=False,
        ),
        2: dict(
            liquid_mean=0.65,
            liquid_std=0.3,
            liquid_sigma_px=3.0,
            liquid_threshold=0.68,
            intensity=0.6,
            mud=False,
        ),
        3: dict(
            liquid_mean=0.65,
            liquid_std=0.3,
            liquid_sigma_px=2.0,
            liquid_threshold=0.68,
            intensity=0.5,
            mud=False,
        ),
        4: dict(
            liquid_mean=0.65,
            liquid_std=0.3,
            liquid_sigma_px=1.0,
            liquid_threshold=0.65,
            intensity=1.5,
            mud=True,
        ),
        5: dict(
            liquid_mean=0.67,
            liquid_std=0.4,
            liquid_sigma_px=1.0,
            liquid_threshold=0.65,
            intensity=1.5,
            mud=True,
        ),
    },
    family=_FAMILY,
    axis="liquid_threshold",
    differentiable=True,
)
def spatter(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    liquid_mean: float = 0.65,
    liquid_std: float = 0.3,
    liquid_sigma_px: float = 3.0,
    liquid_threshold: float = 0.68,
    intensity: float = 0.6,
    mud: bool = False,
) -> torch.Tensor:
    """Water or mud splashes on the lens. A smoothed Gaussian field thresholded into drops;
    water drops add a pale turquoise (175, 238, 238)/255 shaded by the distance to the drop
    edge (the reference's Canny → distance transform → equalise → emboss chain, batched);
    mud replaces the scene by brown (63, 42, 20)/255 under a blurred mask.
    Differentiable in the image. ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, c, h, w = images.shape
    dev, dt = images.device, images.dtype
    field = (
        randn((b, 1, h, w), generator, dtype=torch.float32, stream="imagenet_c.spatter.field")
        .mul_(float(liquid_std))
        .add_(float(liquid_mean))
    )
    field = fast_gaussian_blur2d(field, float(liquid_sigma_px), border="replicate")
    field = field.masked_fill_(field < float(liquid_threshold), 0.0)
    if not mud:
        m = _water_shade(field) * float(intensity)
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255]).view(1, 3, 1, 1)
        add = (m * color).to(device=dev, dtype=dt)
        if c == 1:
            add = gray(add.clamp(0, 1))
        return torch.add(images, add).clamp_(0.0, 1.0)
    mask = (field > float(liquid_threshold)).float()
    mask = fast_gaussian_blur2d(mask, float(intensity), border="replicate")
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask).to(device=dev, dtype=dt)
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], device=dev, dtype=dt).view(1, 3, 1, 1) * mask
    if c == 1:
        color = gray(color)
    return (images * (1 - mask) + color).clamp(0.0, 1.0)
