"""Image-processor stage: DN → normalised raw → demosaic → white balance → colour matrix → sRGB.

Steps (each a pure, differentiable torch function):

1. ``raw = (dn − black_level_dn) / (white_dn − black_level_dn)``, where ``white_dn`` is the DN
   of a full well (or the ADC maximum); 1.0 = saturation.
2. Demosaic (only when the sensor has a CFA): ``"bilinear"`` normalised convolution, or
   ``"malvar"`` (Malvar, He & Cutler 2004, gradient-corrected bilinear, 5×5 kernels).
3. White balance: per-channel gains. ``None`` = the gains that make the reference white
   of the scene model (equal-energy, :mod:`weakspot.camera.scene`) neutral for this sensor's
   band response ``PHOTONS_PER_LUX · QE`` (green gain 1) — a camera calibrated for the scene
   illuminant.
4. Colour matrix (3×3, row-major, applied to column vectors); ``None`` = identity, which is
   exact for the ideal, non-overlapping band filters of the model.
5. ``digital_gain``, clip to [0, 1] (straight-through gradient) and sRGB encoding
   (``output="srgb"``) or linear output (``output="linear"``).

:meth:`ISP.linear_raw` switches everything off: the output is the normalised linear raw
(demosaicked when there is a CFA), without white balance, colour matrix or gamma.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from weakspot._checks import check_range
from weakspot.camera.scene import PHOTONS_PER_LUX, linear_to_srgb
from weakspot.camera.sensor import Sensor, straight_through_
from weakspot.errors import InvalidParameterError

__all__ = ["ISP", "demosaic_bilinear", "demosaic_malvar", "auto_white_balance"]


def auto_white_balance(sensor: Sensor) -> tuple[float, float, float]:
    """Gains ``(R, G, B)`` that render the equal-energy reference white neutral (green = 1)."""
    resp = [p * q for p, q in zip(PHOTONS_PER_LUX, sensor.qe_rgb, strict=True)]
    return tuple(resp[1] / r if r > 0 else 1.0 for r in resp)  # type: ignore[return-value]


@dataclass(frozen=True)
class ISP:
    """Image signal processor.

    Attributes:
        black_level_dn: DN subtracted before normalising; ``None`` = the sensor's pedestal.
        white_balance: per-channel gains ``(R, G, B)``; ``None`` = calibrated for the scene white.
        color_matrix: 9 numbers, row-major 3×3 camera-RGB → linear sRGB; ``None`` = identity.
        digital_gain: multiplier on the white-balanced linear image (1 = none).
        demosaic: ``"bilinear"`` or ``"malvar"``.
        output: ``"srgb"`` (gamma-encoded display image) or ``"linear"``.
    """

    black_level_dn: float | None = None
    white_balance: tuple[float, float, float] | None = None
    color_matrix: tuple[float, ...] | None = None
    digital_gain: float = 1.0
    demosaic: str = "bilinear"
    output: str = "srgb"

    def __post_init__(self) -> None:
        if self.black_level_dn is not None:
            check_range("black_level_dn", self.black_level_dn, 0.0, 2.0**24, unit="DN")
        if self.white_balance is not None:
            wb = tuple(self.white_balance)
            if len(wb) != 3:
                raise InvalidParameterError(
                    "white_balance", self.white_balance, "three gains (R, G, B) or None"
                )
            for g in wb:
                check_range("white_balance", g, 0.0, 1e3)
            object.__setattr__(self, "white_balance", tuple(float(g) for g in wb))
        if self.color_matrix is not None:
            cm = torch.as_tensor(self.color_matrix, dtype=torch.float64).flatten()
            if cm.numel() != 9 or not torch.isfinite(cm).all():
                raise InvalidParameterError(
                    "color_matrix", self.color_matrix, "9 finite numbers (row-major 3×3) or None"
                )
            object.__setattr__(self, "color_matrix", tuple(float(v) for v in cm))
        check_range("digital_gain", self.digital_gain, 0.0, 1e4, low_inclusive=False)
        if self.demosaic not in ("bilinear", "malvar"):
            raise InvalidParameterError("demosaic", self.demosaic, "'bilinear' or 'malvar'")
        if self.output not in ("srgb", "linear"):
            raise InvalidParameterError("output", self.output, "'srgb' or 'linear'")

    @classmethod
    def linear_raw(cls, demosaic: str = "bilinear") -> ISP:
        """An ISP that only normalises (and demosaics): linear raw out, no WB, matrix or gamma."""
        return cls(
            white_balance=(1.0, 1.0, 1.0),
            color_matrix=None,
            digital_gain=1.0,
            demosaic=demosaic,
            output="linear",
        )

    @property
    def is_linear_raw(self) -> bool:
        return self.white_balance == (1.0, 1.0, 1.0) and self.color_matrix is None and self.output == "linear"

    def normalise(self, dn: torch.Tensor, sensor: Sensor) -> torch.Tensor:
        """DN → linear raw, 0 = black level, 1 = a full well."""
        black = sensor.black_level_dn if self.black_level_dn is None else self.black_level_dn
        scale = sensor.white_dn - black
        if scale <= 0:
            raise InvalidParameterError(
                "black_level_dn", black, f"below the sensor's white level {sensor.white_dn:g} DN"
            )
        return (dn - black) / scale

    def colour_transform(self, sensor: Sensor) -> tuple[torch.Tensor, float]:
        """``(T, black)``: linear = ``T @ (demosaicked_dn − black)`` folds normalisation, white
        balance, digital gain and colour matrix into one 3×3 matrix (float64)."""
        black = sensor.black_level_dn if self.black_level_dn is None else self.black_level_dn
        scale = sensor.white_dn - black
        if scale <= 0:
            raise InvalidParameterError(
                "black_level_dn", black, f"below the sensor's white level {sensor.white_dn:g} DN"
            )
        wb = auto_white_balance(sensor) if self.white_balance is None else self.white_balance
        t = torch.diag(torch.tensor(wb, dtype=torch.float64)) * (self.digital_gain / scale)
        if self.color_matrix is not None:
            t = torch.tensor(self.color_matrix, dtype=torch.float64).view(3, 3) @ t
        return t, float(black)

    def process(self, dn: torch.Tensor, sensor: Sensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DN ``(B, 1|3, h, w)`` → ``(linear_rgb, image)``, both ``(B, 3, h, w)`` in [0, 1].

        Fast path: one demosaicking convolution on the 2×2 super-pixel planes, then black level,
        normalisation, white balance, gain and colour matrix as one 3×3 transform (for ADCs above
        18 bits folded into the convolution, accumulated in float64), then clip and encode.
        :meth:`process_reference` runs the same steps one by one.
        """
        t, black = self.colour_transform(sensor)
        # The same bytes for an image in any batch: a float convolution may pick another algorithm
        # (and summation order) for another batch size. Up to 18-bit DN the demosaic's dyadic
        # weights (multiples of 1/16) on integer DN are exact in float32 in any order, and the 3×3
        # colour transform runs as elementwise ops in a fixed order; above, one fused convolution
        # accumulates in float64 and rounds once.
        if sensor.cfa is not None and sensor.adc_max_dn <= _EXACT_DEMOSAIC_MAX_DN:
            lin = _apply_colour(_demosaic(dn, sensor.cfa, self.demosaic), t, black)
        elif sensor.cfa is not None:
            lin = _demosaic(dn, sensor.cfa, self.demosaic, transform=t, black=black)
        else:
            lin = _apply_colour(dn, t, black)
        lin = straight_through_(lin, lambda t: t.clamp_(0.0, 1.0))
        img = linear_to_srgb(lin) if self.output == "srgb" else lin
        return lin, img

    def process_reference(
        self, dn: torch.Tensor, sensor: Sensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unfused reference of :meth:`process`: ``(raw, linear_rgb, image)``."""
        raw = self.normalise(dn, sensor)
        if sensor.cfa is not None:
            fn = demosaic_malvar if self.demosaic == "malvar" else demosaic_bilinear
            rgb = fn(raw, sensor.cfa)
        else:
            rgb = raw
        wb = auto_white_balance(sensor) if self.white_balance is None else self.white_balance
        gains = torch.tensor(wb, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1) * self.digital_gain
        lin = rgb * gains
        if self.color_matrix is not None:
            m = torch.tensor(self.color_matrix, device=rgb.device, dtype=rgb.dtype).view(3, 3)
            lin = torch.einsum("ij,bjhw->bihw", m, lin)
        lin = lin.clamp(0.0, 1.0)
        img = linear_to_srgb(lin) if self.output == "srgb" else lin
        return raw, lin, img


#: Largest ADC output for which :meth:`ISP.process` demosaics in the images' float32 exactly:
#: multiples of 1/16 below 2²⁰ (the kernels' absolute sums are ≤ 2.5) are exact in float32
_EXACT_DEMOSAIC_MAX_DN = 2**18


def _apply_colour(rgb: torch.Tensor, t: torch.Tensor, black: float) -> torch.Tensor:
    """``t @ (rgb − black)`` per pixel for a 3×3 ``t`` (float64): elementwise ops in a fixed order
    (a diagonal ``t``, white balance and gain only, is one multiply and one add)."""
    tt = t.to(device=rgb.device, dtype=rgb.dtype)
    bias = (-black * t.sum(1)).to(device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    if bool((t == torch.diag(torch.diagonal(t))).all()):
        return torch.addcmul(bias, rgb, tt.diagonal().view(1, 3, 1, 1))  # one pass
    lin = rgb[:, 0:1] * tt[:, 0].view(1, 3, 1, 1)
    lin = lin + rgb[:, 1:2] * tt[:, 1].view(1, 3, 1, 1)
    return lin + rgb[:, 2:3] * tt[:, 2].view(1, 3, 1, 1) + bias


# Malvar–He–Cutler (ICASSP 2004) 5×5 filters, scaled by 1/8.
_MHC_G_AT_RB = [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]
_MHC_RB_AT_G_ROW = [
    [0, 0, 0.5, 0, 0],
    [0, -1, 0, -1, 0],
    [-1, 4, 5, 4, -1],
    [0, -1, 0, -1, 0],
    [0, 0, 0.5, 0, 0],
]
_MHC_RB_AT_BR = [
    [0, 0, -1.5, 0, 0],
    [0, 2, 0, 2, 0],
    [-1.5, 0, 6, 0, -1.5],
    [0, 2, 0, 2, 0],
    [0, 0, -1.5, 0, 0],
]
_CH = {"R": 0, "G": 1, "B": 2}


def _site_kernel(pattern: str, py: int, px: int, c: int, kind: str) -> torch.Tensor:
    """5×5 full-resolution kernel estimating colour ``c`` at the site of parity ``(py, px)``."""
    k = torch.zeros(5, 5, dtype=torch.float64)
    site = _CH[pattern[py * 2 + px]]
    if site == c:
        k[2, 2] = 1.0
        return k
    row_colours = {_CH[pattern[py * 2]], _CH[pattern[py * 2 + 1]]}
    if kind == "malvar":
        if c == 1:
            return torch.tensor(_MHC_G_AT_RB, dtype=torch.float64) / 8
        if site == 1:
            m = torch.tensor(_MHC_RB_AT_G_ROW, dtype=torch.float64) / 8
            return m if c in row_colours else m.t().contiguous()
        return torch.tensor(_MHC_RB_AT_BR, dtype=torch.float64) / 8
    if c == 1:  # green at R/B: 4-neighbour mean
        k[1, 2] = k[3, 2] = k[2, 1] = k[2, 3] = 0.25
    elif site == 1:  # R/B at green: the two neighbours along the row or the column
        if c in row_colours:
            k[2, 1] = k[2, 3] = 0.5
        else:
            k[1, 2] = k[3, 2] = 0.5
    else:  # R at B or B at R: 4 diagonal neighbours
        k[1, 1] = k[1, 3] = k[3, 1] = k[3, 3] = 0.25
    return k


@lru_cache(maxsize=16)
def _demosaic_weight(pattern: str, kind: str) -> torch.Tensor:
    """Dense ``(12, 4, 3, 3)`` conv weight acting on the 2×2 super-pixel planes.

    Output channel ``c·4 + py·2 + px`` is colour ``c`` at sub-position ``(py, px)``; input
    channel ``qy·2 + qx`` is the raw sample at sub-position ``(qy, qx)`` (pixel_unshuffle order).
    """
    w = torch.zeros(12, 4, 3, 3, dtype=torch.float64)
    for c in range(3):
        for py in range(2):
            for px in range(2):
                k = _site_kernel(pattern, py, px, c, kind)
                for dy in range(-2, 3):
                    for dx in range(-2, 3):
                        v = float(k[dy + 2, dx + 2])
                        if v == 0.0:
                            continue
                        qy, qx = (py + dy) % 2, (px + dx) % 2
                        w[c * 4 + py * 2 + px, qy * 2 + qx, (py + dy) // 2 + 1, (px + dx) // 2 + 1] += v
    return w


@lru_cache(maxsize=32)
def _fused_weight(
    pattern: str, kind: str, transform: tuple[float, ...] | None, black: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Demosaic weight with the 3×3 colour ``transform`` folded in, and the matching bias."""
    weight = _demosaic_weight(pattern, kind)
    if transform is None:
        return weight, None
    t = torch.tensor(transform, dtype=torch.float64).view(3, 3)
    weight = torch.einsum("ij,jpqyx->ipqyx", t, weight.view(3, 4, 4, 3, 3)).reshape(12, 4, 3, 3)
    # every demosaic kernel sums to 1, so the black level maps to a constant per colour
    bias = (-black * t.sum(1)).repeat_interleave(4)
    return weight, bias


def _demosaic(
    raw: torch.Tensor, pattern: str, kind: str, transform: torch.Tensor | None = None, black: float = 0.0
) -> torch.Tensor:
    """Demosaic ``(B, 1, H, W)``; with ``transform`` (3×3) return ``transform @ (rgb − black)``."""
    _, _, h, w = raw.shape
    oh, ow = h % 2, w % 2
    mode = "reflect" if min(h, w) > 3 else "replicate"
    x = F.pad(raw, (2, 2 + ow, 2, 2 + oh), mode=mode)  # reflect by 2 keeps the CFA phase
    planes = F.pixel_unshuffle(x, 2)  # (B, 4, h/2 + 2, w/2 + 2)
    key = None if transform is None else tuple(transform.flatten().tolist())
    weight, bias = _fused_weight(pattern.upper(), kind, key, float(black))
    if transform is None:  # the dyadic demosaic weights alone, exact in any float dtype
        out = F.conv2d(planes, weight.to(device=raw.device, dtype=raw.dtype))
    else:  # a folded colour transform: accumulate in float64, round once (see ISP.process)
        bias = None if bias is None else bias.to(device=raw.device)
        out = F.conv2d(planes.to(torch.float64), weight.to(device=raw.device), bias).to(raw.dtype)
    out = F.pixel_shuffle(out, 2)  # (B, 3, h + oh, w + ow)
    return out[..., :h, :w] if (oh or ow) else out


def demosaic_bilinear(raw: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Bilinear demosaic of a Bayer mosaic ``(B, 1, H, W)`` → ``(B, 3, H, W)``.

    Each missing sample is the mean of its nearest same-colour neighbours (4-neighbour for
    green, row/column pair or 4 diagonals for red and blue); borders are reflected. A
    constant colour and a linear ramp are reproduced exactly. Implemented as one dense
    convolution on the 2×2 super-pixel planes (``pixel_unshuffle``), then ``pixel_shuffle``.
    """
    return _demosaic(raw, pattern, "bilinear")


def demosaic_malvar(raw: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Malvar–He–Cutler gradient-corrected bilinear demosaic ``(B, 1, H, W)`` → ``(B, 3, H, W)``.

    Malvar, He & Cutler, "High-quality linear interpolation for demosaicing of Bayer-patterned
    color images", ICASSP 2004 (5×5 filters with gain 1/8); borders are reflected.
    """
    return _demosaic(raw, pattern, "malvar")
