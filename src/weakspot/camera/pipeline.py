"""The camera: scene → optics → sensor → ISP, with every intermediate exposed.

Example:
    >>> import torch
    >>> from weakspot.camera import Camera, Sensor
    >>> cam = Camera(sensor=Sensor(pixel_size_um=5.6))
    >>> cap = cam.capture(torch.rand(2, 3, 64, 64), generator=0)
    >>> tuple(cap.image.shape), tuple(cap.dn.shape)  # fewer, larger pixels; Bayer mosaic
    ((2, 3, 32, 32), (2, 1, 32, 32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from weakspot._checks import RANGE_TOLERANCE, check_images
from weakspot.camera.isp import ISP
from weakspot.camera.optics import Optics
from weakspot.camera.scene import PHOTONS_PER_LUX, REC709_LUMA, Scene, srgb_to_linear
from weakspot.camera.sensor import Sensor, mosaic
from weakspot.errors import InvalidImageError, InvalidParameterError, UnknownNameError
from weakspot.random import GeneratorLike, batch_keys

__all__ = ["Camera", "Capture", "resample_to"]


@dataclass
class Capture:
    """Every stage of one capture. Shapes: ``B`` images, input ``H × W``, sensor ``h × w``.

    Attributes:
        srgb: the input scene as sRGB ``(B, 3, H, W)``.
        photons: mean photons reaching each photodiode through its own filter during the
            exposure (``(B, 1, h, w)`` Bayer mosaic, or ``(B, 3, h, w)`` without CFA).
        electrons: collected charge after shot noise, dark current, fixed pattern and the
            full-well clip (integer counts, same shape as ``photons``).
        readout_e: ``electrons`` plus read noise, in e⁻.
        dn: ADC output in digital numbers (integers in ``[0, 2^bits − 1]``).
        linear_rgb: demosaicked, white-balanced, colour-corrected linear image ``(B, 3, h, w)``
            in [0, 1].
        image: the rendered image ``(B, 3, h, w)`` in [0, 1] (sRGB unless the ISP says linear).
        psf: the lens PSF kernels ``(3, k, k)`` on the input grid.
        white_luminance_cd_m2: luminance of linear sRGB 1 per image ``(B, 1, 1, 1)``.

    Computed on first access (the fast path of an in-focus capture never needs them):
        linear: linear sRGB of the scene ``(B, 3, H, W)``.
        luminance_cd_m2: band luminance of the scene ``(B, 3, H, W)`` in cd/m².
        irradiance: photon irradiance on the sensor plane after the lens PSF ``(B, 3, H, W)``,
            photons s⁻¹ µm⁻² per band.
        photons_rgb: mean photons per pixel per band during the exposure ``(B, 3, h, w)``.
        raw: normalised linear raw (mosaic), 0 = black level, 1 = full well.
    """

    srgb: torch.Tensor
    photons: torch.Tensor
    electrons: torch.Tensor
    readout_e: torch.Tensor
    dn: torch.Tensor
    linear_rgb: torch.Tensor
    image: torch.Tensor
    psf: torch.Tensor
    white_luminance_cd_m2: torch.Tensor
    camera: Camera = field(repr=False)
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    exposure_s: torch.Tensor | None = field(default=None, repr=False)  # per-image times, if not the sensor's

    @property
    def pixel_size_um(self) -> float:
        return self.camera.sensor.pixel_size_um

    @property
    def sample_pitch_um(self) -> float:
        return self.camera.scene.pitch_um(self.srgb.shape[-1])

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]

    def _get(self, key: str, fn) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def linear(self) -> torch.Tensor:
        return self._get("linear", lambda: srgb_to_linear(self.srgb))

    @property
    def blurred_linear(self) -> torch.Tensor:
        pitch = self.sample_pitch_um
        return self._get("blurred_linear", lambda: self.camera.optics.blur(self.linear, pitch))

    @property
    def luminance_cd_m2(self) -> torch.Tensor:
        return self.linear * self.white_luminance_cd_m2

    @property
    def irradiance(self) -> torch.Tensor:
        return self.camera.optics.irradiance(self.blurred_linear * self.white_luminance_cd_m2)

    @property
    def photons_rgb(self) -> torch.Tensor:
        cam = self.camera

        def compute() -> torch.Tensor:
            gain = cam._photometric_gain(self.srgb, self.white_luminance_cd_m2)
            return cam.sensor.collect(
                self.blurred_linear, self.sample_pitch_um, gain=gain, exposure_s=self.exposure_s
            )

        return self._get("photons_rgb", compute)

    @property
    def raw(self) -> torch.Tensor:
        return self.camera.isp.normalise(self.dn, self.camera.sensor)


_STAGES = ("scene", "optics", "sensor", "isp")


@dataclass(frozen=True)
class Camera:
    """A physically based camera built from four inspectable stages.

    ``Camera()`` is the default camera: a 100 cd/m² scene, a 6 mm f/2.8 lens in focus
    (diffraction off, see :class:`Optics`), ISETCam's 2.8 µm APS pixel behind an RGGB Bayer
    filter at 1/80 s (the reference white fills ≈ 90 % of the well), and an sRGB ISP.
    """

    scene: Scene = field(default_factory=Scene)
    optics: Optics = field(default_factory=Optics)
    sensor: Sensor = field(default_factory=Sensor)
    isp: ISP = field(default_factory=ISP)

    def __post_init__(self) -> None:
        for name, cls in zip(_STAGES, (Scene, Optics, Sensor, ISP), strict=True):
            if not isinstance(getattr(self, name), cls):
                raise InvalidParameterError(
                    name, type(getattr(self, name)).__name__, f"a weakspot.camera.{cls.__name__}"
                )

    def replace(self, **params: Any) -> Camera:
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

    def _photometric_gain(self, ref: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
        """Photons s⁻¹ µm⁻² per unit of linear sRGB, per image and band ``(B, 3, 1, 1)``."""
        band = torch.tensor(PHOTONS_PER_LUX, device=ref.device, dtype=ref.dtype).view(1, 3, 1, 1)
        return white * (band * self.optics.illuminance_factor)

    def capture(
        self, images: torch.Tensor, generator: GeneratorLike = None, exposure_s: torch.Tensor | None = None
    ) -> Capture:
        """Photograph ``images`` — sRGB ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) in [0, 1].

        ``generator``: ``None``, an int seed, a ``torch.Generator``, a list of ``B`` per-image
        generators or a :class:`~weakspot.random.KeyedBatch` of ``B`` keys (what sweeps pass): it
        is normalised once to one key per image (:func:`~weakspot.random.batch_keys`) and the
        noise is drawn for the whole batch from named streams, so every image's noise depends
        only on its key, never on the rest of the batch.
        Returns a :class:`Capture`; ``capture.image`` has the sensor's resolution.

        ``exposure_s``: optional per-image integration times, a 1-D tensor of ``B`` values in s
        (one capture for a batch of different exposures, as ``(B, 1, 1, 1)`` factors); image ``i``
        equals its capture with ``sensor.exposure_s = exposure_s[i]`` bit for bit.

        Fast path: when the lens does not blur (in focus, no diffraction), every sensor pixel
        sees exactly one input pixel and the sensor has a CFA, the scene → photon chain is
        per pixel, so the input is mosaicked first and only one band per pixel is converted
        (identical numbers, a third of the work). Intermediates it skips are computed on access.
        """
        _check_fast(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        keys = batch_keys(generator, images.shape[0])  # one key per image, normalised once
        if exposure_s is not None:
            exposure_s = _per_image_exposure(exposure_s, images.shape[0])
        h, w = images.shape[-2:]
        pitch = self.scene.pitch_um(w)
        self.sensor.grid(h, w, pitch)  # fail early on impossible geometry
        psf = self.optics.psf(pitch, images.device, images.dtype)
        area = self.sensor.uniform_sampling_area(h, w, pitch)
        cache: dict[str, torch.Tensor] = {}
        if (
            psf.shape[-1] == 1
            and area is not None
            and self.sensor.cfa is not None
            and not self.scene.per_image_mean
        ):
            white = self.scene.white_luminance(images)
            if exposure_s is None:
                gain = self._photometric_gain(images, white) * (area * self.sensor.exposure_s)  # (B, 3, 1, 1)
            else:  # the scalar path's float64 product area · t, rounded to the images' dtype, per image
                t_area = (exposure_s.to(images.device) * area).to(images.dtype).view(-1, 1, 1, 1)
                gain = self._photometric_gain(images, white) * t_area
            if bool((gain == gain[:1]).all()):  # one scale for the batch: a (1, 1, h, w) map
                gain = gain[:1]
            gain_map = mosaic(gain.expand(-1, -1, h, w), self.sensor.cfa)
            photons = srgb_to_linear(mosaic(images, self.sensor.cfa))
            photons = photons.mul_(gain_map)  # fresh from srgb_to_linear: in place with or without a gradient
        else:
            linear = srgb_to_linear(images)
            white = self.scene.white_luminance(linear)
            blurred = self.optics.blur(linear, pitch)  # the PSF is linear: blur relative radiance
            photons_rgb = self.sensor.collect(
                blurred, pitch, gain=self._photometric_gain(images, white), exposure_s=exposure_s
            )
            photons = mosaic(photons_rgb, self.sensor.cfa) if self.sensor.cfa is not None else photons_rgb
            cache = {"linear": linear, "blurred_linear": blurred, "photons_rgb": photons_rgb}
        electrons, readout, dn = self.sensor.expose_photons(photons, keys, exposure_s)
        lin, img = self.isp.process(dn, self.sensor)
        return Capture(
            srgb=images,
            photons=photons,
            electrons=electrons,
            readout_e=readout,
            dn=dn,
            linear_rgb=lin,
            image=img,
            psf=psf,
            white_luminance_cd_m2=white,
            camera=self,
            _cache=cache,
            exposure_s=exposure_s,
        )

    def __call__(self, images: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        """The rendered image resampled to the input's ``H × W`` (see :func:`resample_to`)."""
        c = images.shape[1] if isinstance(images, torch.Tensor) and images.ndim == 4 else 3
        h, w = images.shape[-2:]
        out = resample_to(self.capture(images, generator).image, (int(h), int(w)))
        return to_channels(out, c)


def _per_image_exposure(exposure_s, batch: int) -> torch.Tensor:
    """Per-image exposure times as a float64 ``(B,)`` tensor, checked (in s, within [0, 3600])."""
    t = torch.as_tensor(exposure_s, dtype=torch.float64).reshape(-1)
    if t.numel() != batch:
        raise InvalidParameterError(
            "exposure_s", f"{t.numel()} values", f"one per image, exactly {batch} (in s)"
        )
    lo, hi = float(t.min()), float(t.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 3600:
        raise InvalidParameterError("exposure_s", f"[{lo:g}, {hi:g}]", "times in [0, 3600] s")
    return t


def _check_fast(images: torch.Tensor) -> None:
    """:func:`~weakspot._checks.check_images` with one fused min/max pass on the happy path."""
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or not images.is_floating_point()
        or images.shape[1] not in (1, 3)
        or images.numel() == 0
    ):
        check_images(images)  # raises with the precise message
        raise InvalidImageError("images must be a (B, 1|3, H, W) float tensor in [0, 1]")  # pragma: no cover
    with torch.no_grad():
        lo_t, hi_t = torch.aminmax(images.detach())
        lo, hi = float(lo_t), float(hi_t)  # NaN propagates through min/max, Inf shows up directly
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        check_images(images)
        raise InvalidImageError(
            f"'images' must be finite and in [0, 1], got [{lo:.4g}, {hi:.4g}]"
        )  # pragma: no cover


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
