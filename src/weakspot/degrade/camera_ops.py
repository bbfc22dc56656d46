"""Camera degradations: the default :class:`~weakspot.camera.Camera` with one parameter moved.

Each entry photographs the input with the physically based camera and returns an image
on the input's ``H × W`` grid (so it composes with everything else):

* ``pixel_size`` — the same sensor design at another pitch (fixed sensor size, so a larger
  pixel means fewer pixels). By default the well stays the same (ISETCam's 'size constant
  fill factor'): a larger pixel at the same exposure brightens and clips per channel;
  ``well="area"`` scales the well with the pixel area instead and ``auto_exposure=true``
  shortens the exposure by the area ratio (see :meth:`~weakspot.camera.Sensor.scaled_to_pixel`).
  The low-resolution capture is resampled back with bilinear interpolation
  (:func:`~weakspot.camera.resample_to`).
* ``exposure`` — integration time in s. The ISP gain is fixed, so a shorter exposure gives
  a darker *and* noisier picture; ``iso_gain=true`` raises the digital gain by
  ``default / exposure_s`` instead (what auto-ISO does: same brightness, more noise).
* ``defocus`` — focus error in diopters (Hopkins' wave-optics OTF of the 6 mm f/2.8 lens;
  ``defocus_model="geometric"`` for the blur circle ``f² |ΔD| / N``).
* ``camera`` — every physical parameter of the four stages at once, for joint grids
  (``grid: {pixel_size_um: [...], exposure_s: [...]}``).

The scene's optical image is :data:`~weakspot.camera.scene.DEFAULT_FIELD_WIDTH_MM` wide
(224 pixels of 2.8 µm) whatever the input resolution, so a pixel size samples the scene the
same way for a 224² and a 683 × 1024 photo (a 224² input is sensed 1:1 by the default pixel).

Grey ``(B, 1, H, W)`` inputs are photographed as neutral scenes and returned as Rec. 709
luma. Every call is seeded by ``generator`` (Poisson shot noise, read noise).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from weakspot.camera import Camera, Optics, Scene
from weakspot.camera.optics import DEFOCUS_MODELS
from weakspot.camera.pipeline import resample_to, to_channels
from weakspot.camera.scene import DEFAULT_FIELD_WIDTH_MM
from weakspot.camera.sensor import PIXEL_WELL_DESIGNS
from weakspot.degrade.registry import Param, register
from weakspot.random import GeneratorLike, batch_keys

__all__ = ["pixel_size", "exposure", "defocus", "camera", "camera_from_params", "DEFAULT_CAMERA"]

#: The camera every registered camera degradation starts from: ``Camera()`` with a scene whose
#: optical image is :data:`DEFAULT_FIELD_WIDTH_MM` wide at any input resolution.
DEFAULT_CAMERA = Camera(scene=Scene(field_width_mm=DEFAULT_FIELD_WIDTH_MM))
_DEFAULT_EXPOSURE_S = DEFAULT_CAMERA.sensor.exposure_s
_REF_PIXEL_UM = DEFAULT_CAMERA.sensor.pixel_size_um


def _shoot(
    camera: Camera, images: torch.Tensor, generator: GeneratorLike, exposure_s: torch.Tensor | None = None
) -> torch.Tensor:
    out = camera.capture(images, generator, exposure_s=exposure_s).image
    h, w = images.shape[-2:]
    return to_channels(resample_to(out, (int(h), int(w))), images.shape[1])


@register(
    "pixel_size",
    params=[
        Param(
            "pixel_size_um",
            2.8,
            "µm",
            0.5,
            100.0,
            "pixel pitch on a sensor of fixed size (fill factor constant)",
        ),
        Param(
            "well",
            "fixed",
            "",
            doc="'fixed': ISETCam's constant well (bigger pixels brighten and clip); "
            "'area': well ∝ pixel area (constant brightness)",
            type=str,
            choices=PIXEL_WELL_DESIGNS,
        ),
        Param("auto_exposure", False, "", doc="shorten the exposure by the pixel-area ratio", type=bool),
    ],
    severities={
        1: {"pixel_size_um": 4.0},
        2: {"pixel_size_um": 5.0},
        3: {"pixel_size_um": 6.5},
        4: {"pixel_size_um": 8.0},
        5: {"pixel_size_um": 11.0},
    },
    family="camera",
    axis="pixel_size_um",
    differentiable=True,
)
def pixel_size(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    pixel_size_um: float = 2.8,
    well: str = "fixed",
    auto_exposure: bool = False,
) -> torch.Tensor:
    """Photograph with larger (or smaller) pixels on the same sensor: fewer pixels, more light each.

    The sensor keeps its physical size (0.6272 mm wide), so ``cols = floor(627.2 µm /
    pixel_size_um)`` whatever the input resolution: 57 columns at 11 µm. Each pixel collects
    light ∝ its area. With the default ``well="fixed"`` the well and conversion gain are those
    of the 2.8 µm pixel (ISETCam), so at the same exposure a mid-grey brightens by the area
    ratio and bright channels clip (a colour tint); ``well="area"`` keeps the brightness
    (well ∝ area); ``auto_exposure`` divides the exposure by the area ratio. The capture is
    resampled to the input grid bilinearly (antialiased when shrinking).
    """
    sensor = DEFAULT_CAMERA.sensor.scaled_to_pixel(float(pixel_size_um), well=well)
    if auto_exposure:
        sensor = replace(sensor, exposure_s=sensor.exposure_s * (_REF_PIXEL_UM / float(pixel_size_um)) ** 2)
    return _shoot(
        Camera(DEFAULT_CAMERA.scene, DEFAULT_CAMERA.optics, sensor, DEFAULT_CAMERA.isp), images, generator
    )


@register(
    "exposure",
    params=[
        Param("exposure_s", _DEFAULT_EXPOSURE_S, "s", 0.0, 10.0, "integration time"),
        Param("iso_gain", False, "", doc="compensate brightness with digital gain (auto-ISO)", type=bool),
    ],
    severities={
        1: {"exposure_s": 0.005},
        2: {"exposure_s": 0.0025},
        3: {"exposure_s": 0.001},
        4: {"exposure_s": 0.0005},
        5: {"exposure_s": 0.00025},
    },
    family="camera",
    axis="exposure_s",
    differentiable=True,
)
def exposure(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    exposure_s: float = _DEFAULT_EXPOSURE_S,
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
    params=[
        Param("defocus_diopters", 0.0, "D", 0.0, 20.0, "focus error |1/u0 − 1/u| of the 6 mm f/2.8 lens"),
        Param(
            "defocus_model",
            "wave",
            "",
            doc="'wave' (Hopkins' OTF, ISETCam) or 'geometric' (blur disk)",
            type=str,
            choices=DEFOCUS_MODELS,
        ),
    ],
    severities={
        1: {"defocus_diopters": 0.5},
        2: {"defocus_diopters": 1.0},
        3: {"defocus_diopters": 2.0},
        4: {"defocus_diopters": 3.0},
        5: {"defocus_diopters": 4.0},
    },
    family="camera",
    axis="defocus_diopters",
    differentiable=True,
)
def defocus(
    images: torch.Tensor,
    *,
    generator: GeneratorLike = None,
    defocus_diopters: float = 0.0,
    defocus_model: str = "wave",
) -> torch.Tensor:
    """Photograph out of focus: Hopkins' diffraction-limited defocus OTF per band (ISETCam).

    ``w20 = (p²/2) D0 ΔD / (D0 + ΔD)``: 1.04 waves per diopter for the 6 mm f/2.8 lens at
    550 nm. The geometric blur circle (``defocus_model="geometric"``) is ``f² |ΔD| / N`` =
    12.9 µm (4.6 px at 2.8 µm) per diopter; severities 0.5–4 D.
    """
    cam = DEFAULT_CAMERA.replace(defocus_diopters=float(defocus_diopters), defocus_model=defocus_model)
    return _shoot(cam, images, generator)


#: Parameters of the joint ``camera`` degradation: (Param, stage) — every physical knob.
_CAMERA_PARAMS: tuple[tuple[Param, str], ...] = (
    (
        Param(
            "mean_luminance_cd_m2",
            DEFAULT_CAMERA.scene.mean_luminance_cd_m2,
            "cd/m²",
            0.0,
            1e6,
            "mean luminance of a typical photo (mid-grey anchor)",
            low_open=True,
        ),
        "scene",
    ),
    (
        Param(
            "field_width_mm",
            DEFAULT_FIELD_WIDTH_MM,
            "mm",
            0.01,
            100.0,
            "width of the scene's optical image on the sensor plane",
        ),
        "scene",
    ),
    (
        Param("f_number", DEFAULT_CAMERA.optics.f_number, "", 0.5, 64.0, "focal length / aperture diameter"),
        "optics",
    ),
    (
        Param("focal_length_mm", DEFAULT_CAMERA.optics.focal_length_mm, "mm", 1.0, 500.0, "focal length"),
        "optics",
    ),
    (Param("defocus_diopters", 0.0, "D", -20.0, 20.0, "focus error 1/u0 − 1/u"), "optics"),
    (
        Param(
            "defocus_model",
            "wave",
            "",
            doc="'wave' (Hopkins) or 'geometric' (blur disk)",
            type=str,
            choices=DEFOCUS_MODELS,
        ),
        "optics",
    ),
    (Param("diffraction", False, "", doc="in-focus Airy blur of the pupil", type=bool), "optics"),
    (Param("transmittance", 1.0, "", 0.0, 1.0, "fraction of light the lens passes", low_open=True), "optics"),
    (Param("pixel_size_um", _REF_PIXEL_UM, "µm", 0.5, 100.0, "pixel pitch (fixed sensor size)"), "sensor"),
    (
        Param(
            "fill_factor",
            DEFAULT_CAMERA.sensor.fill_factor,
            "",
            0.0,
            1.0,
            "photosensitive fraction of the pixel",
            low_open=True,
        ),
        "sensor",
    ),
    (
        Param(
            "well",
            "fixed",
            "",
            doc="'fixed' well (ISETCam) or 'area' (well ∝ pixel area)",
            type=str,
            choices=PIXEL_WELL_DESIGNS,
        ),
        "sensor",
    ),
    (
        Param(
            "full_well_e",
            DEFAULT_CAMERA.sensor.full_well_e,
            "e⁻",
            1.0,
            1e7,
            "well capacity of the 2.8 µm pixel",
        ),
        "sensor",
    ),
    (Param("exposure_s", _DEFAULT_EXPOSURE_S, "s", 0.0, 10.0, "integration time"), "sensor"),
    (
        Param(
            "auto_exposure", False, "", doc="divide the exposure by the pixel-area ratio to 2.8 µm", type=bool
        ),
        "sensor",
    ),
    (Param("read_noise_e", DEFAULT_CAMERA.sensor.read_noise_e, "e⁻", 0.0, 1e4, "read noise (std)"), "sensor"),
    (
        Param(
            "dark_current_e_per_s",
            DEFAULT_CAMERA.sensor.dark_current_e_per_s,
            "e⁻/s",
            0.0,
            1e7,
            "dark current",
        ),
        "sensor",
    ),
    (
        Param("prnu_percent", 0.0, "%", 0.0, 100.0, "photo-response non-uniformity (std of the gain)"),
        "sensor",
    ),
    (Param("dsnu_e", 0.0, "e⁻", 0.0, 1e5, "dark-signal non-uniformity (std of the offset)"), "sensor"),
    (Param("adc_bits", DEFAULT_CAMERA.sensor.adc_bits, "bit", 1, 24, "ADC resolution", type=int), "sensor"),
    (
        Param(
            "iso_gain",
            1.0,
            "×",
            0.0,
            1e4,
            "ISP digital gain (ISO amplification after readout)",
            low_open=True,
        ),
        "isp",
    ),
)


def camera_from_params(**params) -> Camera:
    """The :data:`DEFAULT_CAMERA` with any of the ``camera`` degradation's parameters changed.

    >>> camera_from_params(pixel_size_um=5.0, exposure_s=0.002).sensor.exposure_s
    0.002
    """
    known = {p.name: p for p, _ in _CAMERA_PARAMS}
    vals = {n: p.default for n, p in known.items()}
    for k, v in params.items():
        if k not in known:
            from weakspot.errors import UnknownNameError

            raise UnknownNameError("camera parameter", k, sorted(known))
        vals[k] = v
    d = DEFAULT_CAMERA
    scene = replace(
        d.scene,
        mean_luminance_cd_m2=float(vals["mean_luminance_cd_m2"]),
        field_width_mm=float(vals["field_width_mm"]),
    )
    optics = Optics(
        f_number=float(vals["f_number"]),
        focal_length_mm=float(vals["focal_length_mm"]),
        defocus_diopters=float(vals["defocus_diopters"]),
        diffraction=bool(vals["diffraction"]),
        transmittance=float(vals["transmittance"]),
        defocus_model=str(vals["defocus_model"]),
    )
    base = replace(
        d.sensor,
        fill_factor=float(vals["fill_factor"]),
        full_well_e=float(vals["full_well_e"]),
        read_noise_e=float(vals["read_noise_e"]),
        dark_current_e_per_s=float(vals["dark_current_e_per_s"]),
        prnu_percent=float(vals["prnu_percent"]),
        dsnu_e=float(vals["dsnu_e"]),
        adc_bits=int(vals["adc_bits"]),
        conversion_gain=d.sensor.conversion_gain * d.sensor.full_well_e / float(vals["full_well_e"]),
    )
    px = float(vals["pixel_size_um"])
    exposure_s = float(vals["exposure_s"])
    if vals["auto_exposure"]:
        exposure_s *= (_REF_PIXEL_UM / px) ** 2
    sensor = replace(base.scaled_to_pixel(px, well=str(vals["well"])), exposure_s=exposure_s)
    isp = replace(d.isp, digital_gain=float(vals["iso_gain"]))
    return Camera(scene=scene, optics=optics, sensor=sensor, isp=isp)


@register(
    "camera",
    params=[p for p, _ in _CAMERA_PARAMS],
    severities={
        1: {"exposure_s": 0.005, "pixel_size_um": 2.8},
        2: {"exposure_s": 0.0025, "defocus_diopters": 0.5},
        3: {"exposure_s": 0.001, "defocus_diopters": 1.0},
        4: {"exposure_s": 0.0005, "defocus_diopters": 1.5},
        5: {"exposure_s": 0.00025, "defocus_diopters": 2.0},
    },
    family="camera",
    axis="exposure_s",
    differentiable=True,
)
def camera(images: torch.Tensor, *, generator: GeneratorLike = None, **params) -> torch.Tensor:
    """Photograph with any combination of the camera's physical parameters (joint grids).

    Every parameter of the four stages — scene luminance and field width, f-number, focal
    length, defocus (wave or geometric), pixel size with fill factor and well design, exposure
    (optionally auto-exposed by pixel area), full well, read noise, dark current, PRNU/DSNU,
    ADC bits and the ISO (digital) gain — defaults to :data:`DEFAULT_CAMERA`; a config grid over
    several of them (``grid: {pixel_size_um: [5, 8, 11], exposure_s: [0.001, 0.0125]}``) gives
    one condition per combination. The full well and the conversion gain refer to the 2.8 µm
    pixel (the ADC spans that well); see :func:`camera_from_params`. Severities 1–5 shorten the
    exposure (1/200 … 1/4000 s) with growing defocus (0 … 2 D).

    Per-sample parameters (calling this function directly): any parameter may be a sequence or
    1-D tensor of ``B`` values, one per image. ``exposure_s`` is batched (one capture for
    different exposures, :meth:`Camera.capture`'s ``exposure_s``); for the other parameters,
    images that share all their values are captured together (one capture per distinct value).
    Every image's result equals capturing it alone with its own parameters and key.
    """
    b = images.shape[0]
    per_sample = {k: v for k, v in params.items() if isinstance(v, (torch.Tensor, list, tuple))}
    if not per_sample:
        return _shoot(camera_from_params(**params), images, generator)
    for k, v in per_sample.items():
        if len(v) != b:
            from weakspot.errors import InvalidParameterError

            raise InvalidParameterError(k, f"{len(v)} values", f"one value or exactly {b} (one per image)")
    values = {k: [x.item() if isinstance(x, torch.Tensor) else x for x in v] for k, v in per_sample.items()}
    # exposure is batched: photons and dark charge scale with it per image ((B, 1, 1, 1) factors), so
    # only the other per-sample parameters split the batch (one capture per distinct value)
    exposures = values.pop("exposure_s", None)
    groups: dict[tuple, list[int]] = {}
    for i in range(b):
        groups.setdefault(tuple(values[k][i] for k in values), []).append(i)
    keys = batch_keys(generator, b)
    out: torch.Tensor | None = None
    for combo, idx in groups.items():
        sub_keys = keys.select(idx) if len(keys) == b else keys  # each image keeps its own key
        fixed = {**params, **dict(zip(values, combo, strict=True))}
        t_s = None
        if exposures is not None:  # each value checked, auto-exposed and rounded as a scalar capture would be
            cams = {
                t: camera_from_params(**{**fixed, "exposure_s": t})
                for t in dict.fromkeys(exposures[i] for i in idx)
            }
            fixed["exposure_s"] = exposures[idx[0]]
            t_s = torch.tensor([cams[exposures[i]].sensor.exposure_s for i in idx], dtype=torch.float64)
        res = _shoot(camera_from_params(**fixed), images[idx], sub_keys, t_s)
        if out is None:
            out = res.new_empty((b, *res.shape[1:]))
        out[idx] = res
    return out  # type: ignore[return-value]
