"""Camera degradations: the default :class:`~weakspot.camera.Camera` with one parameter moved.

Each entry photographs the input with the physically based camera and returns an image
on the input's ``H × W`` grid (so it composes with everything else):

* ``pixel_size`` — the same sensor design at another pitch (fixed sensor size, so a larger
  pixel means fewer pixels; well capacity ∝ pixel area, see
  :meth:`~weakspot.camera.Sensor.scaled_to_pixel`). The low-resolution capture is
  resampled back with bilinear interpolation (:func:`~weakspot.camera.resample_to`).
* ``exposure`` — integration time in s. The ISP gain is fixed, so a shorter exposure gives
  a darker *and* noisier picture; ``iso_gain=true`` raises the digital gain by
  ``default / exposure_s`` instead (what auto-ISO does: same brightness, more noise).
* ``defocus`` — focus error in diopters (blur circle ``f² |ΔD| / N``).

Grey ``(B, 1, H, W)`` inputs are photographed as neutral scenes and returned as Rec. 709
luma. Every call is seeded by ``generator`` (Poisson shot noise, read noise).
"""

from __future__ import annotations

import torch

from weakspot.camera import Camera
from weakspot.camera.pipeline import resample_to, to_channels
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike

__all__ = ["pixel_size", "exposure", "defocus", "DEFAULT_CAMERA"]

#: The camera every registered camera degradation starts from.
DEFAULT_CAMERA = Camera()
_DEFAULT_EXPOSURE_S = DEFAULT_CAMERA.sensor.exposure_s


def _shoot(camera: Camera, images: torch.Tensor, generator: GeneratorLike) -> torch.Tensor:
    out = camera.capture(images, generator).image
    return to_channels(resample_to(out, tuple(images.shape[-2:])), images.shape[1])


@register(
    "pixel_size",
    params=[
        Param("pixel_size_um", 2.8, "µm", 0.5, 100.0,
              "pixel pitch on a sensor of fixed size (fill factor and well density constant)"),
    ],
    severities={1: {"pixel_size_um": 4.0}, 2: {"pixel_size_um": 5.0}, 3: {"pixel_size_um": 6.5},
                4: {"pixel_size_um": 8.0}, 5: {"pixel_size_um": 11.0}},
    family="camera",
    axis="pixel_size_um",
    differentiable=True,
)
def pixel_size(images: torch.Tensor, *, generator: GeneratorLike = None, pixel_size_um: float = 2.8) -> torch.Tensor:
    """Photograph with larger (or smaller) pixels on the same sensor: fewer pixels, less noise.

    The sensor keeps its physical size, so ``rows = floor(H · 2.8 µm / pixel_size_um)``; each
    pixel collects light ∝ its area and holds a well ∝ its area. The capture is resampled to
    the input grid bilinearly (antialiased when shrinking). A 224² input at 11 µm is
    sensed with 57 × 57 pixels.
    """
    sensor = DEFAULT_CAMERA.sensor.scaled_to_pixel(float(pixel_size_um))
    return _shoot(Camera(DEFAULT_CAMERA.scene, DEFAULT_CAMERA.optics, sensor, DEFAULT_CAMERA.isp), images, generator)


@register(
    "exposure",
    params=[
        Param("exposure_s", _DEFAULT_EXPOSURE_S, "s", 0.0, 10.0, "integration time"),
        Param("iso_gain", False, "", doc="compensate brightness with digital gain (auto-ISO)", type=bool),
    ],
    severities={1: {"exposure_s": 0.005}, 2: {"exposure_s": 0.0025}, 3: {"exposure_s": 0.001},
                4: {"exposure_s": 0.0005}, 5: {"exposure_s": 0.00025}},
    family="camera",
    axis="exposure_s",
    differentiable=True,
)
def exposure(
    images: torch.Tensor, *, generator: GeneratorLike = None, exposure_s: float = _DEFAULT_EXPOSURE_S,
    iso_gain: bool = False,
) -> torch.Tensor:
    """Photograph with another exposure time (default 1/80 s; severities 1/200 … 1/4000 s).

    Fewer photons: darker, with relatively more shot and read noise and coarser quantisation;
    a longer exposure clips highlights per channel at the full well. With ``iso_gain`` the ISP
    multiplies by ``1/80 s ÷ exposure_s`` so brightness is kept and only the noise grows.
    """
    cam = DEFAULT_CAMERA.replace(exposure_s=float(exposure_s))
    if iso_gain and exposure_s > 0:
        cam = cam.replace(digital_gain=_DEFAULT_EXPOSURE_S / float(exposure_s))
    return _shoot(cam, images, generator)


@register(
    "defocus",
    params=[Param("defocus_diopters", 0.0, "D", 0.0, 20.0, "focus error |1/u0 − 1/u| of the 6 mm f/2.8 lens")],
    severities={1: {"defocus_diopters": 0.5}, 2: {"defocus_diopters": 1.0}, 3: {"defocus_diopters": 2.0},
                4: {"defocus_diopters": 3.0}, 5: {"defocus_diopters": 4.0}},
    family="camera",
    axis="defocus_diopters",
    differentiable=True,
)
def defocus(images: torch.Tensor, *, generator: GeneratorLike = None, defocus_diopters: float = 0.0) -> torch.Tensor:
    """Photograph out of focus: a uniform blur disk of diameter ``f² |ΔD| / N`` (+ diffraction).

    With the default 6 mm f/2.8 lens and 2.8 µm sampling the disk is 4.6 px wide per diopter
    (severities 0.5–4 D ⇒ 2.3–18 px), comparable to ImageNet-C ``defocus_blur``.
    """
    return _shoot(DEFAULT_CAMERA.replace(defocus_diopters=float(defocus_diopters)), images, generator)
