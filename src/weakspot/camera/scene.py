"""Scene stage: an sRGB photo → linear band radiance expressed as luminance (cd/m²).

Band model (documented assumption, see ``docs/camera.md``)
-----------------------------------------------------------
The three channels of linear sRGB are read as the radiance of three contiguous
100-nm bands — R = 600–700 nm, G = 500–600 nm, B = 400–500 nm — and the
reference white (linear 1, 1, 1) is an equal-energy spectrum over 400–700 nm.
From the CIE 1924 photopic luminosity function V(λ) and the photon energy hc/λ,
one lux of that white carries :data:`PHOTONS_PER_LUX` photons s⁻¹ µm⁻² in each
band (≈ 1.14·10⁴ in total; the textbook figure for 555-nm light is 4.1·10³ per
band-less lux, for broadband white ≈ 1.1·10⁴).

Luminance scale
---------------
``Scene.mean_luminance_cd_m2`` is the mean luminance of a *typical* photo: an
image whose mean linear luminance ``Y = 0.2126 R + 0.7152 G + 0.0722 B`` equals
``mid_grey`` (0.18) is given exactly that mean luminance, and every image uses
the same scale, so a dark photo stays dark (``luminance_cd_m2 = Y / mid_grey ·
mean_luminance_cd_m2``). With ``per_image_mean=True`` every image is instead
scaled to that mean luminance, as ISETCam's ``sceneAdjustLuminance`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakspot._checks import check_range
from weakspot.errors import InvalidParameterError

__all__ = [
    "Scene",
    "srgb_to_linear",
    "linear_to_srgb",
    "BAND_EDGES_NM",
    "BAND_CENTRES_NM",
    "PHOTONS_PER_LUX",
    "REC709_LUMA",
    "scene_luminance",
    "DEFAULT_FIELD_WIDTH_MM",
]

#: Width (mm) of the scene's optical image used by the camera degradations: 224 pixels of 2.8 µm.
DEFAULT_FIELD_WIDTH_MM = 0.6272

#: (low, high) wavelength of the R, G, B bands in nm.
BAND_EDGES_NM: tuple[tuple[float, float], ...] = ((600.0, 700.0), (500.0, 600.0), (400.0, 500.0))
#: Centre wavelength of each band in nm (used for diffraction).
BAND_CENTRES_NM: tuple[float, ...] = tuple((a + b) / 2 for a, b in BAND_EDGES_NM)
#: Rec. 709 / sRGB luminance weights of linear R, G, B.
REC709_LUMA: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)

# CIE 1924 photopic luminous efficiency V(λ), 400–700 nm in 10-nm steps.
_V_LAMBDA = (
    0.0004,
    0.0012,
    0.0040,
    0.0116,
    0.0230,
    0.0380,
    0.0600,
    0.0910,
    0.1390,
    0.2080,
    0.3230,
    0.5030,
    0.7100,
    0.8620,
    0.9540,
    0.9950,
    0.9950,
    0.9520,
    0.8700,
    0.7570,
    0.6310,
    0.5030,
    0.3810,
    0.2650,
    0.1750,
    0.1070,
    0.0610,
    0.0320,
    0.0170,
    0.0082,
    0.0041,
)
_KM_LM_PER_W = 683.0  # maximum luminous efficacy
_H = 6.62607015e-34  # Planck constant, J s
_C = 2.99792458e8  # speed of light, m/s


def _photons_per_lux() -> tuple[float, float, float]:
    """Photons s⁻¹ µm⁻² per lux in each band for equal-energy white (trapezoid rule)."""
    wl = [400.0 + 10.0 * i for i in range(len(_V_LAMBDA))]
    integral_v = sum(0.5 * (_V_LAMBDA[i] + _V_LAMBDA[i + 1]) * 10.0 for i in range(len(wl) - 1))  # nm
    # spectral irradiance k W m⁻² nm⁻¹ gives 683·k·∫V dλ lux, so 1 lux ⇒ k = 1/(683 ∫V)
    k = 1.0 / (_KM_LM_PER_W * integral_v)
    out = []
    for lo, hi in BAND_EDGES_NM:
        # ∫ k λ/(h c) dλ with λ in m and dλ in nm: k (hi² − lo²)/2 · 1e-9 / (h c)  [m⁻² s⁻¹]
        per_m2 = k * (hi**2 - lo**2) / 2.0 * 1e-9 / (_H * _C)
        out.append(per_m2 * 1e-12)  # → µm⁻²
    return tuple(out)  # type: ignore[return-value]


#: Photons s⁻¹ µm⁻² per lux of image-plane illuminance of equal-energy white, per band (R, G, B).
PHOTONS_PER_LUX: tuple[float, float, float] = _photons_per_lux()


def _pow_per_image(y: torch.Tensor, exponent: float) -> torch.Tensor:
    """``y ** exponent`` whose bytes for one image never depend on the rest of the batch.

    A vectorised CPU ``pow`` takes a scalar path (which may differ by one ulp) for the tail of
    every thread's chunk. When an image's element count is a multiple of 32 × threads (224²,
    256², 512² …) no element of any batch falls in a tail and the batched call is safe; otherwise
    (28 × 28, 299² …) it runs image by image. In place: ``y`` must be a fresh intermediate (with a
    gradient, autograd records the in-place op; the numbers are the same either way).
    """
    batched = (
        y.ndim == 0
        or y.shape[0] <= 1
        or y.device.type != "cpu"
        or y[0].numel() % (32 * torch.get_num_threads()) == 0
    )
    if batched:
        return y.pow_(exponent)
    for i in range(y.shape[0]):
        y[i].pow_(exponent)
    return y


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (differentiable, finite gradient at 0).

    Computed as ``p(max(x, t)) + min(x − t, 0)/12.92`` with ``p`` the power branch and
    ``t = 0.04045``: the same as the piecewise definition (the branches meet at ``t`` to within
    3e-9), without a mask.
    """
    y = x.clamp_min(0.04045)
    below = x.clamp_max(0.04045)
    y = _pow_per_image(y.mul_(1 / 1.055).add_(0.055 / 1.055), 2.4)
    return y.add_(below.sub_(0.04045).mul_(1 / 12.92))


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1] (differentiable, finite gradient at 0).

    Written as ``min(12.92 x, 1.055 max(x, t)^(1/2.4) − 0.055)`` with ``t = 0.0031308``, which
    equals the piecewise definition (the linear branch lies above the power branch beyond ``t``
    and below it before) and needs no mask.
    """
    y = x.clamp_min(0.0031308)
    y = _pow_per_image(y, 1 / 2.4).mul_(1.055).sub_(0.055)
    return y.clamp_max_(x * 12.92)  # min(power branch, linear branch), in place on the fresh y


def scene_luminance(linear: torch.Tensor) -> torch.Tensor:
    """Relative luminance ``Y`` ``(B, 1, H, W)`` of linear sRGB ``(B, 3, H, W)`` (Rec. 709 weights)."""
    w = torch.tensor(REC709_LUMA, device=linear.device, dtype=linear.dtype).view(1, 3, 1, 1)
    return (linear * w).sum(1, keepdim=True)


@dataclass(frozen=True)
class Scene:
    """How a photo becomes a radiometric scene.

    Attributes:
        mean_luminance_cd_m2: mean luminance of a typical photo (mean linear Y = ``mid_grey``),
            in cd/m². 100 cd/m² (ISETCam's default scene) is a bright indoor / overcast scene.
        mid_grey: linear luminance of the "typical photo" anchor (0.18, photographic mid-grey).
        per_image_mean: scale every image to ``mean_luminance_cd_m2`` (ISETCam behaviour)
            instead of using one scale for all images.
        sample_pitch_um: size of one input pixel projected on the sensor plane, in µm, used
            when ``field_width_mm`` is ``None``. The default (2.8 µm) equals the default pixel,
            so the default sensor samples the photo 1:1 whatever its resolution.
        field_width_mm: width of the photo's optical image on the sensor plane in mm, or
            ``None``. When set, an input ``W`` pixels wide is sampled at
            ``field_width_mm · 1000 / W`` µm per input pixel, so a pixel size means the same
            sampling of the scene at any input resolution (a 224² and a 448² copy of a photo
            give the same sensor). :data:`DEFAULT_FIELD_WIDTH_MM` (0.6272 mm = 224 default
            pixels of 2.8 µm) is what the registered camera degradations use.
    """

    mean_luminance_cd_m2: float = 100.0
    mid_grey: float = 0.18
    per_image_mean: bool = False
    sample_pitch_um: float = 2.8
    field_width_mm: float | None = None

    def pitch_um(self, width_px: int) -> float:
        """µm per input pixel on the sensor plane for an input ``width_px`` pixels wide."""
        if self.field_width_mm is None:
            return float(self.sample_pitch_um)
        return float(self.field_width_mm) * 1000.0 / int(width_px)

    def __post_init__(self) -> None:
        if self.field_width_mm is not None:
            check_range("field_width_mm", self.field_width_mm, 0.0, 1e3, low_inclusive=False, unit="mm")
        check_range("mean_luminance_cd_m2", self.mean_luminance_cd_m2, 0.0, 1e7, unit="cd/m²")
        check_range("mid_grey", self.mid_grey, 0.0, 1.0, low_inclusive=False)
        check_range("sample_pitch_um", self.sample_pitch_um, 0.0, 1e4, low_inclusive=False, unit="µm")
        if not isinstance(self.per_image_mean, bool):
            raise InvalidParameterError("per_image_mean", self.per_image_mean, "true or false")

    def white_luminance(self, linear: torch.Tensor) -> torch.Tensor:
        """Luminance (cd/m²) of linear value 1 for each image, shape ``(B, 1, 1, 1)``."""
        b = linear.shape[0]
        if self.per_image_mean:
            y = scene_luminance(linear).mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            return self.mean_luminance_cd_m2 / y
        s = self.mean_luminance_cd_m2 / self.mid_grey
        return torch.full((b, 1, 1, 1), s, device=linear.device, dtype=linear.dtype)

    def radiance(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sRGB ``(B, 3, H, W)`` in [0, 1] → ``(linear, band_luminance_cd_m2)``.

        ``band_luminance_cd_m2[:, c]`` is the luminance (cd/m²) an equal-energy white of
        the same band-``c`` radiance would have; multiply by the optics' illuminance factor
        and :data:`PHOTONS_PER_LUX` to get photon irradiance.
        """
        linear = srgb_to_linear(images)
        return linear, linear * self.white_luminance(linear)
