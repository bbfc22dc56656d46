"""Procedural textures for the weather corruptions: plasma fractal (fog) and frost.

Both are generated per image, batched, from the caller's generator. Frost is fully
procedural (the project ships no texture images): a ridged multi-octave noise gives
thin bright crystal veins over a cloudy base, tinted with one of five palettes whose
per-channel mean and standard deviation match the five photographs the reference uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weakspot.random import GeneratorLike, rand, randint, randn

__all__ = ["plasma_fractal", "fractal_noise", "frost_texture", "FROST_PALETTES"]


def plasma_fractal(
    batch: int,
    mapsize: int = 256,
    wibble_decay: float = 3.0,
    generator: GeneratorLike = None,
    device=None,
    stream: str = "plasma",
) -> torch.Tensor:
    """Diamond-square height maps ``(B, mapsize, mapsize)`` in [0, 1] (float64).

    The same recursion as ImageNet-C's fog: at each level the mean of the four corners
    plus uniform noise of amplitude ``wibble²`` (``wibble`` starts at 100 and is divided by
    ``wibble_decay`` per level), wrapping at the edges. ``mapsize`` must be a power of two.
    Vectorised over the batch and computed on ``device``; one loop over the ``log2(mapsize)``
    levels, each level's three draws from streams ``{stream}.{level}.{square,left,top}``.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=device)
    level = 0
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: torch.Tensor, part: str) -> torch.Tensor:
        u = rand(a.shape, generator, a.device, torch.float64, stream=f"{stream}.{level}.{part}")
        return a / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, half::step, half::step] = wibbled_mean(sq, "square")
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0::step, half::step] = wibbled_mean(lt, "left")
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, half::step, 0::step] = wibbled_mean(tt, "top")
        step //= 2
        level += 1
        wibble /= wibble_decay
    flat = m.reshape(batch, -1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / flat.max(1, keepdim=True).values.clamp_min(1e-12)
    return flat.reshape(batch, mapsize, mapsize)


def fractal_noise(
    batch: int,
    height: int,
    width: int,
    octaves: int = 5,
    persistence: float = 0.55,
    base_cells: int = 4,
    generator: GeneratorLike = None,
    device=None,
    stream: str = "fractal_noise",
) -> torch.Tensor:
    """Zero-mean multi-octave value noise ``(B, 1, H, W)`` on ``device`` (octave ``o`` from stream ``{stream}.{o}``).

    Octave ``o`` is a Gaussian grid of ``base_cells·2^o`` cells (along the longer side) with
    amplitude ``persistence^o``; octaves are summed pyramid-style (each partial sum is
    bicubically enlarged to the next grid), so only the last enlargement is full-size.
    """
    if octaves < 1:
        raise ValueError(f"fractal_noise needs at least one octave, got {octaves}")
    acc: torch.Tensor | None = None
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        ch = max(2, min(height, round(cells * height / max(height, width))))
        cw = max(2, min(width, round(cells * width / max(height, width))))
        g = randn((batch, 1, ch, cw), generator, device, stream=f"{stream}.{o}") * amp
        acc = g if acc is None else F.interpolate(acc, size=(ch, cw), mode="bicubic", align_corners=False) + g
        total += amp
        amp *= persistence
    assert acc is not None  # at least one octave
    return F.interpolate(acc, size=(height, width), mode="bicubic", align_corners=False) / total


#: (mean RGB, std RGB) of 224² crops of the five frost photographs ImageNet-C draws from
#: (frost1–5, rescaled ×1.1 as the reference does for a 224² image; mean over crops of the
#: crop mean and RMS of the within-crop std), on [0, 1] intensities. Only these statistics
#: are used, as tints of the procedural texture; no image is shipped.
FROST_PALETTES = (
    ((0.307, 0.582, 0.646), (0.091, 0.055, 0.052)),
    ((0.775, 0.792, 0.828), (0.075, 0.077, 0.080)),
    ((0.774, 0.791, 0.827), (0.074, 0.076, 0.079)),
    ((0.565, 0.623, 0.674), (0.100, 0.100, 0.106)),
    ((0.397, 0.442, 0.488), (0.138, 0.136, 0.133)),
)


def frost_texture(
    batch: int,
    height: int,
    width: int,
    generator: GeneratorLike = None,
    device=None,
    dtype=torch.float32,
    palette: int = -1,
) -> torch.Tensor:
    """Procedural frost ``(B, 3, H, W)`` in [0, 1]: ice veins over a cloudy base, tinted per image.

    Veins: ``(1 - |n|)^6`` of a ridged fractal noise ``n`` (thin bright crests); base: a
    smoother fractal. The pattern is standardised per image and mapped to one of the five
    :data:`FROST_PALETTES` (drawn uniformly per image, or ``palette`` 0–4), so its colour statistics follow
    the reference's textures.
    """
    ridge = fractal_noise(
        batch,
        height,
        width,
        octaves=5,
        persistence=0.6,
        base_cells=6,
        generator=generator,
        device=device,
        stream="frost.ridge",
    )
    ridge = ridge / ridge.flatten(1).std(1).view(-1, 1, 1, 1).clamp_min(1e-6)
    veins = (1 - (ridge.abs() / 2.5).clamp(0, 1)) ** 6
    base = fractal_noise(
        batch,
        height,
        width,
        octaves=4,
        persistence=0.5,
        base_cells=3,
        generator=generator,
        device=device,
        stream="frost.base",
    )
    pattern = 0.7 * veins + 0.3 * base / base.flatten(1).std(1).view(-1, 1, 1, 1).clamp_min(1e-6) * 0.25
    pattern = (pattern - pattern.mean((2, 3), keepdim=True)) / pattern.std((2, 3), keepdim=True).clamp_min(
        1e-6
    )
    idx = randint(0, len(FROST_PALETTES), (batch, 1), generator, device, stream="frost.palette")[:, 0]
    if palette >= 0:
        idx = torch.full_like(idx, int(palette))
    means = torch.tensor([p[0] for p in FROST_PALETTES], device=idx.device)[idx].view(batch, 3, 1, 1)
    stds = torch.tensor([p[1] for p in FROST_PALETTES], device=idx.device)[idx].view(batch, 3, 1, 1)
    tex = (means + stds * pattern).clamp(0, 1)
    return tex.to(device=device, dtype=dtype)


def next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ ``n`` (1 for 0)."""
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))
