"""The camera: scene → optics → sensor → ISP, with every intermediate exposed.

Example:
    >>> import torch
    >>> from weakspot.camera import Camera, Sensor
    >>> cam = Camera(sensor=Sensor(pixel_size_um=5.6))
    >>> cap = cam.capture(torch.rand(2, 3, 64, 64), generator=0)
    >>> tuple(cap.image.shape), tuple(cap.dn.shape)   # fewer, larger pixels; Bayer mosaic
    ((2, 3, 32, 32), (2, 1, 32, 32))
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from weakspot._checks import check_images
from weakspot.camera.isp import ISP
from weakspot.camera.optics import Optics
from weakspot.camera.scene import REC709_LUMA, Scene
from weakspot.camera.sensor import Sensor
from weakspot.errors import InvalidParameterError, UnknownNameError
from weakspot.random import GeneratorLike, as_generators

__all__ = ["Camera", "Capture", "resample_to"]


@dataclass
class Capture:
    """Every stage of one capture. Shapes: ``B`` images, input ``H × W``, sensor ``h × w``.

    Attributes:
        linear: linear sRGB of the scene ``(B, 3, H, W)``.
        luminance_cd_m2: band luminance of the scene ``(B, 3, H, W)`` in cd/m².
        irradiance: photon irradiance on the sensor plane after the lens PSF
            ``(B, 3, H, W)`` in photons s⁻¹ µm⁻² per band.
        photons_rgb: mean photons per pixel per band during the exposure ``(B, 3, h, w)``.
        photons: mean photons reaching each photodiode through its own filter
            (``(B, 1, h, w)`` Bayer mosaic, or ``(B, 3, h, w)`` without CFA).
        electrons: collected charge after shot noise, dark current, fixed pattern and the
            full-well clip (integer counts, same shape as ``photons``).
        readout_e: ``electrons`` plus read noise, in e⁻.
        dn: ADC output in digital numbers (integers in ``[0, 2^bits − 1]``).
        raw: normalised linear raw, 0 = black level, 1 = full well.
        linear_rgb: demosaicked, white-balanced, colour-corrected linear image ``(B, 3, h, w)``.
        image: the rendered image ``(B, 3, h, w)`` in [0, 1] (sRGB unless the ISP says linear).
        psf: the lens PSF kernels ``(3, k, k)`` on the input grid.
        pixel_size_um, sample_pitch_um: sensor pitch and input-pixel pitch in µm.
    """

    linear: torch.Tensor
    luminance_cd_m2: torch.Tensor
    irradiance: torch.Tensor
    photons_rgb: torch.Tensor
    photons: torch.Tensor
    electrons: torch.Tensor
    readout_e: torch.Tensor
    dn: torch.Tensor
    raw: torch.Tensor
    linear_rgb: torch.Tensor
    image: torch.Tensor
    psf: torch.Tensor
    pixel_size_um: float
    sample_pitch_um: float
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]


_STAGES = ("scene", "optics", "sensor", "isp")


@dataclass(frozen=True)
class Camera:
    """A physically based camera built from four inspectable stages.

    ``Camera()`` is the default camera: a 100 cd/m² scene, a 6 mm f/2.8 lens in focus with
    diffraction, ISETCam's 2.8 µm APS pixel behind an RGGB Bayer filter at 1/80 s (the
    reference white fills ≈ 90 % of the well), and an sRGB ISP.
    """

    scene: Scene = field(default_factory=Scene)
    optics: Optics = field(default_factory=Optics)
    sensor: Sensor = field(default_factory=Sensor)
    isp: ISP = field(default_factory=ISP)

    def __post_init__(self) -> None:
        for name, cls in zip(_STAGES, (Scene, Optics, Sensor, ISP)):
            if not isinstance(getattr(self, name), cls):
                raise InvalidParameterError(name, type(getattr(self, name)).__name__, f"a weakspot.camera.{cls.__name__}")

    def replace(self, **params: Any) -> "Camera":
        """A copy with named stage parameters changed, e.g. ``cam.replace(exposure_s=0.002)``."""
        stages = {s: getattr(self, s) for s in _STAGES}
        owners = {f.name: s for s in _STAGES for f in fields(stages[s])}
        updates: dict[str, dict[str, Any]] = {}
        for k, v in params.items():
            if k not in owners:
                raise UnknownNameError("camera parameter", k, sorted(owners))
            updates.setdefault(owners[k], {})[k] = v
        for s, kw in updates.items():
            stages[s] = replace(stages[s], **kw)
        return Camera(**stages)

    def capture(self, images: torch.Tensor, generator: GeneratorLike = None) -> Capture:
        """Photograph ``images`` — sRGB ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) in [0, 1].

        ``generator``: ``None``, an int seed, a ``torch.Generator`` or a list of ``B``
        per-image generators (then every image's noise depends only on its generator).
        Returns a :class:`Capture`; ``capture.image`` has the sensor's resolution.
        """
        check_images(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        gens = as_generators(generator, images.shape[0])
        pitch = self.scene.sample_pitch_um
        self.sensor.grid(images.shape[-2], images.shape[-1], pitch)  # fail early on impossible geometry
        linear, lum = self.scene.radiance(images)
        irr0 = self.optics.irradiance(lum)
        psf = self.optics.psf(pitch, images.device, images.dtype)
        irradiance = self.optics.blur(irr0, pitch)
        photons_rgb = self.sensor.collect(irradiance, pitch)
        photons, electrons, readout, dn = self.sensor.expose(photons_rgb, gens)
        raw, lin, img = self.isp.process(dn, self.sensor)
        return Capture(
            linear=linear, luminance_cd_m2=lum, irradiance=irradiance, photons_rgb=photons_rgb,
            photons=photons, electrons=electrons, readout_e=readout, dn=dn, raw=raw,
            linear_rgb=lin, image=img, psf=psf, pixel_size_um=self.sensor.pixel_size_um,
            sample_pitch_um=pitch,
        )

    def __call__(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """The rendered image resampled to the input's ``H × W`` (see :func:`resample_to`)."""
        c = images.shape[1] if isinstance(images, torch.Tensor) and images.ndim == 4 else 3
        out = resample_to(self.capture(images, generator).image, tuple(images.shape[-2:]))
        return to_channels(out, c)


def resample_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a sensor image ``(B, C, h, w)`` onto an ``H × W`` grid covering the same field.

    Bilinear interpolation with half-pixel centres (``align_corners=False``); when
    shrinking, with antialiasing (a triangle filter as wide as the scale factor). This is
    what a viewer shows when it displays a capture at the original size: larger pixels
    look soft (no block artefacts), never sharper than they were sampled. Identity when the
    sizes match.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrink = image.shape[-2] > size[0] or image.shape[-1] > size[1]
    out = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp(0.0, 1.0)


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` → ``channels`` (1: Rec. 709 luma of the sRGB values, 3: unchanged)."""
    if channels == 3:
        return image
    w = torch.tensor(REC709_LUMA, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True).clamp(0.0, 1.0)
